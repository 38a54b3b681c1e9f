#!/usr/bin/env bash
# The GPU check, packed here and run on a bare GPU machine (no Swift, no network):
#
#   tools/gpu-check.sh pack DIR        # here: build, then fill DIR (about 15 MB)
#   DIR/run.sh OUT [--small]           # there: every stage under its own time limit
#
# DIR holds run.sh and payload.tar.xz, which run.sh unpacks into its scratch folder: a static
# `lumen` (--static-swift-stdlib, built without the embedded demo model and with an empty ICU
# data package; `lumen-bench` is a link to it), the shared objects a bare machine may lack
# (libpng16, zlib, Debian's Vulkan loader libvulkan.so.1 and libGLdispatch for NVIDIA's ICD;
# run.sh uses each only where the system has none), diffusers (trimmed to the Stable Diffusion
# pipeline; the machine has torch and transformers), tools/bench_torch.py, the SD 1.5 configs
# and the CLIP tokenizer. The demo model is not packed: run.sh reads Models/demo from the
# checkout DIR sits in (it travels with the tree), or LUMEN_CHECK_DEMO_MODEL. Why so small: the
# tree that travels to the GPU machine, the checkout included, is limited to 64 MiB, and the
# checkout alone is over 50 MB.
#
# Options of pack: --wheel FILE (a diffusers wheel to use instead of `pip download`),
# --no-build (pack the binary already built), --scratch PATH (SwiftPM's build folder; default
# .build-gpu-check, so that the ordinary .build is not rebuilt with other settings).
# Environment: PYTHON (the pip to download with; default python3), DIFFUSERS_VERSION (0.42.1).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { echo "usage: $0 pack DIR [--wheel FILE] [--no-build] [--scratch PATH]" >&2; exit 2; }
[ $# -ge 2 ] && [ "$1" = pack ] || usage
DIR=$2; shift 2
WHEEL=""; BUILD=1; SCRATCH="$ROOT/.build-gpu-check"
while [ $# -gt 0 ]; do
  case "$1" in
    --wheel) WHEEL=$2; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --scratch) SCRATCH=$2; shift 2 ;;
    *) usage ;;
  esac
done
PYTHON=${PYTHON:-python3}
DIFFUSERS_VERSION=${DIFFUSERS_VERSION:-0.42.1}

