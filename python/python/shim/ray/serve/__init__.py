"""Photon's `ray.serve`: the part of Ray Serve's API that serving uses, with Ray Serve 2.60's
behaviour, for applications run by Photon (no Ray cluster)."""

from ray.serve import context as _context
from ray.serve.batching import batch
from ray.serve.config import AutoscalingConfig, HTTPOptions, gRPCOptions
from ray.serve.context import get_replica_context
from ray.serve.deployment import Application, Deployment, deployment
from ray.serve.handle import DeploymentHandle, DeploymentResponse, DeploymentResponseGenerator
from ray.serve.multiplex import get_multiplexed_model_id, multiplexed

__all__ = [
    "Application",
    "AutoscalingConfig",
    "Deployment",
    "DeploymentHandle",
    "DeploymentResponse",
    "DeploymentResponseGenerator",
    "HTTPOptions",
    "batch",
    "deployment",
    "gRPCOptions",
    "get_app_handle",
    "get_deployment_handle",
    "get_multiplexed_model_id",
    "get_replica_context",
    "ingress",
    "multiplexed",
    "run",
]


def ingress(app):
    """`@serve.ingress(app)`: the class serves an ASGI app (FastAPI, Starlette, ...). FastAPI
    routes declared on the class's methods get the replica's instance as `self`."""

    def decorate(cls):
        if not isinstance(cls, type):
            raise ValueError("@serve.ingress must be used with a class.")
        if hasattr(cls, "_serve_asgi_app"):
            raise ValueError("@serve.ingress can only be applied once to a class.")
        cls._serve_asgi_app = app
        return cls

    return decorate


def get_app_handle(name):
    """A handle to the ingress deployment of application `name`."""
    # The replica's router resolves the empty deployment name to the application's ingress.
    return DeploymentHandle("", name)


def get_deployment_handle(deployment_name, app_name=None):
    """A handle to a deployment (of the current application unless `app_name` is given)."""
    if app_name is None:
        app_name = _context.get_replica_context().app_name
    return DeploymentHandle(deployment_name, app_name)


def start(*_args, **_kwargs):
    """Serve is already running wherever this code runs under Photon."""


def run(target, *, blocking=False, name="default", route_prefix="/", **_kwargs):
    """Ray's `serve.run`, as met while Photon imports a module that calls it at its top level
    (Ray's examples often do): the application is what the config's `import_path` names, so
    this only returns a handle to the named application's ingress."""
    if not isinstance(target, Application):
        raise TypeError(f"serve.run expects an Application (a bound deployment), got {type(target)}")
    return get_app_handle(name)


def shutdown():
    """Photon's head owns the instance; `photon shutdown` stops it."""
