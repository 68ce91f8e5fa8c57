#!/usr/bin/env bash
# The GPU check, in one call on a GPU machine (it needs no Rust toolchain and no network):
# finds the CUDA 13 libraries the CUDA build links (the CUDA toolkit's, else PyTorch's wheels'),
# then runs benches/models.sh cuda, which
#   1. starts Photon with the SentenceEmbedding deployment on the GPU (device: cuda, num_gpus: 1);
#   2. checks the reference embeddings (tests/fixtures/minilm_reference.json, cosine >= 0.9999);
#   3. measures embeddings/s through HTTP at batch sizes 1, 8, 32, 128, then sentence-transformers
#      (PyTorch) on the same card and sentences;
#   4. measures SmolLM2 tokens/s on the GPU, when its GGUF file is there;
# and prints one table (also written to $OUT/models-cuda.md when OUT is set).
#
# Inputs (prepared on the CPU machine: scripts/build-cuda.sh, scripts/fetch-models.sh):
#   PHOTON_BIN   the CUDA build (default target/gpu/photon, else target/cuda/release/photon;
#                target/gpu/photon.xz is unpacked first)
#   MINILM_DIR, SMOLLM_GGUF, SECONDS_PER_SIZE: see benches/models.sh (SMOLLM_GGUF.part* files
#                are joined first)
set -uo pipefail
cd "$(dirname "$0")/.."
first_of() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; echo "$1"; }
python=${PYTHON:-python3}

export PHOTON_BIN=${PHOTON_BIN:-$(first_of target/gpu/photon target/cuda/release/photon)}
export MINILM_DIR=${MINILM_DIR:-$(first_of target/gpu/all-MiniLM-L6-v2 target/models/all-MiniLM-L6-v2)}
export SMOLLM_GGUF=${SMOLLM_GGUF:-$(first_of target/gpu/SmolLM2-135M-Instruct.Q4_1.gguf target/models/SmolLM2-135M-Instruct.Q4_1.gguf)}
[ -f "$PHOTON_BIN.xz" ] && [ ! -x "$PHOTON_BIN" ] && xz -dk "$PHOTON_BIN.xz" && chmod +x "$PHOTON_BIN"
[ -f "$SMOLLM_GGUF.part1" ] && [ ! -f "$SMOLLM_GGUF" ] && cat "$SMOLLM_GGUF".part* > "$SMOLLM_GGUF"

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

libdirs=""
for lib in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
    found=$(ls /usr/local/cuda*/lib64/$lib /usr/local/cuda*/targets/x86_64-linux/lib/$lib \
        /usr/lib/x86_64-linux-gnu/$lib 2>/dev/null | head -1)
    if [ -z "$found" ]; then
        found=$("$python" - "$lib" <<'PY' 2>/dev/null
import glob, os, site, sys
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for path in glob.glob(os.path.join(base, "nvidia", "**", sys.argv[1]), recursive=True):
        print(path)
        raise SystemExit
PY
)
    fi
    [ -n "$found" ] && libdirs="$libdirs:$(dirname "$found")"
done
export LD_LIBRARY_PATH="${libdirs#:}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
if ldd "$PHOTON_BIN" | grep "not found"; then
    echo "FAIL: the libraries above are missing for $PHOTON_BIN" >&2
    exit 1
fi
exec bash benches/models.sh cuda
