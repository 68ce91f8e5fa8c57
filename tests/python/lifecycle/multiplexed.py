# Two replicas of a multiplexed deployment: requests for a model go to the replica holding it.
import os

from ray import serve
from starlette.requests import Request


@serve.deployment(num_replicas=2, ray_actor_options={"num_cpus": 0.1})
class Models:
    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str):
        return model_id

    async def __call__(self, request: Request):
        model = await self.get_model(serve.get_multiplexed_model_id())
        return {"model": model, "pid": os.getpid()}


app = Models.bind()
