"""What the recording scripts (record-ray-python.py, record-ray-grpc.py) share: a local Ray
Serve 2.60 running a config, from the interpreter of Ray's venv (scripts/ray-venv.sh)."""

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time

import yaml

BIN = os.path.dirname(sys.executable)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(config, env, num_cpus):
    """Starts a local Ray (token authentication off, `num_cpus` logical CPUs), deploys `config`
    with Ray's `serve deploy`, waits until every application is RUNNING (exits with Ray's status
    when one fails or after 10 minutes), yields the dashboard's address, and stops Ray."""
    env = dict(env, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    dashboard = free_port()
    subprocess.run(
        [os.path.join(BIN, "ray"), "start", "--head", f"--num-cpus={num_cpus}", f"--dashboard-port={dashboard}", "--include-dashboard=true"],
        check=True,
        env=env,
    )
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump(config, f)
        address = f"http://127.0.0.1:{dashboard}"
        subprocess.run([os.path.join(BIN, "serve"), "deploy", f.name, "--address", address], check=True, env=env)
        deadline = time.time() + 600
        while True:
            status = subprocess.run(
                [os.path.join(BIN, "serve"), "status", "--address", address], capture_output=True, text=True, env=env
            ).stdout
            apps = (yaml.safe_load(status) or {}).get("applications") or {}
            states = {name: a.get("status") for name, a in apps.items()}
            if len(states) == len(config["applications"]) and all(s == "RUNNING" for s in states.values()):
                break
            if any(s == "DEPLOY_FAILED" for s in states.values()) or time.time() > deadline:
                sys.exit(f"Ray did not deploy the test applications:\n{status}")
            time.sleep(1)
        yield address
    finally:
        subprocess.run([os.path.join(BIN, "ray"), "stop", "--force"], env=env)
