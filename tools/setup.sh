#!/usr/bin/env bash
# Installs the system packages Lumen builds and tests with (Debian/Ubuntu, run as root or with
# sudo available). Safe to run again: packages already present are not reinstalled.
# Swift 6 itself is not a Debian package: install a toolchain from swift.org and put it on PATH.
set -euo pipefail

packages=(
  pkg-config
  libpng-dev               # image I/O (PNG in and out)
  libvulkan-dev            # Vulkan headers and loader
  mesa-vulkan-drivers      # lavapipe: a Vulkan driver on the CPU, for machines without a GPU
  vulkan-validationlayers  # the Khronos validation layer, on in tests
  vulkan-tools             # vulkaninfo
  glslang-tools            # glslangValidator: GLSL compute shaders to SPIR-V
  spirv-tools              # spirv-val
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "setup: system packages already installed"
fi

if ! command -v swift >/dev/null 2>&1; then
  echo "setup: swift was not found on PATH; install a Swift 6 toolchain (https://www.swift.org/install/linux/)" >&2
  exit 1
fi
