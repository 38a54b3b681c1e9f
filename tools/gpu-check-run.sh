#!/usr/bin/env bash
# The GPU check, run from a pack (`tools/gpu-check.sh pack DIR` copies this file to DIR/run.sh):
#
#   DIR/run.sh OUT [--small]
#
# Runs each stage under its own time limit (a hung fence costs one stage, not the run), writes at
# most 8 files into OUT (summary.txt among them) and prints the summary last. Needs no Swift and
# no network: the pack holds a static `lumen`, the shared objects a bare machine may lack, and
# the diffusers wheel for the PyTorch peer. --small runs every stage at small sizes and accepts a
# CPU Vulkan device (lavapipe): it is how the script is proven on a machine without a GPU.
#
# Environment: LUMEN_CHECK_PYTHON (default python3), LUMEN_CHECK_DEMO_MODEL (the demo model
# folder; default: Models/demo of the checkout DIR sits in), LUMEN_CHECK_WORK (scratch; default
# a new folder under /tmp), LUMEN_CHECK_SCALE (multiplies every stage's limit),
# LUMEN_CHECK_PACKED_DIFFUSERS=1 (use the packed diffusers even where one is installed).
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

usage() { echo "usage: $0 OUT [--small]" >&2; exit 2; }
OUT=""; SMALL=0
for a in "$@"; do
  case "$a" in
    --small) SMALL=1 ;;
    -h|--help) usage ;;
    -*) echo "run.sh: unknown option $a" >&2; usage ;;
    *) [ -z "$OUT" ] && OUT=$a || usage ;;
  esac
done
[ -n "$OUT" ] || usage
mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
WORK=${LUMEN_CHECK_WORK:-$(mktemp -d /tmp/lumen-gpu-check.XXXXXX)}
mkdir -p "$WORK"
PY=${LUMEN_CHECK_PYTHON:-python3}
SCALE=${LUMEN_CHECK_SCALE:-1}
# The payload: tar's xz where there is one, Python's lzma otherwise.
if [ ! -x "$WORK/pack/bin/lumen" ]; then
  if command -v xz >/dev/null 2>&1; then
    tar -C "$WORK" -xJf "$HERE/payload.tar.xz"
  else
    "$PY" -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$HERE/payload.tar.xz" "$WORK"
  fi || { echo "run.sh: cannot unpack $HERE/payload.tar.xz" >&2; exit 2; }
fi
PACK="$WORK/pack"
LUMEN="$PACK/bin/lumen"
BENCH="$PACK/bin/lumen-bench"
SUMMARY="$OUT/summary.txt"
STAGES="$WORK/stages.txt"
NOTES="$WORK/notes.txt"
: >"$STAGES"; : >"$NOTES"
START=$(date +%s)
note() { echo "note: $*" | tee -a "$NOTES" >&2; }

