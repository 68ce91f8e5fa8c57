"""Records what Ray Serve answers for the Python test applications, as the expected answers
Photon's tests compare against (tests/fixtures/python/ray-2.60.json).

    target/ray-venv/bin/python scripts/record-ray-python.py

Starts a local Ray (token authentication off, 64 logical CPUs so every replica fits on a small
machine), deploys tests/python/serve.yaml with the directory as working_dir, sends each request
of tests/python/cases.json in order, records status, headers and body (and each
application's `docs_path` from the REST API), and stops Ray. Needs
ray[serve] (scripts/ray-compat-check.sh installs it into target/ray-venv)."""

import base64
import http.client
import json
import os
import sys
import urllib.request

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ray_serving import free_port, serving  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "tests", "python")
OUT = os.path.join(ROOT, "tests", "fixtures", "python", "ray-2.60.json")


def request(port, case):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = case.get("body")
    conn.request(case["method"], case["path"], body=body.encode() if body is not None else None, headers=case.get("headers", {}))
    response = conn.getresponse()
    data = response.read()
    conn.close()
    headers = {k.lower(): v for k, v in response.getheaders() if k.lower() not in ("date", "server", "x-request-id")}
    try:
        text = {"body": data.decode()}
    except UnicodeDecodeError:
        text = {"body_base64": base64.b64encode(data).decode()}
    return {"status": response.status, "headers": headers, **text}


def main():
    http_port = free_port()
    config = yaml.safe_load(open(os.path.join(APPS, "serve.yaml")))
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    for app in config["applications"]:
        app["runtime_env"] = {"working_dir": "local://" + APPS}
    # 64 logical CPUs: every replica fits on a small machine.
    with serving(config, os.environ, num_cpus=64) as address:
        cases = json.load(open(os.path.join(APPS, "cases.json")))
        answers = {case["name"]: request(http_port, case) for case in cases}
        import ray

        details = json.load(urllib.request.urlopen(f"{address}/api/serve/applications/"))
        docs_paths = {name: app.get("docs_path") for name, app in details["applications"].items()}
        out = {"ray_version": ray.__version__, "answers": answers, "docs_paths": docs_paths}
        with open(OUT, "w") as f:
            json.dump(out, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        print(f"recorded {len(answers)} answers into {OUT}")


if __name__ == "__main__":
    main()
