# A function deployment.
from ray import serve
from starlette.requests import Request


@serve.deployment
def shout(request: Request) -> str:
    return request.query_params.get("word", "hey").upper() + "!"


app = shout.bind()
