#!/usr/bin/env bash
# Issue #16's measurements in one command, for a session that lands on an AVX2-only machine (Zen 2/3,
# Intel client cores) or, held to AVX2, on an AVX-512 one. It writes every raw output and a summary
# to OUT (default /tmp/lumen-avx2-check-<date>) and prints the summary; it measures, it judges nothing.
#
#   bash tools/avx2-check.sh [--quick] [OUT]
#
# Needs: the release build (`swift build -c release`), the fixtures venv (.venv-fixtures, see
# tools/requirements-fixtures.txt) for the PyTorch and OpenBLAS comparisons, clang for the kernel
# harness. --quick skips the SD 1.5 phases against PyTorch (about 10 minutes of the 20).
# Run it on an otherwise idle machine: every figure is a median or a best of several runs, but two
# cores shared with anything else spread them by 5-10%.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
if [[ "${1:-}" == "--quick" ]]; then quick=1; shift; fi
out="${1:-/tmp/lumen-avx2-check-$(date -u +%Y%m%d-%H%M)}"
py=.venv-fixtures/bin/python
bin=.build/release

for f in "$bin/lumen" "$bin/lumen-bench"; do
    [[ -x "$f" ]] || { echo "avx2-check: $f is missing; run 'swift build -c release' first" >&2; exit 1; }
done

# AVX-512 present: hold both engines to AVX2 (Lumen, PyTorch's ATen and oneDNN, MKL, OpenBLAS via
# bench_vs_numpy's --isa avx2), and say so in every heading.
if grep -qw avx512f /proc/cpuinfo; then
    kind="AVX-512 machine held to AVX2 (LUMEN_CPU_ISA=avx2)"
    export LUMEN_CPU_ISA=avx2 ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
    numpy_isa=avx2
elif grep -qw avx2 /proc/cpuinfo; then
    kind="AVX2-only machine"
    numpy_isa=native
else
    echo "avx2-check: this CPU has no AVX2; nothing to measure" >&2
    exit 1
fi

mkdir -p "$out"
summary="$out/summary.md"
model=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
l2=$(lscpu 2>/dev/null | grep -m1 "L2 cache" | cut -d: -f2- | sed 's/^ *//' || true)
{
    echo "# AVX2 check, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD)"
    echo
    echo "- CPU: $model, $(nproc) cores; L2: ${l2:-unknown}; $kind"
    echo "- as Lumen sees it: $("$bin/lumen" devices 2>/dev/null | grep '^cpu:' || echo 'lumen devices failed')"
    echo "- load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
} > "$summary"

step() { echo "avx2-check: $*" >&2; }

step "kernel table (lumen bench, every core)"
"$bin/lumen" bench > "$out/kernels.txt" 2>&1
step "attention and elementwise on one thread (lumen bench --threads 1)"
"$bin/lumen" bench --op attention --op gelu --op silu --op group-norm --op layer-norm --threads 1 \
    > "$out/kernels-1thread.txt" 2>&1
{
    echo "## lumen bench ($kind)"
    echo
    echo '```'
    cat "$out/kernels.txt"
    echo '```'
    echo
    echo "## lumen bench --threads 1 (attention, elementwise, norms)"
    echo
    echo '```'
    cat "$out/kernels-1thread.txt"
    echo '```'
    echo
} >> "$summary"

