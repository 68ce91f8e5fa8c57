#!/usr/bin/env bash
# The LLM example's GPU check, in one call on a GPU machine (no Rust toolchain, no network):
#   1. `photon run examples/llm-service/serve.yaml` (num_gpus: 1): its runtime_env.pip
#      environment inherits the machine's torch and transformers, and installs gguf and accelerate
#      from the wheels carried in target/gpu/wheels (scripts/gpu-llm-check.sh --prepare makes
#      them on a machine with network);
#   2. checks the answer against the same model in plain transformers, in-process
#      (examples/llm-service/reference.py, in the same environment), and that torch used the GPU;
#   3. measures tokens/s through Photon's HTTP proxy (one client, REQUESTS requests) against
#      reference.py's in-process figure;
# and prints one table (also written to $OUT/llm-gpu.md when OUT is set).
#
#   scripts/gpu-llm-check.sh --prepare        # here: the wheels into target/gpu/wheels
#   scripts/gpu-llm-check.sh                  # there
#
# Inputs: PHOTON_BIN (default target/gpu/photon, else target/release/photon; .xz unpacked),
# SMOLLM_GGUF (default target/gpu/SmolLM2-135M-Instruct.Q4_1.gguf, else target/models/...),
# PYTHON (the machine's interpreter with torch, default python3), CONFIG (default
# examples/llm-service/serve.yaml), EXPECT_DEVICE (default cuda), REQUESTS (default 20),
# MAX_NEW_TOKENS (default 64).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --prepare ]; then
  mkdir -p target/gpu/wheels
  python3 -m pip download -q --no-deps -d target/gpu/wheels gguf accelerate
  ls target/gpu/wheels
  exit 0
fi
first_of() { for f in "$@"; do [ -e "$f" ] && { echo "$f"; return; }; done; echo "$1"; }
PHOTON_BIN=${PHOTON_BIN:-$(first_of target/gpu/photon target/release/photon)}
[ -f "$PHOTON_BIN.xz" ] && [ ! -x "$PHOTON_BIN" ] && xz -dk "$PHOTON_BIN.xz" && chmod +x "$PHOTON_BIN"
SMOLLM_GGUF=$(realpath "${SMOLLM_GGUF:-$(first_of target/gpu/SmolLM2-135M-Instruct.Q4_1.gguf target/models/SmolLM2-135M-Instruct.Q4_1.gguf)}")
[ -f "$SMOLLM_GGUF.part1" ] && [ ! -f "$SMOLLM_GGUF" ] && cat "$SMOLLM_GGUF".part* > "$SMOLLM_GGUF"
PYTHON=${PYTHON:-python3}
CONFIG=${CONFIG:-examples/llm-service/serve.yaml}
EXPECT_DEVICE=${EXPECT_DEVICE:-cuda}
REQUESTS=${REQUESTS:-20}
MAX_NEW_TOKENS=${MAX_NEW_TOKENS:-64}
PROMPT="Write a short poem about the sea."

work=$(mktemp -d)
export PHOTON_CACHE_DIR=$work/cache PHOTON_PYTHON=$PYTHON LLM_MODEL_FILE=$SMOLLM_GGUF RAY_AUTH_MODE=disabled
if [ -d target/gpu/wheels ]; then
  # No network there: pip takes what the environment lacks from the carried wheels.
  export PIP_FIND_LINKS=$PWD/target/gpu/wheels PIP_NO_INDEX=1
fi
port=$("$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$PHOTON_BIN" run "$CONFIG" --http-host 127.0.0.1 --http-port "$port" --dashboard-port 0 --grpc-port 0 2>"$work/photon.log" &
photon_pid=$!
trap 'kill $photon_pid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
until curl -sf -o /dev/null -X POST "http://127.0.0.1:$port/" -d '{"prompt": "hi", "max_new_tokens": 1}'; do
  if ! kill -0 "$photon_pid" 2>/dev/null; then echo "photon exited; its log:" >&2; tail -40 "$work/photon.log" >&2; exit 1; fi
  sleep 1
done

"$PYTHON" - "$port" "$PROMPT" "$MAX_NEW_TOKENS" "$REQUESTS" > "$work/served.json" <<'PY'
import json, statistics, sys, time, urllib.request
port, prompt, n, requests = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def ask():
    body = json.dumps({"prompt": prompt, "max_new_tokens": n}).encode()
    started = time.perf_counter()
    answer = json.load(urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/", body)))
    return answer, time.perf_counter() - started
answer, _ = ask()  # warm-up
rates = []
for _ in range(requests):
    answer, seconds = ask()
    rates.append(answer["tokens"] / seconds)
print(json.dumps({**answer, "tokens_per_s": statistics.median(rates)}))
PY
env_python=$(ls -t "$PHOTON_CACHE_DIR"/envs/*/bin/python | head -1)
"$env_python" examples/llm-service/reference.py "$SMOLLM_GGUF" "$PROMPT" "$MAX_NEW_TOKENS" "$REQUESTS" > "$work/reference.json"
"$PYTHON" - "$work/served.json" "$work/reference.json" "$EXPECT_DEVICE" "${OUT:-}" <<'PY'
import json, sys
served, reference = (json.loads(open(p).read().splitlines()[-1]) for p in sys.argv[1:3])
expect, out = sys.argv[3], sys.argv[4]
assert served["device"] == expect, f"the replica's torch ran on {served['device']}, not {expect}"
assert (served["text"], served["tokens"]) == (reference["text"], reference["tokens"]), (served, reference)
table = "\n".join([
    "| runtime | device | tokens/s (greedy, one client) |",
    "|---|---|---|",
    f"| Photon (HTTP, Python replica) | {served['device']} | {served['tokens_per_s']:.1f} |",
    f"| transformers in-process | {reference['device']} | {reference['tokens_per_s']:.1f} |",
    f"| ratio | | {served['tokens_per_s'] / reference['tokens_per_s']:.2f}x |",
])
print(f"answer checked ({served['tokens']} tokens, same as transformers in-process)\n{table}")
if out:
    open(f"{out}/llm-gpu.md", "w").write(table + "\n")
PY
