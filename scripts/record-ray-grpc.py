"""Records what Ray Serve answers over gRPC for tests/python/apps/grpc_app.py, as the expected
answers Photon's tests compare against (tests/fixtures/python/ray-2.60-grpc.json).

    target/ray-venv/bin/python scripts/record-ray-grpc.py

Starts a local Ray (token authentication off), deploys the app with its gRPC servicer, sends each
call of tests/python/grpc_cases.json, records the reply messages, the status code and details
(a traceback's last line) and the trailing metadata (less `request_id`), and stops Ray. The app imports `serve_pb2`; here
that name is an alias of Ray's own generated module (`ray.serve.generated.serve_pb2`, the same
proto), since two copies of one proto cannot live in one process."""

import json
import os
import sys
import tempfile

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ray_serving import free_port, serving  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APPS = os.path.join(ROOT, "tests", "python")
OUT = os.path.join(ROOT, "tests", "fixtures", "python", "ray-2.60-grpc.json")


def call(stub, case):
    from ray.serve.generated import serve_pb2

    request = serve_pb2.UserDefinedMessage(**case["request"])
    metadata = [("application", "grpc_app")] + list(case.get("metadata", {}).items())
    method = getattr(stub, case["method"])
    messages, code, details, trailing = [], "OK", "", []
    if case["method"] == "Streaming":
        replies = method(request, metadata=metadata, timeout=60)
        try:
            for m in replies:
                messages.append([m.greeting, m.num_x2])
        except grpc.RpcError:
            pass
        code, details, trailing = replies.code().name, replies.details() or "", replies.trailing_metadata() or []
    else:
        try:
            reply, c = method.with_call(request, metadata=metadata, timeout=60)
            messages.append([reply.greeting, reply.num_x2])
            code, details, trailing = c.code().name, c.details() or "", c.trailing_metadata() or []
        except grpc.RpcError as e:
            code, details, trailing = e.code().name, e.details() or "", e.trailing_metadata() or []
    trailing = {k: v for k, v in trailing if k != "request_id"}
    # An exception's details are Ray's traceback (this machine's paths, pids, addresses): only
    # its last line, the exception, is kept (and compared).
    details = details.splitlines()[-1] if "\n" in details else details
    return {"messages": messages, "code": code, "details": details, "trailing_metadata": trailing}


def main():
    aliases = tempfile.mkdtemp()
    for name in ("serve_pb2", "serve_pb2_grpc"):
        with open(os.path.join(aliases, name + ".py"), "w") as f:
            f.write(f"from ray.serve.generated.{name} import *  # noqa\n")
    pythonpath = os.pathsep.join([aliases, APPS] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    grpc_port = free_port()
    config = {
        "http_options": {"host": "127.0.0.1", "port": free_port()},
        "grpc_options": {
            "port": grpc_port,
            "grpc_servicer_functions": ["serve_pb2_grpc.add_UserDefinedServiceServicer_to_server"],
        },
        "applications": [{"name": "grpc_app", "route_prefix": "/grpc", "import_path": "apps.grpc_app:app"}],
    }
    with serving(config, dict(os.environ, PYTHONPATH=pythonpath), num_cpus=8):
        from ray.serve.generated import serve_pb2_grpc

        stub = serve_pb2_grpc.UserDefinedServiceStub(grpc.insecure_channel(f"127.0.0.1:{grpc_port}"))
        cases = json.load(open(os.path.join(APPS, "grpc_cases.json")))
        answers = {case["name"]: call(stub, case) for case in cases}
        import ray

        with open(OUT, "w") as f:
            json.dump({"ray_version": ray.__version__, "answers": answers}, f, indent=1, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        print(f"recorded {len(answers)} answers into {OUT}")


if __name__ == "__main__":
    main()