if command -v clang > /dev/null; then
    step "kernel harness: attention, one thread, best of 12"
    clang -O3 -ISources/CLumenCPU/include -D_GNU_SOURCE tools/kernel_harness.c Sources/CLumenCPU/*.c \
        -lm -lpthread -o "$out/kernel_harness"
    "$out/kernel_harness" 1 12 attention > "$out/harness-attention.txt" 2>&1
    { echo "## kernel_harness 1 12 attention"; echo; echo '```'; cat "$out/harness-attention.txt"; echo '```'; echo; } >> "$summary"

    # The choices made from cache sizes, never yet timed on an AVX2-only CPU: the GEMM loop order
    # (from the L2 size: BLIS's Haswell order below 896 KiB), the attention kernel's key block (64,
    # for a 32 KiB L1) and the Winograd tile sizes by side. Each against its alternatives, two
    # alternated rounds, so that a session on such a machine can confirm or change them.
    step "cache-size choices: GEMM loop order, attention key block, Winograd tiles (about 5 minutes)"
    l2kib=$("$bin/lumen" devices 2>/dev/null | sed -n 's/.*L2 \([0-9]*\) KiB.*/\1/p')
    l2kib=${l2kib:-512}
    other=$(( l2kib < 896 ? 1024 : 512 ))
    for round in 1 2; do
        for l2 in "$l2kib" "$other"; do
            LUMEN_CPU_L2_KIB=$l2 "$out/kernel_harness" 1 20 > "$out/harness-gemm-l2-$l2-r$round.txt" 2>&1
        done
        for kb in 48 64 128; do
            LUMEN_ATTN_KEY_BLOCK=$kb "$out/kernel_harness" 1 12 attention > "$out/harness-attention-kb$kb-r$round.txt" 2>&1
        done
    done
    "$out/kernel_harness" 2 5 winograd > "$out/harness-winograd.txt" 2>&1
    {
        echo "## Cache-size choices (kernel_harness; best and median GFLOP/s; two alternated rounds)"
        echo
        echo "GEMM, one thread, best of 20: the L2 this CPU reports ($l2kib KiB) against $other KiB (the other loop order)"
        echo
        echo '```'
        for round in 1 2; do for l2 in "$l2kib" "$other"; do
            echo "L2 $l2 KiB, round $round:"; grep -v '^isa' "$out/harness-gemm-l2-$l2-r$round.txt"
        done; done
        echo '```'
        echo
        echo "Attention, one thread, best of 12, keys per block (LUMEN_ATTN_KEY_BLOCK; 64 is the default)"
        echo
        echo '```'
        for round in 1 2; do for kb in 48 64 128; do
            echo "key block $kb, round $round:"; grep -v '^attention' "$out/harness-attention-kb$kb-r$round.txt"
        done; done
        echo '```'
        echo
        echo "Winograd against lumen_conv2d, 2 threads, best of 5 (the plan's choice with AVX2: F(2x2) from 6 pixels a side, F(4x4) from 24, F(6x6) fused from 128)"
        echo
        echo '```'
        cat "$out/harness-winograd.txt"
        echo '```'
        echo
    } >> "$summary"
fi

if [[ -x "$py" ]]; then
    step "GEMM against numpy/OpenBLAS, 3 alternating rounds"
    "$py" tools/bench_vs_numpy.py --isa "$numpy_isa" --repeat 3 --lumen "$bin/lumen" > "$out/gemm-vs-openblas.txt" 2>&1 || true
    { echo "## GEMM against OpenBLAS (bench_vs_numpy.py --isa $numpy_isa --repeat 3)"; echo; echo '```'; cat "$out/gemm-vs-openblas.txt"; echo '```'; echo; } >> "$summary"
    if [[ $quick == 0 ]]; then
        step "SD 1.5 phases against PyTorch (bench_torch.py --phases text,unet,vae --runs 3)"
        HF_HUB_OFFLINE=1 "$py" tools/bench_torch.py --phases text,unet,vae --runs 3 --compare "$bin/lumen-bench" \
            > "$out/sd15-vs-pytorch.txt" 2>&1 || true
        { echo "## SD 1.5 against PyTorch fp32 (bench_torch.py --phases text,unet,vae --runs 3 --compare)"; echo; echo '```'; grep -v "^There are modules" "$out/sd15-vs-pytorch.txt" | tail -12; echo '```'; echo; } >> "$summary"
    fi
else
    echo "(no $py: the OpenBLAS and PyTorch comparisons were skipped; see tools/requirements-fixtures.txt)" >> "$summary"
fi

echo "- load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$summary"
cat "$summary"
step "raw outputs and summary in $out"
