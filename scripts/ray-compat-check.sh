#!/usr/bin/env bash
# Drives Photon with Ray's own tooling:
# 1. Ray's CLI: `serve deploy`, `serve status`, `serve config` and `serve shutdown -y` with
#    --address pointing at `photon start`; what Ray prints must match `photon status` /
#    `photon config`. Both sides run with Ray's token authentication on (RAY_AUTH_MODE=token,
#    a RAY_AUTH_TOKEN of this run), as Ray's CLI presents the token.
# 2. A grpcio client built from Ray's generated serve.proto stubs against Photon's gRPC front
#    door (scripts/ray_grpc_client.py).
#
#   scripts/ray-compat-check.sh       # installs ray[serve] into target/ray-venv on first use
#
# Needs python3 with venv and access to the Python package registry for the first install.
# Everything runs on 127.0.0.1 and is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/ray-venv
# Without the registry the check cannot run: say so loudly, but do not fail a build over it.
if ! scripts/ray-venv.sh >/dev/null; then
  echo "ray-compat-check: SKIPPED: could not install ray[serve]" >&2
  exit 0
fi
serve="$venv/bin/serve"
py="$venv/bin/python"

cargo build --quiet
photon=target/debug/photon
work=$(mktemp -d)
RAY_AUTH_TOKEN=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
export RAY_AUTH_MODE=token RAY_AUTH_TOKEN
auth=(-H "Authorization: Bearer $RAY_AUTH_TOKEN")
"$photon" start --http-host 127.0.0.1 --http-port 0 --dashboard-port 0 2>"$work/head.log" &
head_pid=$!
trap 'kill $head_pid 2>/dev/null; wait $head_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 500); do
  rest=$(grep -o 'REST API listening on http://[0-9.:]*' "$work/head.log" | awk '{print $NF}' || true)
  http=$(grep -o 'HTTP proxy listening on http://[0-9.:]*' "$work/head.log" | awk '{print $NF}' || true)
  [ -n "$rest" ] && [ -n "$http" ] && break
  sleep 0.01
done
export RAY_DASHBOARD_ADDRESS=$rest

fail() { echo "ray-compat-check: FAILED: $*" >&2; cat "$work/head.log" >&2; exit 1; }

# serve deploy
"$serve" deploy examples/serve-config.yaml --address "$rest" >"$work/deploy.out" 2>&1 || fail "serve deploy: $(cat "$work/deploy.out")"
grep -q "Sent deploy request successfully" "$work/deploy.out" || fail "serve deploy output: $(cat "$work/deploy.out")"
for _ in $(seq 1 300); do
  "$photon" status --address "$rest" >"$work/photon-status.yaml"
  [ "$(grep -c 'status: RUNNING' "$work/photon-status.yaml")" = 2 ] && break
  sleep 0.1
done
[ "$(curl -s -X POST "$http/fruit/" -H 'Content-Type: application/json' -d '["MANGO", 2]')" = 6 ] || fail "fruit app does not answer 6"

# serve status == photon status (applications, statuses, replica states)
"$serve" status --address "$rest" >"$work/ray-status.yaml" 2>"$work/ray-status.err" || fail "serve status: $(cat "$work/ray-status.err")"
"$photon" status --address "$rest" >"$work/photon-status.yaml"
"$py" - "$work/ray-status.yaml" "$work/photon-status.yaml" <<'PY' || fail "serve status differs from photon status"
import sys, yaml
ray, photon = (yaml.safe_load(open(p)) for p in sys.argv[1:3])
assert set(ray["applications"]) == {"fruit_app", "math_app"}, ray["applications"].keys()
for name, app in ray["applications"].items():
    mine = photon["applications"][name]
    assert app["status"] == mine["status"] == "RUNNING", (name, app["status"], mine["status"])
    for dep, d in app["deployments"].items():
        assert d["status"] == mine["deployments"][dep]["status"], (name, dep)
        assert d["replica_states"] == mine["deployments"][dep]["replica_states"], (name, dep)
assert ray["proxies"] == photon["proxies"]
print("serve status matches photon status")
PY

