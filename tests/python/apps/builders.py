# Application builders: a function of the config's `args`, plain or typed with a pydantic model.
from pydantic import BaseModel
from ray import serve
from starlette.requests import Request


@serve.deployment
class Greeter:
    def __init__(self, greeting: str, punctuation: str):
        self.greeting = greeting
        self.punctuation = punctuation

    def __call__(self, request: Request):
        return f"{self.greeting}, {request.query_params['name']}{self.punctuation}"


def build(args: dict):
    return Greeter.bind(args["greeting"], args.get("punctuation", "."))


class GreeterArgs(BaseModel):
    greeting: str
    punctuation: str = "!"


def build_typed(args: GreeterArgs):
    assert isinstance(args, GreeterArgs)
    return Greeter.bind(args.greeting, args.punctuation)
