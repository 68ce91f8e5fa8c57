# The Python noop apps of benches/python_load.sh, served the same way by Photon and Ray Serve.
from fastapi import FastAPI
from ray import serve
from starlette.requests import Request


@serve.deployment
class Noop:
    async def __call__(self, request: Request):
        return "ok"


api = FastAPI()


@serve.deployment
@serve.ingress(api)
class FastAPINoop:
    @api.get("/")
    async def root(self):
        return "ok"


@serve.deployment
class Callee:
    async def __call__(self):
        return "ok"


@serve.deployment
class Caller:
    def __init__(self, callee):
        self.callee = callee

    async def __call__(self, request: Request):
        return await self.callee.remote()


noop = Noop.bind()
fastapi_noop = FastAPINoop.bind()
handle_pair = Caller.bind(Callee.bind())
