# @serve.multiplexed: models loaded per replica by id, least recently used evicted.
from ray import serve
from starlette.requests import Request


class Model:
    def __init__(self, model_id):
        self.model_id = model_id


@serve.deployment
class Models:
    def __init__(self):
        self.loads = []

    @serve.multiplexed(max_num_models_per_replica=2)
    async def get_model(self, model_id: str):
        self.loads.append(model_id)
        return Model(model_id)

    async def __call__(self, request: Request):
        model = await self.get_model(serve.get_multiplexed_model_id())
        return {"model": model.model_id, "loads": self.loads}


app = Models.bind()
