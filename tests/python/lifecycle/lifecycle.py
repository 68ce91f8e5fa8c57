# A deployment that shows its lifecycle: reconfigure, health checks, a crash, logs, __del__.
import logging
import os

from ray import serve
from starlette.requests import Request

logger = logging.getLogger("ray.serve")


@serve.deployment(health_check_period_s=0.2, health_check_timeout_s=2)
class Lifecycle:
    def __init__(self):
        self.healthy = True
        self.config = None

    def reconfigure(self, config):
        self.config = config

    def check_health(self):
        if not self.healthy:
            raise RuntimeError("told to be unhealthy")

    async def __call__(self, request: Request):
        action = request.query_params.get("action", "")
        if action == "crash":
            os._exit(3)
        if action == "unhealthy":
            self.healthy = False
        if action == "log":
            logger.info("logged from the request")
            print("printed from the request")
        return {"pid": os.getpid(), "config": self.config}

    def __del__(self):
        path = (self.config or {}).get("goodbye_file")
        if path:
            with open(path, "w") as f:
                f.write("goodbye")


app = Lifecycle.bind()
