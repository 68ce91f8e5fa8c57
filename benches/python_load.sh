#!/usr/bin/env bash
# Python deployments under load: the same apps (benches/python/noop_apps.py) and config
# (benches/python/noop.yaml) on Photon and on Ray Serve 2.60, one after the other on this
# machine, driven by wrk with the same settings. Prints, per target: launch to the first 200
# and resident memory with the noop app alone, then req/s, p50 and p99 for the Python noop and
# the FastAPI noop at each connection count, and the p50 of a request that makes one handle
# call (/handle) against the noop's at one connection.
#
#   benches/python_load.sh                       # 10 s per run, connections 1 64 256
#   DURATION=5 CONNECTIONS="1 64" TARGETS=photon benches/python_load.sh
#
# Needs wrk (installed from Debian's packages when missing, as root) and Ray's venv
# (scripts/ray-venv.sh). Photon's apps run in target/python-bench-venv (made here): what the
# test apps import plus uvloop, which a Ray Serve install brings and which both run on.
# Everything listens on 127.0.0.1 and is stopped on exit.
set -euo pipefail
# The heads measured here serve 127.0.0.1 only; their REST API needs no token.
export RAY_AUTH_MODE=disabled
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-"1 64 256"}
TARGETS=${TARGETS:-"photon ray"}
if ! command -v wrk >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
[ -n "${PHOTON_BIN:-}" ] || cargo build --release --quiet
PHOTON=$(realpath "${PHOTON_BIN:-target/release/photon}")
PY=$PWD/target/python-bench-venv/bin/python  # not resolved: the venv is the link
if ! "$PY" -c 'import fastapi, uvloop' 2>/dev/null; then
  python3 -m venv target/python-bench-venv
  "$PY" -m pip install -q -r tests/python/requirements.txt "uvloop==$("$(scripts/ray-venv.sh)" -c 'import uvloop; print(uvloop.__version__)')"
fi
RAY_PY=$(scripts/ray-venv.sh)
RAY_BIN=$(dirname "$RAY_PY")
APPS=$(realpath benches/python)

