# serve.get_app_handle / serve.get_deployment_handle reach other applications.
from ray import serve
from starlette.requests import Request


@serve.deployment
class Caller:
    async def __call__(self, request: Request):
        composition = serve.get_app_handle("composition")
        adder = serve.get_deployment_handle("Adder", app_name="composition")
        return {"label": await composition.describe.remote(), "added": await adder.add.remote(10)}


app = Caller.bind()
