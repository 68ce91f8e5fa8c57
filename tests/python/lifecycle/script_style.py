# Written as Ray's examples are: the module itself calls serve.run at its top level.
from ray import serve
from starlette.requests import Request


@serve.deployment
class Hello:
    def __call__(self, request: Request) -> str:
        return "hello from a script"


app = Hello.bind()
handle = serve.run(app, name="script", route_prefix="/script")
