#!/usr/bin/env bash
# Builds `photon` with the `cuda` feature on a machine without a CUDA installation.
#
# nvcc 13.0 and the link-time CUDA 13.0 libraries come from NVIDIA's PyPI wheels, installed into
# target/cuda-toolkit (13.0, not newer: it must match the GPU machines' driver, 580). The driver
# library itself (libcuda.so.1) is not on PyPI: a stub with the driver API's symbol names is
# generated for the linker only; at run time the GPU machine's driver provides the real one.
#
# Usage: scripts/build-cuda.sh [extra cargo build arguments]
# Output: target/cuda/release/photon. Environment: CUDA_COMPUTE_CAP (default 90: H100/H200),
# PYTHON (default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

toolkit=$PWD/target/cuda-toolkit
root=$toolkit/nvidia/cu13
python=${PYTHON:-python3}

if [ ! -x "$root/bin/nvcc" ] || [ ! -e "$root/lib/libcublas.so.13" ]; then
    echo "build-cuda: installing nvcc and CUDA 13.0 libraries from PyPI into target/cuda-toolkit" >&2
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target "$toolkit" \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88 \
        nvidia-cublas==13.0.2.14 nvidia-curand==10.4.5.25
fi

# The wheels ship versioned sonames only; the linker looks for libNAME.so.
for lib in "$root"/lib/lib*.so.*; do
    name=$(basename "$lib")
    ln -sf "$name" "$root/lib/${name%%.so.*}.so"
done

# Link-time stub of the driver library: every driver function cudarc declares.
cudarc_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* 2>/dev/null | sort -V | tail -1 || true)
if [ ! -e "$root/lib/stubs/libcuda.so" ]; then
    if [ -z "$cudarc_src" ]; then
        cargo fetch --quiet
        cudarc_src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/cudarc-0.19.* | sort -V | tail -1)
    fi
    mkdir -p "$root/lib/stubs"
    grep -ohE '^\s+fn cu[A-Za-z0-9_]+\(' "$cudarc_src/src/driver/sys/mod.rs" \
        | sed -E 's/^\s+fn ([A-Za-z0-9_]+)\(/void \1(void) {}/' | sort -u > "$root/lib/stubs/libcuda-stub.c"
    gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$root/lib/stubs/libcuda.so" "$root/lib/stubs/libcuda-stub.c"
fi

export CUDA_HOME=$root CUDA_PATH=$root CUDA_ROOT=$root
export PATH=$root/bin:$PATH
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export LIBRARY_PATH=$root/lib:$root/lib/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}

cargo build --release --features cuda --target-dir target/cuda "$@"
echo "build-cuda: built target/cuda/release/photon (compute capability $CUDA_COMPUTE_CAP)" >&2
