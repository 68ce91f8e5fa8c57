#!/usr/bin/env bash
# The GPU check, in one call on a GPU machine (it needs no Rust toolchain and no network):
#   1. starts Photon with the SentenceEmbedding deployment on the GPU (device: cuda, num_gpus: 1);
#   2. checks the reference embeddings (tests/fixtures/minilm_reference.json, cosine >= 0.9999);
#   3. measures embeddings/s through HTTP at batch sizes 1, 8, 32, 128, then sentence-transformers
#      (PyTorch) on the same card and sentences;
#   4. measures SmolLM2 tokens/s on the GPU, when its GGUF file is there;
# and prints one table (also written to $OUT/gpu-check.md when OUT is set).
#
# Inputs (build them on the CPU machine: scripts/build-cuda.sh, scripts/fetch-models.sh):
#   PHOTON_BIN   the CUDA build (default target/cuda/release/photon, or target/gpu/photon)
#   MINILM_DIR   the all-MiniLM-L6-v2 folder (default target/gpu/all-MiniLM-L6-v2, else
#                target/models/all-MiniLM-L6-v2)
#   SMOLLM_GGUF  SmolLM2 GGUF file (default target/gpu/SmolLM2-135M-Instruct.Q4_1.gguf, else
#                target/models/...); the generation part is skipped when it is missing
#   SECONDS_PER_SIZE  measuring time per batch size (default 5)
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-}
report() { echo "$*"; [ -n "$out" ] && echo "$*" >> "$out/gpu-check.md"; return 0; }
first_of() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; echo "$1"; }

bin=${PHOTON_BIN:-$(first_of target/gpu/photon target/cuda/release/photon)}
minilm=${MINILM_DIR:-$(first_of target/gpu/all-MiniLM-L6-v2 target/models/all-MiniLM-L6-v2)}
gguf=${SMOLLM_GGUF:-$(first_of target/gpu/SmolLM2-135M-Instruct.Q4_1.gguf target/models/SmolLM2-135M-Instruct.Q4_1.gguf)}
seconds=${SECONDS_PER_SIZE:-5}
python=${PYTHON:-python3}
[ -f "$bin.xz" ] && [ ! -x "$bin" ] && xz -dk "$bin.xz" && chmod +x "$bin"
[ -f "$gguf.part1" ] && [ ! -f "$gguf" ] && cat "$gguf".part* > "$gguf"

card=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)
report "GPU: $card"

# The CUDA 13 libraries the binary links: the CUDA toolkit's, else PyTorch's wheels'.
libdirs=""
for lib in libcublas.so.13 libcurand.so.10 libnvrtc.so.13 libcudart.so.13; do
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
if ! ldd "$bin" | grep -q "not found"; then :; else
    report "FAIL: libraries missing for $bin:"; ldd "$bin" | grep "not found"; exit 1
fi

work=$(mktemp -d)
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start_photon() { # config file
    "$bin" run "$1" --http-port 0 --dashboard-port 0 --grpc-port 0 --http-host 127.0.0.1 > "$work/log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        http=$(grep -o 'HTTP proxy listening on [^ ]*' "$work/log" | head -1 | awk '{print $NF}' | sed 's|http://||')
        rest=$(grep -o 'REST API listening on [^ ]*' "$work/log" | head -1 | awk '{print $NF}' | sed 's|http://||')
        if [ -n "$http" ] && [ -n "$rest" ] && curl -s "http://$rest/api/serve/applications/" | grep -q '"status":"RUNNING"'; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    report "FAIL: Photon did not come up"; tail -30 "$work/log"; return 1
}
stop_photon() { kill "$pid"; wait "$pid" 2>/dev/null; pid=""; }

cat > "$work/embed.yaml" <<YAML
applications:
  - name: emb
    route_prefix: /v1/embeddings
    import_path: photon.models:SentenceEmbedding
    deployments:
      - name: SentenceEmbedding
        max_ongoing_requests: 256
        max_queued_requests: 1024
        ray_actor_options: {num_cpus: 1, num_gpus: 1}
        user_config: {model_dir: $root/$minilm, device: cuda, max_batch_size: 128, batch_wait_timeout_s: 0.002}
YAML
start_photon "$work/embed.yaml" || exit 1
grep -o 'node resources for replicas.*' "$work/log" | head -1
status=0
"$python" benches/embed_bench.py check "http://$http/v1/embeddings" tests/fixtures/minilm_reference.json \
    --min-cosine 0.9999 | tee -a "$work/results" || status=1
"$python" benches/embed_bench.py photon "http://$http/v1/embeddings" --batches 1,8,32,128 --seconds "$seconds" \
    | tee -a "$work/results"
"$python" benches/embed_bench.py photon "http://$http/v1/embeddings" --batches 32,128 --seconds "$seconds" \
    --clients 4 | sed 's/RESULT photon/RESULT photon-4-clients/' | tee -a "$work/results"
stop_photon
"$python" benches/embed_bench.py sentence-transformers "$root/$minilm" --device cuda --batches 1,8,32,128 \
    --seconds "$seconds" | tee -a "$work/results"

if [ -f "$gguf" ]; then
    cat > "$work/gen.yaml" <<YAML
applications:
  - name: gen
    route_prefix: /v1/completions
    import_path: photon.models:TextGeneration
    deployments:
      - name: TextGeneration
        ray_actor_options: {num_cpus: 1, num_gpus: 1}
        user_config: {model_path: $root/$gguf, device: cuda}
YAML
    if start_photon "$work/gen.yaml"; then
        "$python" - "http://$http/v1/completions" <<'PY' | tee -a "$work/results"
import http.client, json, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
def complete(prompt, n):
    conn.request("POST", u.path, json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0}),
                 {"content-type": "application/json"})
    return json.loads(conn.getresponse().read())
first = complete("The capital of France is", 16)
print("CHECK greedy completion:", json.dumps(first["choices"][0]["text"]))
best = 0
for _ in range(3):
    start = time.monotonic()
    r = complete("Write a short story about a robot who learns to paint.", 256)
    best = max(best, r["usage"]["completion_tokens"] / (time.monotonic() - start))
print(f"RESULT smollm2-tokens-per-s 1 {best:.1f}")
PY
        stop_photon
    fi
fi

report ""
report "| runtime | batch 1 | batch 8 | batch 32 | batch 128 |"
report "|---|---|---|---|---|"
for runtime in photon photon-4-clients sentence-transformers-cuda; do
    row="| $runtime |"
    for b in 1 8 32 128; do
        v=$(awk -v r="$runtime" -v b="$b" '$1=="RESULT" && $2==r && $3==b {print $4}' "$work/results")
        row="$row ${v:--} |"
    done
    report "$row"
done
report "(embeddings/s; photon = HTTP requests of B sentences from one client, on keep-alive)"
for b in 32 128; do
    p=$(awk -v b="$b" '$1=="RESULT" && $2=="photon" && $3==b {print $4}' "$work/results")
    s=$(awk -v b="$b" '$1=="RESULT" && $2=="sentence-transformers-cuda" && $3==b {print $4}' "$work/results")
    [ -n "$p" ] && [ -n "$s" ] && report "batch $b: Photon / sentence-transformers = $(awk -v p="$p" -v s="$s" 'BEGIN {printf "%.2f", p/s}')x"
done
grep -h "^CHECK\|smollm2" "$work/results" | while read -r line; do report "$line"; done
exit $status
