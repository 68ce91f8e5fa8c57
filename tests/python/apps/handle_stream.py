# A streaming handle call: handle.options(stream=True) on a generator method.
from ray import serve
from starlette.requests import Request


@serve.deployment
class Counter:
    def count(self, n: int):
        for i in range(n):
            yield {"i": i}


@serve.deployment
class Relay:
    def __init__(self, counter):
        self.counter = counter.options(method_name="count", stream=True)

    async def __call__(self, request: Request):
        n = int(request.query_params["n"])
        items = [item async for item in self.counter.remote(n)]
        return {"items": items}


app = Relay.bind(Counter.bind())
