# Deployments bound into others arrive as DeploymentHandles: method calls, keyword
# arguments, a DeploymentResponse passed on as an argument, several handles.
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request


@serve.deployment
class Adder:
    def __init__(self, increment: int):
        self.increment = increment

    def add(self, x: int) -> int:
        return x + self.increment


@serve.deployment
class Multiplier:
    def __init__(self, factor: int = 1):
        self.factor = factor

    async def __call__(self, x: int) -> int:
        return x * self.factor


@serve.deployment
class Ingress:
    def __init__(self, adder: DeploymentHandle, multiplier: DeploymentHandle, label: str = ""):
        assert isinstance(adder, DeploymentHandle)
        self.adder = adder
        self.multiplier = multiplier
        self.label = label

    async def __call__(self, request: Request):
        x = int(request.query_params["x"])
        added = self.adder.add.remote(x)  # a DeploymentResponse, passed on unresolved
        result = await self.multiplier.remote(added)
        return {"label": self.label, "result": result}

    def describe(self) -> str:
        return self.label


app = Ingress.bind(Adder.bind(1), multiplier=Multiplier.bind(factor=3), label="(x+1)*3")
