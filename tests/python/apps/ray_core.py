# Ray Core inside a replica: remote functions and actors, get/put/wait, awaiting refs.
import ray
from ray import serve
from starlette.requests import Request


@ray.remote
def square(x):
    return x * x


@ray.remote
class Tally:
    def __init__(self):
        self.total = 0

    def add(self, n):
        self.total += n
        return self.total


@serve.deployment
class UsesRayCore:
    def __init__(self):
        self.tally = Tally.remote()

    async def __call__(self, request: Request):
        refs = [square.remote(i) for i in range(4)]
        ready, _ = ray.wait(refs, num_returns=4)
        squares = ray.get(refs)
        stored = ray.get(ray.put({"k": "v"}))
        awaited = await square.remote(5)
        total = ray.get(self.tally.add.remote(sum(squares)))
        return {"squares": squares, "ready": len(ready), "stored": stored, "awaited": awaited, "total": total}


app = UsesRayCore.bind()
