#!/usr/bin/env bash
# Lumen on CPUs this machine is not. qemu-user emulates a Zen 3 (EPYC-Milan), a Haswell, an Ivy
# Bridge (AVX and F16C without FMA or AVX2: the generic path) and a Nehalem (no AVX at all); its
# TCG executes AVX2, FMA and F16C, and an instruction the emulated CPU lacks raises SIGILL. Lumen
# detects them through CPUID as it would on the real thing.
#
# Why, when LUMEN_CPU_ISA=avx2 and =generic already run every test on this machine: the cap only
# chooses which kernels run. On an AVX-512 machine an AVX-512 instruction reached by mistake from
# the AVX2 path (a dispatch that calls the wrong variant, a helper compiled for the wrong target)
# still executes, and the tests pass; on an AVX2-only CPU it kills the process. Under qemu it does
# too. The emulated CPUs also report their own CPUID, so the detection itself is exercised
# (AVX-512 absent, the L2 size that picks the GEMM loop order and the Winograd blocks).
#
#   bash tools/cpu-models-check.sh [--full]
#
# For each CPU model:
#   - `lumen devices` must name the model's instruction set and L2 size;
#   - `lumen generate` on the built-in model must write the same PNG, byte for byte, as this
#     machine does with that instruction set and L2 forced (LUMEN_CPU_ISA, LUMEN_CPU_L2_KIB), so
#     every test of those paths here vouches for the emulated CPU's image too;
#   - the CPU kernel tests (LumenCPUTests, float64 references) on EPYC-Milan and Nehalem.
# --full also runs every LumenRuntimeTests and LumenTests class under EPYC-Milan (tests that start
# `lumen` as a child process run that child natively: qemu-user does not follow exec).
#
# Needs the release build with tests (`swift build -c release --build-tests`) and qemu-user
# (installed here from Debian's packages if missing). Emulation is 10-100x slower than the host:
# the default run takes 4-6 minutes on 2 cores, --full about 50 more (a 512x512 SD 1.5 UNet forward
# in SD15ArchitectureTests alone takes several).
set -euo pipefail
cd "$(dirname "$0")/.."

full=0
if [[ "${1:-}" == "--full" ]]; then full=1; shift; fi
bin=.build/release
tests=$bin/LumenPackageTests.xctest

if [[ "$(uname -m)" != "x86_64" ]]; then
    echo "cpu-models-check: x86_64 only (this is $(uname -m)); nothing to check" >&2
    exit 0
fi
for f in "$bin/lumen" "$tests"; do
    [[ -x "$f" ]] || { echo "cpu-models-check: $f is missing; run 'swift build -c release --build-tests' first" >&2; exit 1; }
done
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
    sudo=""; if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user >/dev/null
fi

# The emulated CPU's own detection is what is checked: no cap or override from the caller.
unset LUMEN_CPU_ISA LUMEN_CPU_L2_KIB LUMEN_CPU_BF16
work=$(mktemp -d /tmp/lumen-cpu-models.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "cpu-models-check: FAIL: $*" >&2; failures=$((failures + 1)); }

# qemu warns about every CPUID feature its TCG cannot emulate (pcid, sha-ni, ...) on each start;
# none of them is one Lumen uses, so the warnings are dropped.
envs=()  # extra VAR=value settings for the emulated process (and its native twin)
emu() {  # emu MODEL CMD...
    local model=$1; shift
    env ${envs[@]+"${envs[@]}"} qemu-x86_64 -cpu "$model" "$@" \
        2> >(grep -v "TCG doesn't support requested feature" >&2)
}

# Model, the instruction set Lumen must detect on it, the L2 (KiB) it must use, and extra
# environment. qemu reports a 512 KiB L2 for every model; the Haswell row caps it to 256 KiB
# (Haswell..Skylake client cores) with LUMEN_CPU_L2_KIB, the one setting the kernels read.
models=(
    "EPYC-Milan avx2 512"
    "Haswell avx2 256 LUMEN_CPU_L2_KIB=256"
    "IvyBridge generic 512"
    "Nehalem generic 512"
)
prompt="a red circle on a blue background"

for row in "${models[@]}"; do
    read -r model isa l2 extra <<< "$row"
    envs=(); [[ -n "${extra:-}" ]] && envs=("$extra")
    echo "== $model (expect $isa, L2 $l2 KiB)"

    line=$(emu "$model" "$bin/lumen" devices 2>/dev/null | grep '^cpu:' || true)
    echo "   $line"
    [[ "$line" == *"instruction set $isa (best available: $isa)"* ]] \
        || fail "$model: lumen devices does not report $isa as the best instruction set: '$line'"
    [[ "$line" == *"L2 $l2 KiB per core"* ]] || fail "$model: lumen devices does not report L2 $l2 KiB: '$line'"

    native="$work/native-$model.png"; emulated="$work/emulated-$model.png"
    env ${envs[@]+"${envs[@]}"} LUMEN_CPU_ISA="$isa" LUMEN_CPU_L2_KIB="$l2" \
        "$bin/lumen" generate "$prompt" --seed 42 --backend cpu -o "$native" > /dev/null 2>&1 \
        || fail "$model: lumen generate failed natively with LUMEN_CPU_ISA=$isa"
    if emu "$model" "$bin/lumen" generate "$prompt" --seed 42 --backend cpu \
        -o "$emulated" > "$work/generate-$model.log" 2>&1; then
        if cmp -s "$native" "$emulated"; then
            echo "   lumen generate: same PNG as this machine with LUMEN_CPU_ISA=$isa"
        else
            fail "$model: lumen generate's PNG differs from this machine's with LUMEN_CPU_ISA=$isa"
        fi
    else
        fail "$model: lumen generate failed under emulation (exit $?): $(tail -3 "$work/generate-$model.log")"
    fi
done

# XCTest runs one filter per invocation: one class at a time.
envs=()
run_classes() {  # run_classes MODEL PATTERN
    local model=$1 pattern=$2 class
    for class in $("$tests" --list-tests 2>/dev/null | grep -E "^($pattern)\." | cut -d/ -f1 | sort -u); do
        local t0=$SECONDS
        if emu "$model" "$tests" "$class" > "$work/test.log" 2>&1 \
            && grep -qE "(with|and) 0 failures" "$work/test.log"; then
            echo "   $class: passed ($((SECONDS - t0)) s)"
        else
            grep -E "error|failed" "$work/test.log" | head -20 >&2 || true
            fail "$model: $class"
        fi
    done
}

echo "== CPU kernel tests under EPYC-Milan (avx2 and generic paths)"
run_classes EPYC-Milan "LumenCPUTests"
echo "== CPU kernel tests under Nehalem (generic path)"
run_classes Nehalem "LumenCPUTests"
if [[ $full == 1 ]]; then
    echo "== every model, pipeline and runtime test under EPYC-Milan"
    run_classes EPYC-Milan "LumenRuntimeTests|LumenTests"
fi

if [[ $failures -gt 0 ]]; then
    echo "cpu-models-check: $failures failure(s)" >&2
    exit 1
fi
echo "cpu-models-check: all passed"
