# serve.get_replica_context() inside a replica.
from ray import serve
from starlette.requests import Request


@serve.deployment
class WhoAmI:
    def __call__(self, request: Request):
        ctx = serve.get_replica_context()
        return {
            "app": ctx.app_name,
            "deployment": ctx.deployment,
            "has_tag": bool(ctx.replica_tag),
            "servable": type(ctx.servable_object).__name__,
        }


app = WhoAmI.bind()
