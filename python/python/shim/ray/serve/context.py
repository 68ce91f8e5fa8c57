"""What user code can ask about where it runs: `serve.get_replica_context()`, the current
request (its id, its multiplexed model id)."""

import contextvars
from dataclasses import dataclass


@dataclass
class DeploymentID:
    name: str
    app_name: str = "default"

    def __str__(self):
        return f"Deployment(name='{self.name}', app='{self.app_name}')"


@dataclass
class ReplicaID:
    unique_id: str
    deployment_id: DeploymentID

    def to_full_id_str(self):
        return f"{self.deployment_id.app_name}#{self.deployment_id.name}#{self.unique_id}"


@dataclass
class ReplicaContext:
    """Ray's `ReplicaContext`: which replica this is, and the user's servable object."""

    replica_id: ReplicaID
    servable_object: object = None
    rank: int = 0
    world_size: int = 1

    @property
    def app_name(self):
        return self.replica_id.deployment_id.app_name

    @property
    def deployment(self):
        return self.replica_id.deployment_id.name

    @property
    def replica_tag(self):
        return self.replica_id.unique_id


@dataclass
class RequestContext:
    route: str = ""
    request_id: str = ""
    app_name: str = ""
    multiplexed_model_id: str = ""


_replica_context = None
_request = contextvars.ContextVar("photon_serve_request", default=RequestContext())


def _set_replica_context(context):
    global _replica_context
    _replica_context = context


def get_replica_context():
    if _replica_context is None:
        from ray.serve.exceptions import RayServeException

        raise RayServeException(
            "`serve.get_replica_context()` may only be called from within a Ray Serve deployment."
        )
    return _replica_context


def _get_request():
    return _request.get()


def _set_request(context):
    return _request.set(context)
