# Ray Core without Ray: a remote function runs in another process, an actor in this one.
import os

import ray
from ray import serve
from starlette.requests import Request


@ray.remote
def whose_pid():
    return os.getpid()


@ray.remote
class Holder:
    def pid(self):
        return os.getpid()


@serve.deployment
class Tasks:
    def __init__(self):
        self.holder = Holder.remote()

    async def __call__(self, request: Request):
        return {
            "worker": os.getpid(),
            "task": await whose_pid.remote(),
            "actor": ray.get(self.holder.pid.remote()),
        }


app = Tasks.bind()