# serve config == photon config == the file's applications
"$serve" config --address "$rest" >"$work/ray-config.yaml" 2>"$work/ray-config.err" || fail "serve config: $(cat "$work/ray-config.err")"
"$photon" config --address "$rest" >"$work/photon-config.yaml"
"$py" - "$work/ray-config.yaml" "$work/photon-config.yaml" examples/serve-config.yaml <<'PY' || fail "serve config differs"
import sys, yaml
ray = list(yaml.safe_load_all(open(sys.argv[1])))
photon = list(yaml.safe_load_all(open(sys.argv[2])))
file_apps = yaml.safe_load(open(sys.argv[3]))["applications"]
assert ray == photon == file_apps, (ray, photon)
print("serve config matches photon config and the deployed file")
PY

# The instance-wide /metrics scrape parses with Prometheus' own Python text parser.
curl -s "$rest/metrics" >"$work/metrics.txt"
"$py" - "$work/metrics.txt" <<'PY' || fail "/metrics does not parse"
import sys
from prometheus_client.parser import text_string_to_metric_families
families = {f.name: f for f in text_string_to_metric_families(open(sys.argv[1]).read())}
for name in ("ray_serve_num_http_requests", "ray_serve_http_request_latency_ms", "ray_serve_deployment_request_counter",
             "ray_serve_replica_processing_queries", "ray_serve_deployment_status"):
    assert name in families, (name, sorted(families))
print(f"/metrics parsed by prometheus_client: {len(families)} families")
PY

# serve shutdown -y
"$serve" shutdown -y --address "$rest" >"$work/shutdown.out" 2>&1 || fail "serve shutdown: $(cat "$work/shutdown.out")"
for _ in $(seq 1 300); do
  curl -s "${auth[@]}" "$rest/api/serve/applications/" | "$py" -c 'import json,sys; sys.exit(bool(json.load(sys.stdin)["applications"]))' && break
  sleep 0.1
done
curl -s "${auth[@]}" "$rest/api/serve/applications/" | "$py" -c 'import json,sys; sys.exit(bool(json.load(sys.stdin)["applications"]))' || fail "applications remain after serve shutdown"
[ "$(curl -s -o /dev/null -w '%{http_code}' "$rest/api/serve/applications/")" = 401 ] || fail "the REST API answered without the token"
echo "ray-compat-check: serve deploy/status/config/shutdown against Photon, with token authentication: ok"

# 2. gRPC with Ray's generated client stubs.
cat >"$work/grpc.yaml" <<'YAML'
grpc_options:
  grpc_servicer_functions: [user_defined_protos_pb2_grpc.add_UserDefinedServiceServicer_to_server]
applications:
  - name: greeter
    import_path: photon.examples:greeter
    route_prefix: /greeter
    deployments:
      - name: Greeter
        user_config: {stream_interval_ms: 100}
  - name: slow
    import_path: photon.examples:sleep
    route_prefix: /slow
    deployments:
      - name: Sleep
        max_ongoing_requests: 1
        max_queued_requests: 1
        user_config: {sleep_ms: 300}
YAML
"$photon" run "$work/grpc.yaml" --http-host 127.0.0.1 --http-port 0 --dashboard-port 0 --grpc-port 0 2>"$work/run.log" &
run_pid=$!
grpc=""
for _ in $(seq 1 500); do
  grpc=$(grep -o 'gRPC proxy listening on [0-9.:]*' "$work/run.log" | awk '{print $NF}' || true)
  [ -n "$grpc" ] && break
  sleep 0.01
done
grpc="127.0.0.1:${grpc##*:}"
for _ in $(seq 1 300); do
  grep -q 'deployment is HEALTHY deployment=slow#Sleep' "$work/run.log" && grep -q 'deployment is HEALTHY deployment=greeter#Greeter' "$work/run.log" && break
  sleep 0.1
done
"$py" scripts/ray_grpc_client.py "$grpc" || { kill $run_pid; fail "gRPC client"; }
kill $run_pid; wait $run_pid 2>/dev/null || true
echo "ray-compat-check: 3 passed, 0 failed"
