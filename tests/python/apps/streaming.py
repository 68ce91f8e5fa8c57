# StreamingResponse streams chunk by chunk; a plain method that returns a generator object
# (without being a generator function itself) is an error in Ray.
import asyncio

from ray import serve
from starlette.requests import Request
from starlette.responses import StreamingResponse


@serve.deployment
class Streamer:
    def __call__(self, request: Request):
        n = int(request.query_params.get("n", "3"))
        kind = request.query_params["kind"]
        if kind == "sync":
            return (f"{i}\n" for i in range(n))
        if kind == "async":
            return self.numbers(n)
        return StreamingResponse(self.numbers(n), media_type="text/event-stream")

    async def numbers(self, n):
        for i in range(n):
            await asyncio.sleep(0.01)
            yield f"data: {i}\n\n"


app = Streamer.bind()