if [ "$BUILD" = 1 ]; then
  echo "pack: building a static lumen (several minutes the first time)" >&2
  # SwiftPM plans the shader plugin's commands again only when it replans the package; a .comp
  # added since the last build would be missing from the binary. Touching the manifest replans.
  touch "$ROOT/Package.swift"
  # This project's own Swift modules are rebuilt from scratch (the packages they use are kept):
  # an incremental release build once linked a lumen whose LumenBenchmarks still inlined the old
  # layout of VulkanExecutor.Options after fields were added (cross-module optimisation), and
  # the binary crashed in Options.init and corrupted its heap at exit (seen on lavapipe with
  # --small, 2026-12-04). A few minutes, against a GPU run lost to a stale binary.
  for t in LumenRuntime LumenCPU LumenVulkan Lumen LumenEval LumenBenchmarks LumenServer lumen lumen_bench; do
    rm -rf "$SCRATCH/release/$t.build" "$SCRATCH"/*/release/"$t".build
  done
  (cd "$ROOT" && LUMEN_NO_DEMO_MODEL=1 LUMEN_NO_ICU_DATA=1 swift build -c release --static-swift-stdlib \
     --scratch-path "$SCRATCH" --product lumen)
fi
BIN="$SCRATCH/release/lumen"
[ -x "$BIN" ] || { echo "pack: $BIN is not built" >&2; exit 1; }
if ldd "$BIN" | grep -q libswiftCore; then
  echo "pack: $BIN links the Swift runtime dynamically; build it with --static-swift-stdlib" >&2; exit 1
fi

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
STAGE=$(mktemp -d /tmp/lumen-pack.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
P="$STAGE/pack"
mkdir -p "$P/bin" "$P/lib" "$P/site" "$P/tokenizer"

strip -o "$P/bin/lumen" "$BIN"
ln -s lumen "$P/bin/lumen-bench"

# Shared objects: what the binary needs beyond glibc and the C++ runtime, and the Vulkan loader
# with the glvnd dispatch library NVIDIA's ICD (libGLX_nvidia) links against.
libpath() { ldconfig -p | awk -v n="$1" '$1 == n && /x86-64/ { print $NF; exit }'; }
for name in libpng16.so.16 libz.so.1 libvulkan.so.1 libGLdispatch.so.0; do
  src=$(libpath "$name")
  [ -n "$src" ] || { echo "pack: $name not found here (tools/setup.sh installs libvulkan1, libpng16)" >&2; exit 1; }
  cp -L "$src" "$P/lib/$name"
done

# Debian 12's Vulkan loader and glvnd packages, unpacked into / by run.sh where the machine has no
# loader (on the H200 the driver loaded only this way; with the same libraries on LD_LIBRARY_PATH
# vkCreateInstance returned VK_ERROR_INCOMPATIBLE_DRIVER; docs/vulkan.md).
mkdir -p "$P/debs" /tmp/lumen-pack-apt/partial
APTO="-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/lumen-pack-apt"
apt-get $APTO update -qq >/dev/null 2>&1 || true
(cd "$P/debs" && apt-get $APTO download -qq libvulkan1 libglvnd0 libegl1 libgl1 libglx0 libgles2 libopengl0 2>/dev/null) \
  || { echo "pack: apt-get download of the Vulkan loader packages failed" >&2; exit 1; }

# diffusers, pure Python, trimmed to what StableDiffusionPipeline needs.
if [ -z "$WHEEL" ]; then
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: "diffusers==$DIFFUSERS_VERSION" -d "$STAGE/wheel"
  WHEEL=$(ls "$STAGE"/wheel/diffusers-*.whl)
fi
"$PYTHON" -m zipfile -e "$WHEEL" "$P/site"
for d in "$P"/site/diffusers/pipelines/*/; do
  [ "$(basename "$d")" = stable_diffusion ] || rm -rf "$d"
done
rm -rf "$P/site/diffusers/modular_pipelines"
find "$P/site" -name __pycache__ -prune -exec rm -rf {} +

cp "$ROOT/tools/bench_torch.py" "$P/"
cp -r "$ROOT/Tests/Fixtures/sd15-configs" "$P/sd15-configs"
cp "$ROOT/Tests/Fixtures/tiny-sd/tokenizer/vocab.json" "$ROOT/Tests/Fixtures/tiny-sd/tokenizer/merges.txt" "$P/tokenizer/"
for f in special_tokens_map.json tokenizer_config.json; do
  [ -f "$ROOT/Tests/Fixtures/tiny-sd/tokenizer/$f" ] && cp "$ROOT/Tests/Fixtures/tiny-sd/tokenizer/$f" "$P/tokenizer/"
done
{
  echo "lumen $("$P/bin/lumen" --version) packed $(date -u '+%F %T UTC') from $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "diffusers $(basename "$WHEEL")"
  (cd "$P" && find . -path ./site -prune -o -type f -print | sort | xargs ls -l | awk '{ print $5, $9 }')
  echo "$(du -sb "$P/site" | cut -f1) ./site (diffusers, trimmed)"
} >"$P/MANIFEST"

rm -rf "$DIR/payload.tar.xz" "$DIR/run.sh" "$DIR/MANIFEST"
tar -C "$STAGE" -cf - pack | xz -T0 -9 >"$DIR/payload.tar.xz"
cp "$ROOT/tools/gpu-check-run.sh" "$DIR/run.sh"
cp "$P/MANIFEST" "$DIR/MANIFEST"
chmod +x "$DIR/run.sh"
echo "pack: $DIR ($(du -sh "$DIR" | cut -f1)): run.sh, payload.tar.xz, MANIFEST" >&2
