#!/usr/bin/env bash
# HTTP load benchmark: Photon (noop app, one proxy hop to a separate replica process) against an
# nginx proxy hop, and Ray Serve when a `ray` installation is present, all driven by wrk with the
# same settings on this machine. Prints one table (req/s, p50, p99, errors, RSS) and the ratios.
#
#   benches/http_load.sh                  # 15 s per run, connections 1 16 64 256
#   DURATION=5 CONNECTIONS="1 64" benches/http_load.sh
#   CONFIG=benches/noop-default-limits.yaml benches/http_load.sh
#   PHOTON_BIN=/path/to/photon TARGETS=photon EXTRAS=0 benches/http_load.sh   # A/B of two builds
#
#   RATES="2000 8000" benches/http_load.sh                 # open-loop rates (default 2000 8000)
#
# Needs wrk and nginx, and installs them when missing (Debian's wrk and nginx-light, as root);
# everything it starts listens on 127.0.0.1 only and is stopped on exit. After the closed-loop
# table (wrk) comes an open-loop one: requests at a fixed rate over 64 connections, latency
# counted from each request's scheduled time (benches/open_loop.rs), so queueing is not hidden.
set -euo pipefail
# The heads measured here serve 127.0.0.1 only; their REST API needs no token.
export RAY_AUTH_MODE=disabled
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15}
CONNECTIONS=${CONNECTIONS:-"1 16 64 256"}
CONFIG=${CONFIG:-benches/noop.yaml}
RATES=${RATES:-"2000 8000"}
if ! command -v wrk >/dev/null || ! command -v nginx >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing wrk and nginx-light (Debian packages)" >&2
    apt-get update -qq && apt-get install -y -qq wrk nginx-light >/dev/null
  fi
fi
for tool in wrk nginx; do
  command -v "$tool" >/dev/null || { echo "missing $tool (Debian: apt-get install wrk nginx-light)" >&2; exit 1; }
done
if [ -z "${PHOTON_BIN:-}" ]; then
  cargo build --release --quiet
fi
PHOTON=${PHOTON_BIN:-target/release/photon}
TARGETS=${TARGETS:-"photon nginx ray"}
EXTRAS=${EXTRAS:-1}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sum of resident memory (MB) of a process and its children.
rss_mb() {
  local total=0 pid
  for pid in "$1" $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/VmRSS/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)))
  done
  echo $((total / 1024))
}

# --- Photon -----------------------------------------------------------------------------------
launch_ns=$(date +%s%N)
"$PHOTON" run "$CONFIG" --http-host 127.0.0.1 --http-port 0 --grpc-port 0 --dashboard-port 0 2>"$work/photon.log" &
photon_pid=$!
pids+=("$photon_pid")
photon_url=""
for _ in $(seq 1 200); do
  photon_url=$(grep -o 'HTTP proxy listening on http://[0-9.:]*' "$work/photon.log" | awk '{print $NF}' || true)
  [ -n "$photon_url" ] && break
  sleep 0.01
done
until [ "$(curl -s -o /dev/null -w '%{http_code}' "$photon_url/")" = 200 ]; do sleep 0.005; done
first_200_ms=$(( ($(date +%s%N) - launch_ns) / 1000000 ))
photon_grpc=$(grep -o 'gRPC proxy listening on [0-9.:]*' "$work/photon.log" | awk '{print $NF}')
photon_grpc="127.0.0.1:${photon_grpc##*:}"

# --- nginx proxy hop --------------------------------------------------------------------------
up=$(free_port); px=$(free_port)
mkdir -p "$work"/{body,proxy,fastcgi,uwsgi,scgi}
sed -e "s#PREFIX#$work#g" -e "s#UPSTREAM_PORT#$up#g" -e "s#PROXY_PORT#$px#g" benches/nginx.conf >"$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work"
until curl -sf "http://127.0.0.1:$px/" >/dev/null; do sleep 0.01; done
nginx_url="http://127.0.0.1:$px"

# --- Ray Serve (optional) ---------------------------------------------------------------------
ray_url=""
if python3 -c 'import ray.serve' 2>/dev/null; then
  rp=$(free_port)
  cat >"$work/ray_noop.py" <<PY
from ray import serve
@serve.deployment
class Noop:
    def __call__(self, request):
        return "ok"
app = Noop.bind()
PY
  (cd "$work" && serve run ray_noop:app --route-prefix / >"$work/ray.log" 2>&1 &)
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:8000/" >/dev/null && { ray_url="http://127.0.0.1:8000"; break; }; sleep 0.1; done
  [ -n "$ray_url" ] || echo "Ray Serve did not come up; skipped" >&2
