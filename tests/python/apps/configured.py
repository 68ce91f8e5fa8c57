# Options in code, overridden by the config; reconfigure gets the user_config.
from ray import serve
from starlette.requests import Request


@serve.deployment(user_config={"threshold": 1}, max_ongoing_requests=7, num_replicas=1)
class Configured:
    def __init__(self):
        self.threshold = None

    def reconfigure(self, config: dict):
        self.threshold = config["threshold"]

    def __call__(self, request: Request):
        return {"threshold": self.threshold}


app = Configured.bind()