# ---- libraries a bare machine may lack --------------------------------------------------------
# Only the ones the system does not have are put on the path (the system's own are preferred).
mkdir -p "$WORK/lib"
have_lib() { ldconfig -p 2>/dev/null | grep -q "[[:space:]]$1 "; }
# Where the system has no Vulkan loader and this runs as root: Debian's loader and glvnd packages
# unpacked into / and registered, the setup that worked on the H200 (docs/vulkan.md). Otherwise
# the packed copies below go on LD_LIBRARY_PATH.
if ! have_lib libvulkan.so.1 && [ "$(id -u)" = 0 ] && ls "$PACK"/debs/*.deb >/dev/null 2>&1 && command -v dpkg >/dev/null 2>&1; then
  for f in "$PACK"/debs/*.deb; do dpkg -x "$f" / || note "dpkg -x $(basename "$f") failed"; done
  ldconfig
  note "unpacked the packed Vulkan loader and glvnd packages into / ($(ls "$PACK"/debs | tr '\n' ' '))"
fi
for f in "$PACK"/lib/*; do
  [ -e "$f" ] || continue
  name=$(basename "$f")
  if ! have_lib "$name"; then ln -sf "$f" "$WORK/lib/$name"; note "using the packed $name"; fi
done
export LD_LIBRARY_PATH="$WORK/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -e "$WORK/lib/libvulkan.so.1" ] && export LUMEN_VULKAN_LOADER="$WORK/lib/libvulkan.so.1"
# The NVIDIA driver's Vulkan ICD where the loader does not look by itself (this workplace mounts
# the driver under /usr/local/nvidia).
if [ ! -f /usr/share/vulkan/icd.d/nvidia_icd.json ] && [ ! -f /etc/vulkan/icd.d/nvidia_icd.json ]; then
  for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/local/nvidia/etc/vulkan/icd.d/nvidia_icd.json; do
    if [ -f "$icd" ]; then
      export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"
      note "Vulkan ICD: $icd"
      break
    fi
  done
fi
for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
  [ -d "$d" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done

# ---- stages -------------------------------------------------------------------------------------
# stage NAME LIMIT FILE CMD...: CMD's output appended to OUT/FILE under `timeout LIMIT`.
FAILED=0
stage() {
  local name=$1 limit=$2 file=$3; shift 3
  limit=$(awk -v l="$limit" -v s="$SCALE" 'BEGIN { printf "%d", l * s }')
  local t0 t1 rc status
  t0=$(date +%s.%N)
  echo "== $name (limit ${limit}s): $*" >>"$OUT/$file"
  echo "[$(date -u +%T)] $name (limit ${limit}s)" >&2
  if declare -F "$1" >/dev/null; then
    # A function of this script: timeout runs programs, so it runs in a child bash that gets the
    # function and the arrays it uses (the scalars are exported).
    timeout -k 5 "$limit" bash -c "$(declare -p SD_ARGS TORCH_ARGS KERNEL_ARGS); $(declare -f "$1"); $1" >>"$OUT/$file" 2>&1
  else
    timeout -k 5 "$limit" "$@" >>"$OUT/$file" 2>&1
  fi
  rc=$?
  t1=$(date +%s.%N)
  case $rc in
    0) status=ok ;;
    124|137) status="TIMEOUT"; FAILED=1 ;;
    *) status="FAIL($rc)"; FAILED=1 ;;
  esac
  echo "== $name: $status, rc $rc" >>"$OUT/$file"
  printf '%-24s %-12s %8.1f  %s\n' "$name" "$status" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')" "$file" >>"$STAGES"
}

# ---- sizes ----------------------------------------------------------------------------------------
DEMO=${LUMEN_CHECK_DEMO_MODEL:-}
for cand in "$HERE/../Models/demo" "$HERE/../../Models/demo"; do
  [ -z "$DEMO" ] && [ -f "$cand/model_index.json" ] && DEMO=$(cd "$cand" && pwd)
done
if [ "$SMALL" = 1 ]; then
  MODE=small
  SD_ARGS=(--model-folder "$DEMO" --sizes 64,32 --generate-size 64 --steps 2 --runs 1)
  TORCH_ARGS=(--configs "$DEMO" --tokenizer "$DEMO/tokenizer" --sizes 64,32 --generate-size 64 --steps 2 --runs 1)
  KERNEL_ARGS=(--small --min-seconds 0)
  DEMO_STEPS=4
  PROFILE_SIZE=64
  L_ENV=15 L_DEV=30 L_DEMO=240 L_KF32=240 L_KF16=240 L_PREP=30 L_MODEL=240 L_PROF=120 L_AB=240 L_GEN=240 L_TORCH=240
else
  MODE=full
  SD_ARGS=(--work-dir "$WORK/sd15-random" --tokenizer "$PACK/tokenizer" --sizes 512,256 --generate-size 512 --steps 10 --runs 3)
  TORCH_ARGS=(--tokenizer "$PACK/tokenizer" --configs "$PACK/sd15-configs" --sizes 512,256 --generate-size 512 --steps 10 --runs 3)
  KERNEL_ARGS=(--min-seconds 0.2)
  DEMO_STEPS=20
  PROFILE_SIZE=512
  # Worst case, every stage at its limit: 510 s (the torch peer took 46-67 s on the H200; the whole check 134 s in its fourth run).
  L_ENV=10 L_DEV=20 L_DEMO=40 L_KF32=55 L_KF16=40 L_PREP=40 L_MODEL=85 L_PROF=25 L_AB=60 L_GEN=35 L_TORCH=100
fi

export MODE SMALL PACK LUMEN BENCH DEMO WORK PY DEMO_STEPS PROFILE_SIZE

# 1. environment
env_stage() {
  echo "date: $(date -u)"; echo "mode: $MODE"; uname -a; cat /etc/os-release 2>/dev/null | head -2
  echo "cpus: $(nproc)"; free -g 2>/dev/null | head -2
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  echo "--- ldd $LUMEN"; ldd "$LUMEN"
  echo "--- Vulkan: LUMEN_VULKAN_LOADER=${LUMEN_VULKAN_LOADER:-} VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
  echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
  ldconfig -p 2>/dev/null | grep -E 'libvulkan|libGLX_nvidia|libGLdispatch|libpng16' || true
  for d in /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d; do
    [ -d "$d" ] && { echo "$d:"; for j in "$d"/*.json; do [ -f "$j" ] && { echo "  $j"; sed 's/^/    /' "$j"; }; done; }
  done
  echo "--- lumen --version: $("$LUMEN" --version)"
  "$PY" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" 2>&1
  return 0
}
stage environment "$L_ENV" env.txt env_stage
if ! command -v nvidia-smi >/dev/null 2>&1; then
  if [ "$SMALL" = 1 ]; then note "no nvidia-smi on this machine (accepted with --small)"; else note "no nvidia-smi on this machine"; fi
fi

# 2. devices
stage devices "$L_DEV" devices.txt env VK_LOADER_DEBUG=error "$LUMEN" devices --verbose
VKDEV=$(grep -m1 '^vulkan:.*\[default\]' "$OUT/devices.txt" || true)
if [ -z "$VKDEV" ]; then
  note "no Vulkan device: the Vulkan stages will fail"
elif [ "$SMALL" = 0 ] && ! echo "$VKDEV" | grep -q "(discrete"; then
  note "the default Vulkan device is not a discrete GPU: $VKDEV"
  FAILED=1
fi

# 3. the demo model on CPU and on Vulkan, same seed, and the pixel difference
demo_stage() {
  [ -n "$DEMO" ] || { echo "no demo model (set LUMEN_CHECK_DEMO_MODEL or pack it)"; return 3; }
  local p="a red circle above a blue square"
  "$LUMEN" generate "$p" --model "$DEMO" --seed 7 --steps "$DEMO_STEPS" --backend cpu -o "$WORK/demo-cpu.png" || return $?
  "$LUMEN" generate "$p" --model "$DEMO" --seed 7 --steps "$DEMO_STEPS" --backend vulkan -o "$WORK/demo-vulkan.png" || return $?
  "$PY" - "$WORK/demo-cpu.png" "$WORK/demo-vulkan.png" <<'EOF'
import sys
import numpy as np
from PIL import Image
a, b = (np.asarray(Image.open(p).convert("RGB"), dtype=np.int16) for p in sys.argv[1:3])
d = np.abs(a - b)
print(f"demo pixel difference cpu vs vulkan: max {d.max()}, mean {d.mean():.3f}, "
      f"pixels off by more than 8: {(d.max(axis=2) > 8).mean() * 100:.2f}% ({a.shape[1]}x{a.shape[0]})")
sys.exit(0 if d.max() <= 64 and (d.max(axis=2) > 8).mean() < 0.01 else 1)
EOF
}
stage demo-cpu-vs-vulkan "$L_DEMO" demo.txt demo_stage

# 4. kernels with --check, f32 and f16 activations
stage kernels-f32 "$L_KF32" kernels.txt env LUMEN_VULKAN_ACTIVATIONS=f32 "$LUMEN" bench --backend vulkan --check "${KERNEL_ARGS[@]}"
stage kernels-f16 "$L_KF16" kernels.txt env LUMEN_VULKAN_ACTIVATIONS=f16 "$LUMEN" bench --backend vulkan --check "${KERNEL_ARGS[@]}"

# 5. the SD 1.5 architecture (random weights written on the spot; --small: the demo model)
if [ "$SMALL" = 0 ]; then
  stage sd15-random-weights "$L_PREP" model.txt "$BENCH" model --prepare-only "${SD_ARGS[@]}"
fi
stage model-phases "$L_MODEL" model.txt "$BENCH" model --backend vulkan --compare-cpu --phases text,unet,vae "${SD_ARGS[@]}"
stage unet-profile "$L_PROF" profile.txt env LUMEN_PROFILE=1 "$BENCH" model --backend vulkan --phases unet \
  "${SD_ARGS[@]}" --sizes "$PROFILE_SIZE" --runs 1
# Same-run A/B of the UNet step: the defaults, split K off, the f32 kernels (into profile.txt, so
# that the summary's phase table keeps reading the default run from model.txt).
unet_ab_stage() {
  for cfg in default LUMEN_VULKAN_SPLITK_GROUPS=0 LUMEN_VULKAN_ACTIVATIONS=f32; do
    echo "-- A/B $cfg"
    if [ "$cfg" = default ]; then set -- "$BENCH"; else set -- env "$cfg" "$BENCH"; fi
    "$@" model --backend vulkan --phases unet "${SD_ARGS[@]}" --sizes "$PROFILE_SIZE" --runs 3 2>&1 \
      | awk -v c="$cfg" '/^unet-step-/ { print "A/B " c ": " $0 }'
  done
}
stage unet-ab "$L_AB" profile.txt unet_ab_stage
stage generate "$L_GEN" model.txt "$BENCH" model --backend vulkan --phases generate "${SD_ARGS[@]}"

# 6. the PyTorch/diffusers peer on the same device
torch_stage() {
  local dev=cpu dtype=fp32
  if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then dev=cuda; dtype=fp16; fi
  if [ "${LUMEN_CHECK_PACKED_DIFFUSERS:-0}" = 1 ] || ! "$PY" -c "import diffusers" 2>/dev/null; then
    export PYTHONPATH="$PACK/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  "$PY" -c "import diffusers, transformers; print('diffusers', diffusers.__version__, diffusers.__file__, 'transformers', transformers.__version__)"
  [ "$dev" = cpu ] && [ "$SMALL" = 0 ] && echo "note: no CUDA in this python; the peer runs on the CPU"
  HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 "$PY" "$PACK/bench_torch.py" --device "$dev" --dtype "$dtype" --table "${TORCH_ARGS[@]}"
}
stage torch-peer "$L_TORCH" torch.txt torch_stage

# ---- summary --------------------------------------------------------------------------------------
{
  echo "Lumen GPU check ($MODE), $(date -u '+%F %T UTC'), $(( $(date +%s) - START )) s"
  echo "device: ${VKDEV:-none}"
  grep -m1 -h '^NVIDIA\|^name, driver' -A1 "$OUT/env.txt" 2>/dev/null | tail -1 | sed 's/^/gpu: /'
  awk '/^== kernels-f[0-9]+ \(/ { split($2, a, ":"); mode = a[1] } /^peak:/ { print mode " " $0 }' "$OUT/kernels.txt" 2>/dev/null
  grep -h '^demo pixel difference' "$OUT/demo.txt" 2>/dev/null
  grep -h -m1 'tensor cores' "$OUT/devices.txt" 2>/dev/null | sed 's/^ *//'
  grep -h '^vulkan: .*tensor cores' "$OUT/model.txt" 2>/dev/null | head -1
  awk '/^== kernels-f/ { split($2, a, ":"); mode = a[1] }
       NF >= 7 && $NF ~ /^[0-9.]+e[-+][0-9]+$/ { e = $NF + 0; if (e > worst[mode]) { worst[mode] = e; op[mode] = $1 " " $2 }; n[mode]++ }
       END { for (m in n) printf "%s: %d kernels checked against the CPU, worst rel. error %.2e (%s)\n", m, n[m], worst[m], op[m] }' \
    "$OUT/kernels.txt" 2>/dev/null | sort
  cat "$NOTES"
  echo
  printf '%-24s %-12s %8s  %s\n' stage status seconds file
  cat "$STAGES"
  echo
  echo "phase            Lumen-vulkan s  GPU s     rel.err vs CPU   PyTorch s  Lumen/PyTorch"
  awk 'FNR == 1 { f++ }
       f == 1 && $1 ~ /^(text-encode|unet-step-|vae-decode-|generate-)/ && $2 ~ /^[0-9.]+$/ {
         lumen[$1] = $2; order[++n] = $1
         if (match($0, /GPU [0-9.]+ s/)) gpu[$1] = substr($0, RSTART + 4, RLENGTH - 6)
         if (match($0, /vs CPU [0-9.e+-]+/)) err[$1] = substr($0, RSTART + 7, RLENGTH - 7) }
       f == 2 && $1 ~ /^(text-encode|unet-step-|vae-decode-|generate-)/ { torch[$1] = $2 }
       END { for (i = 1; i <= n; i++) { p = order[i]; if (seen[p]++) continue
               r = (p in torch && torch[p] > 0) ? sprintf("%.2f", lumen[p] / torch[p]) : "-"
               printf "%-16s %14s %9s %16s %11s %14s\n", p, lumen[p], (p in gpu ? gpu[p] : "-"), (p in err ? err[p] : "-"), (p in torch ? torch[p] : "-"), r } }' \
    "$OUT/model.txt" "$OUT/torch.txt" 2>/dev/null
  echo
  grep -h '^A/B ' "$OUT/profile.txt" 2>/dev/null
  echo
  [ "$FAILED" = 0 ] && echo "result: every stage passed" || echo "result: FAILED (see the stage table and the files in $OUT)"
} >"$SUMMARY"
cat "$SUMMARY"
[ "$FAILED" = 0 ]
