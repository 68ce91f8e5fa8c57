# @serve.batch: each caller sends one item, the method gets a list.
from ray import serve
from starlette.requests import Request


@serve.deployment(max_ongoing_requests=32)
class Batcher:
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.2)
    async def handle_batch(self, values: list):
        return [{"value": v, "batch_size": len(values)} for v in values]

    async def __call__(self, request: Request):
        return await self.handle_batch(int(request.query_params["v"]))

    def set_size(self, n):
        self.handle_batch.set_max_batch_size(n)
        return self.handle_batch._get_curr_max_batch_size()


app = Batcher.bind()
