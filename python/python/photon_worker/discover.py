"""`python -m photon_worker discover`: imports the application the way a replica will, and
prints one JSON line describing it: the ingress, and each deployment with the options its
code gives (config form), or the error with its traceback."""

import json
import sys
import traceback

from photon_worker import loader

# Options the config's deployment schema also has; the others stay in code.
CONFIG_OPTIONS = (
    "num_replicas",
    "max_ongoing_requests",
    "max_queued_requests",
    "user_config",
    "autoscaling_config",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
    "ray_actor_options",
    "logging_config",
    "max_replicas_per_node",
    "placement_group_bundles",
    "placement_group_strategy",
    "request_router_config",
)


def describe(app):
    graph = loader.Graph(app)
    deployments = []
    for name, bound in graph.nodes:
        options = {k: v for k, v in bound._bound_deployment._options.items() if k in CONFIG_OPTIONS}
        entry = {"name": name, "options": options}
        asgi = getattr(bound._bound_deployment.func_or_class, "_serve_asgi_app", None)
        docs = getattr(asgi, "docs_url", None)
        if docs:
            entry["docs_path"] = docs
        deployments.append(entry)
    return {"ingress": graph.ingress, "deployments": deployments}


def main(spec):
    try:
        loader.install_import_hook()
        loader.add_code_paths(spec)
        app = loader.load_application(spec["import_path"], spec.get("args") or {})
        out = describe(app)
        json.dumps(out)  # options must be JSON: fail here, with the traceback, if not
    except BaseException:
        out = {"error": traceback.format_exc()}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