fi

# --- Load ---------------------------------------------------------------------------------------
run_wrk() { # url connections -> "rps p50 p99 errors"
  local threads=2; [ "$2" -lt 2 ] && threads=1
  local out; out=$(wrk -t"$threads" -c"$2" -d"${DURATION}s" --latency "$1/" 2>&1)
  local rps p50 p99 errs
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  errs=$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",",""); n+=$4+$6+$8+$10} END {print n+0}' <<<"$out")
  echo "$rps $p50 $p99 $errs"
}

printf '| target | conns | req/s | p50 | p99 | errors | RSS MB |\n|---|---|---|---|---|---|---|\n'
declare -A RPS
for c in $CONNECTIONS; do
  for target in $TARGETS; do
    url_var="${target}_url"; url=${!url_var}
    [ -n "$url" ] || continue
    read -r rps p50 p99 errs <<<"$(run_wrk "$url" "$c")"
    rss="-"
    [ "$target" = photon ] && rss=$(rss_mb "$photon_pid")
    [ "$target" = nginx ] && rss=$(rss_mb "$(cat "$work/nginx.pid")")
    RPS[$target.$c]=$rps
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$c" "$rps" "$p50" "$p99" "$errs" "$rss"
  done
done
echo
for c in $CONNECTIONS; do
  [ -n "${RPS[nginx.$c]:-}" ] || continue
  line="conns $c: photon/nginx = $(python3 -c "print(round(${RPS[photon.$c]}/${RPS[nginx.$c]}, 2))")"
  [ -n "${RPS[ray.$c]:-}" ] && line="$line, photon/ray = $(python3 -c "print(round(${RPS[photon.$c]}/${RPS[ray.$c]}, 1))")"
  echo "$line"
done
echo "photon launch to first 200: ${first_200_ms} ms"

# --- Open loop: fixed rates, latency from the scheduled send time ------------------------------
cargo bench --quiet --bench open_loop --no-run 2>/dev/null
echo
printf '| target | offered req/s | achieved req/s | p50 | p99 | p99.9 | errors |\n|---|---|---|---|---|---|---|\n'
for rate in $RATES; do
  for target in $TARGETS; do
    url_var="${target}_url"; url=${!url_var}
    [ -n "$url" ] || continue
    read -r got p50 p99 p999 errs <<<"$(cargo bench --quiet --bench open_loop -- "$url/" "$rate" "$DURATION" 64)"
    printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$target" "$rate" "$got" "$p50" "$p99" "$p999" "$errs"
  done
done

# --- Photon only: the gRPC path (noop app) and the fruit app (three handle hops) ---------------
[ "$EXTRAS" = 1 ] || exit 0
cargo bench --quiet --bench grpc_load --no-run 2>/dev/null
echo
printf '| path | conns | req/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n'
for c in $CONNECTIONS; do
  read -r rps p50 p99 errs <<<"$(cargo bench --quiet --bench grpc_load -- "$photon_grpc" "$c" "$DURATION" noop)"
  printf '| photon gRPC noop | %s | %s | %s | %s | %s |\n' "$c" "$rps" "$p50" "$p99" "$errs"
done
"$PHOTON" run examples/serve-config.yaml --http-host 127.0.0.1 --http-port 0 --dashboard-port 0 2>"$work/fruit.log" &
pids+=("$!")
fruit_url=""
for _ in $(seq 1 200); do
  fruit_url=$(grep -o 'HTTP proxy listening on http://[0-9.:]*' "$work/fruit.log" | awk '{print $NF}' || true)
  [ -n "$fruit_url" ] && break
  sleep 0.01
done
until [ "$(curl -s -X POST -d '["MANGO", 2]' "$fruit_url/fruit/")" = 6 ]; do sleep 0.01; done
for c in $CONNECTIONS; do
  threads=2; [ "$c" -lt 2 ] && threads=1
  out=$(wrk -t"$threads" -c"$c" -d"${DURATION}s" --latency -s benches/fruit.lua "$fruit_url/fruit/" 2>&1)
  printf '| photon HTTP fruit (3 hops) | %s | %s | %s | %s | %s |\n' "$c" "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" \
    "$(awk '$1=="50%" {print $2}' <<<"$out")" "$(awk '$1=="99%" {print $2}' <<<"$out")" \
    "$(awk '/Non-2xx/ {n+=$NF} /Socket errors/ {gsub(",",""); n+=$4+$6+$8+$10} END {print n+0}' <<<"$out")"
done
