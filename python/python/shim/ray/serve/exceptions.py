"""Ray Serve's exception types (`ray.serve.exceptions`)."""


class RayServeException(Exception):
    pass


class BackPressureError(RayServeException):
    """The deployment's queue is full (`max_queued_requests`)."""

    def __init__(self, *, num_queued_requests=0, max_queued_requests=0, message=None):
        self.num_queued_requests = num_queued_requests
        self.max_queued_requests = max_queued_requests
        self.message = message or (
            f"Request dropped due to backpressure (num_queued_requests={num_queued_requests}, "
            f"max_queued_requests={max_queued_requests})."
        )
        super().__init__(self.message)

    def __reduce__(self):
        return (_backpressure, (self.num_queued_requests, self.max_queued_requests, self.message))


def _backpressure(queued, maximum, message):
    return BackPressureError(num_queued_requests=queued, max_queued_requests=maximum, message=message)


class DeploymentUnavailableError(RayServeException):
    """The deployment failed to deploy and has no running replicas."""

    def __init__(self, deployment_id=None, message=None):
        self.deployment_id = deployment_id
        self.message = message or f"{deployment_id} is unavailable because it failed to deploy."
        super().__init__(self.message)


class RequestCancelledError(RayServeException):
    def __init__(self, request_id=None):
        self.request_id = request_id
        super().__init__(f"Request {request_id} was cancelled.")


class ActorDiedError(RayServeException):
    """The replica serving a call died while it ran (Ray's `ActorDiedError`)."""
