# A __call__ that is a generator function streams what it yields.
import asyncio

from ray import serve
from starlette.requests import Request


@serve.deployment
class SyncGenerator:
    def __call__(self, request: Request):
        for i in range(int(request.query_params.get("n", "3"))):
            yield f"{i}\n"


@serve.deployment
class AsyncGenerator:
    async def __call__(self, request: Request):
        for i in range(int(request.query_params.get("n", "3"))):
            await asyncio.sleep(0.01)
            yield f"item {i};"


sync_app = SyncGenerator.bind()
async_app = AsyncGenerator.bind()
