#!/usr/bin/env bash
# Installs the Debian 12 packages tessera needs, only those missing. Idempotent.
#   scripts/install-deps.sh           build + tests + main job
#   scripts/install-deps.sh --bench   also the benchmark peers (oneDNN, PyTorch)
set -euo pipefail

packages=(
  g++ make cmake ninja-build ccache pkg-config git
  libeigen3-dev libtbb-dev libspdlog-dev zlib1g-dev
  libprotobuf-dev protobuf-compiler libgrpc++-dev protobuf-compiler-grpc
  libopenmpi-dev openmpi-bin
  libgtest-dev libgmock-dev libbenchmark-dev
  pybind11-dev python3-dev python3-numpy python3-pytest
  dataset-fashion-mnist
)
if [[ "${1:-}" == "--bench" ]]; then
  # PyTorch without an optimized BLAS falls back to the reference BLAS (~2 GFLOP/s): add OpenBLAS.
  packages+=(libdnnl-dev python3-torch libopenblas0-pthread)
elif [[ -n "${1:-}" ]]; then
  echo "usage: $0 [--bench]" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null; then
    sudo="sudo"
  else
    echo "install-deps: not root and no sudo; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
