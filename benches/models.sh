#!/usr/bin/env bash
# Model benchmarks: embeddings/s and SmolLM2 tokens/s through Photon's HTTP proxy, against
# established runtimes on the same machine, sentences and model, in one run; one table at the
# end (also appended to $OUT/models-DEVICE.md when OUT is set).
#
# Usage: benches/models.sh [cpu|cuda]
#   cpu:  batch sizes 1, 8, 32; sentence-transformers (PyTorch) and onnxruntime on the CPU
#   cuda: batch sizes 1, 8, 32, 128; sentence-transformers on the GPU (see scripts/gpu-check.sh)
# First it checks the reference embeddings (tests/fixtures/minilm_reference.json, cosine >=
# 0.9999); the exit status says whether they matched.
#
# Environment: PHOTON_BIN (default target/release/photon), MINILM_DIR (default
# target/models/all-MiniLM-L6-v2), SMOLLM_GGUF (default target/models/SmolLM2-135M-Instruct.Q4_1.gguf;
# skipped when missing), SKIP_EMBEDDINGS (set: only text generation), SECONDS_PER_SIZE (default 5), PYTHON (default python3; the reference
# runtimes need sentence-transformers, and onnxruntime for the CPU).
set -uo pipefail
# The heads measured here serve 127.0.0.1 only; their REST API needs no token.
export RAY_AUTH_MODE=disabled
cd "$(dirname "$0")/.."
root=$PWD
device=${1:-cpu}
bin=${PHOTON_BIN:-target/release/photon}
minilm=${MINILM_DIR:-target/models/all-MiniLM-L6-v2}
gguf=${SMOLLM_GGUF:-target/models/SmolLM2-135M-Instruct.Q4_1.gguf}
seconds=${SECONDS_PER_SIZE:-5}
python=${PYTHON:-python3}
out=${OUT:-}
case $device in
    cpu) batches=1,8,32; gpus=0; max_batch=32 ;;
    cuda) batches=1,8,32,128; gpus=1; max_batch=128 ;;
    *) echo "usage: benches/models.sh [cpu|cuda]" >&2; exit 2 ;;
esac
abs() { case $1 in /*) echo "$1" ;; *) echo "$root/$1" ;; esac; }
report() { echo "$*"; [ -n "$out" ] && echo "$*" >> "$out/models-$device.md"; return 0; }

work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start_photon() { # config file
    "$bin" run "$1" --http-port 0 --dashboard-port 0 --grpc-port 0 --http-host 127.0.0.1 > "$work/log" 2>&1 &
    pid=$!
    for _ in $(seq 600); do
        http=$(grep -o 'HTTP proxy listening on [^ ]*' "$work/log" | head -1 | awk '{print $NF}' | sed 's|http://||')
        rest=$(grep -o 'REST API listening on [^ ]*' "$work/log" | head -1 | awk '{print $NF}' | sed 's|http://||')
        if [ -n "$http" ] && [ -n "$rest" ] \
            && "$python" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
                "http://$rest/api/serve/applications/" 2>/dev/null | grep -q '"status":"RUNNING"'; then
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    echo "FAIL: Photon did not come up" >&2
    tail -30 "$work/log" >&2
    return 1
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
        ray_actor_options: {num_cpus: 1, num_gpus: $gpus}
        user_config: {model_dir: $(abs "$minilm"), device: $device, max_batch_size: $max_batch, batch_wait_timeout_s: 0}
YAML
status=0
runtimes=""
touch "$work/check" "$work/results"
if [ -z "${SKIP_EMBEDDINGS:-}" ]; then
start_photon "$work/embed.yaml" || exit 1
"$python" benches/embed_bench.py check "http://$http/v1/embeddings" tests/fixtures/minilm_reference.json \
    --min-cosine 0.9999 > "$work/check" || status=1
cat "$work/check"
"$python" benches/embed_bench.py photon "http://$http/v1/embeddings" --batches "$batches" --seconds "$seconds" \
    | tee -a "$work/results"
"$python" benches/embed_bench.py photon "http://$http/v1/embeddings" --batches "$batches" --seconds "$seconds" \
    --clients 4 | sed 's/RESULT photon/RESULT photon-4-clients/' | tee -a "$work/results"
stop_photon
runtimes="photon photon-4-clients sentence-transformers-$device"
"$python" benches/embed_bench.py sentence-transformers "$(abs "$minilm")" --device "$device" --batches "$batches" \
    --seconds "$seconds" | tee -a "$work/results"
if [ "$device" = cpu ]; then
    runtimes="$runtimes onnxruntime-cpu"
    "$python" benches/embed_bench.py onnxruntime "$(abs "$minilm")" --batches "$batches" --seconds "$seconds" \
        | tee -a "$work/results"
fi
fi

if [ -f "$gguf" ]; then
    cat > "$work/gen.yaml" <<YAML
applications:
  - name: gen
    route_prefix: /v1/completions
    import_path: photon.models:TextGeneration
    deployments:
      - name: TextGeneration
        ray_actor_options: {num_cpus: 1, num_gpus: $gpus}
        user_config: {model_path: $(abs "$gguf"), device: $device}
YAML
    if start_photon "$work/gen.yaml"; then
        "$python" - "http://$http/v1/completions" <<'PY' | tee -a "$work/results"
import http.client, json, sys, time, urllib.parse
u = urllib.parse.urlparse(sys.argv[1])
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=600)
def complete(prompt, n):
    conn.request("POST", u.path, json.dumps({"prompt": prompt, "max_tokens": n, "temperature": 0}),
                 {"content-type": "application/json"})
    return json.loads(conn.getresponse().read())
print("CHECK greedy completion of 'The capital of France is':", json.dumps(complete("The capital of France is", 16)["choices"][0]["text"]))
best = 0
for _ in range(3):
    start = time.monotonic()
    r = complete("The history of the Roman Empire began", 200)
    best = max(best, r["usage"]["completion_tokens"] / (time.monotonic() - start))
print(f"RESULT smollm2-tokens-per-s 1 {best:.1f}")
PY
        stop_photon
    fi
fi

sizes=${batches//,/ }
report ""
report "Embeddings/s, all-MiniLM-L6-v2, $device ($(date -u +%Y-%m-%d)); photon = HTTP requests of B sentences on keep-alive"
header="| runtime |"; rule="|---|"
for b in $sizes; do header="$header batch $b |"; rule="$rule---|"; done
report "$header"
report "$rule"
for runtime in $runtimes; do
    row="| $runtime |"
    for b in $sizes; do
        v=$(awk -v r="$runtime" -v b="$b" '$1=="RESULT" && $2==r && $3==b {print $4}' "$work/results")
        row="$row ${v:--} |"
    done
    report "$row"
done
for b in $sizes; do
    p=$(awk -v b="$b" '$1=="RESULT" && $2=="photon" && $3==b {print $4}' "$work/results")
    s=$(awk -v r="sentence-transformers-$device" -v b="$b" '$1=="RESULT" && $2==r && $3==b {print $4}' "$work/results")
    [ -n "$p" ] && [ -n "$s" ] && report "batch $b: Photon / sentence-transformers = $(awk -v p="$p" -v s="$s" 'BEGIN {printf "%.2f", p/s}')x"
done
while read -r line; do report "$line"; done < <(grep -h "^CHECK" "$work/check" "$work/results"; grep -h "smollm2" "$work/results")
exit $status