work=$(mktemp -d)
cleanup() {
  [ -n "${photon_pid:-}" ] && kill "$photon_pid" 2>/dev/null
  "$RAY_BIN/ray" stop --force >/dev/null 2>&1 || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
wait_200() { # url [pid that must stay alive]
  until [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" = 200 ]; do
    if [ -n "${2:-}" ] && ! kill -0 "$2" 2>/dev/null; then echo "the server exited; its log:" >&2; cat "$work"/*.log >&2; exit 1; fi
    sleep 0.005
  done
}

# Resident memory (MB) of a process and all its descendants.
tree_rss_mb() {
  python3 - "$1" <<'PY'
import os, sys
children = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        ppid = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        continue
    children.setdefault(ppid, []).append(int(pid))
total, todo = 0, [int(sys.argv[1])]
while todo:
    pid = todo.pop()
    todo += children.get(pid, [])
    try:
        total += next(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS"))
    except (OSError, StopIteration):
        pass
print(total // 1024)
PY
}

# Resident memory (MB) of every process of the local Ray instance.
ray_rss_mb() {
  ps -eo rss,args | awk '/ray|raylet|gcs_server|ServeReplica|ServeController|ProxyActor/ && !/awk/ {s+=$1} END {print int(s/1024)}'
}

run_wrk() { # url connections -> "rps p50 p99 errors"
  local threads=2; [ "$2" -lt 2 ] && threads=1
  local out; out=$(wrk -t"$threads" -c"$2" -d"${DURATION}s" --latency "$1" 2>&1)
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(awk '$1=="50%" {print $2}' <<<"$out") $(awk '$1=="99%" {print $2}' <<<"$out") $(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",",""); n+=$4+$6+$8+$10} END {print n+0}' <<<"$out")"
}

load_table() { # target base-url
  for path in noop fastapi; do
    for c in $CONNECTIONS; do
      read -r rps p50 p99 errs <<<"$(run_wrk "$2/$path/" "$c")"
      printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$1" "$path" "$c" "$rps" "$p50" "$p99" "$errs"
    done
  done
  read -r _ noop50 _ _ <<<"$(run_wrk "$2/noop/" 1)"
  read -r _ handle50 _ _ <<<"$(run_wrk "$2/handle/" 1)"
  printf '| %s | handle call (1 conn) | p50 %s against the noop'"'"'s %s |\n' "$1" "$handle50" "$noop50"
}

noop_only="$work/noop-only.yaml"
python3 - "$noop_only" <<'PY'
import sys
text = open("benches/python/noop.yaml").read()
start = text.index("applications:")
apps = text[start:].split("\n  - ")
open(sys.argv[1], "w").write(apps[0] + "\n  - " + apps[1].rstrip() + "\n")
PY

results=()
if [[ " $TARGETS " == *" photon "* ]]; then
  port=$(free_port); dash=$(free_port)
  start=$(now_ms)
  (cd "$APPS" && PHOTON_PYTHON=$PY exec "$PHOTON" run "$noop_only" --http-host 127.0.0.1 --http-port "$port" --dashboard-port "$dash" 2>"$work/photon.log") &
  photon_pid=$!
  wait_200 "http://127.0.0.1:$port/noop/" "$photon_pid"
  results+=("photon: launch to first 200 $(( $(now_ms) - start )) ms, head + one Python replica $(tree_rss_mb "$photon_pid") MB RSS")
  kill "$photon_pid"; wait "$photon_pid" 2>/dev/null || true
  (cd "$APPS" && PHOTON_PYTHON=$PY exec "$PHOTON" run noop.yaml --num-cpus 16 --http-host 127.0.0.1 --http-port "$port" --dashboard-port "$dash" 2>"$work/photon.log") &
  photon_pid=$!
  for path in noop fastapi handle; do wait_200 "http://127.0.0.1:$port/$path/" "$photon_pid"; done
  printf '| target | app | conns | req/s | p50 | p99 | errors |\n|---|---|---|---|---|---|---|\n'
  load_table photon "http://127.0.0.1:$port"
  kill "$photon_pid"; wait "$photon_pid" 2>/dev/null || true
  photon_pid=""
fi

if [[ " $TARGETS " == *" ray "* ]]; then
  export RAY_USAGE_STATS_ENABLED=0
  port=$(free_port); dash=$(free_port)
  ray_config() { # source target
    "$RAY_PY" - "$1" "$2" "$port" "$APPS" <<'PY'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config["http_options"] = {"host": "127.0.0.1", "port": int(sys.argv[3])}
for app in config["applications"]:
    app["runtime_env"] = {"working_dir": "local://" + sys.argv[4]}
yaml.safe_dump(config, open(sys.argv[2], "w"))
PY
  }
  ray_config "$noop_only" "$work/ray-noop.yaml"
  ray_config benches/python/noop.yaml "$work/ray-all.yaml"
  start=$(now_ms)
  "$RAY_BIN/ray" start --head --num-cpus=16 --dashboard-port "$dash" >"$work/ray.log" 2>&1
  "$RAY_BIN/serve" deploy "$work/ray-noop.yaml" --address "http://127.0.0.1:$dash" >>"$work/ray.log" 2>&1
  wait_200 "http://127.0.0.1:$port/noop/"
  results+=("ray: launch to first 200 $(( $(now_ms) - start )) ms, $(ray_rss_mb) MB RSS")
  "$RAY_BIN/serve" deploy "$work/ray-all.yaml" --address "http://127.0.0.1:$dash" >>"$work/ray.log" 2>&1
  wait_200 "http://127.0.0.1:$port/fastapi/"; wait_200 "http://127.0.0.1:$port/handle/"
  [[ " $TARGETS " == *" photon "* ]] || printf '| target | app | conns | req/s | p50 | p99 | errors |\n|---|---|---|---|---|---|---|\n'
  load_table ray "http://127.0.0.1:$port"
fi
echo
printf '%s\n' "${results[@]}"
