# A Ray Serve application, unchanged: a FastAPI ingress that calls a second deployment
# through a handle. Served by `photon run examples/python/config.yaml` (or by Ray Serve).
from fastapi import FastAPI
from pydantic import BaseModel
from ray import serve
from ray.serve.handle import DeploymentHandle

api = FastAPI()


class Order(BaseModel):
    fruit: str
    amount: int


@serve.deployment(user_config={"prices": {"MANGO": 3.0, "ORANGE": 2.0}})
class PriceList:
    def reconfigure(self, config: dict):
        self.prices = config["prices"]

    def price(self, fruit: str) -> float:
        return self.prices[fruit]


@serve.deployment
@serve.ingress(api)
class FruitStand:
    def __init__(self, prices: DeploymentHandle):
        self.prices = prices

    @api.get("/")
    def hello(self) -> str:
        return "Welcome to the fruit stand"

    @api.post("/order")
    async def order(self, order: Order) -> dict:
        price = await self.prices.price.remote(order.fruit.upper())
        return {"fruit": order.fruit, "amount": order.amount, "total": price * order.amount}


app = FruitStand.bind(PriceList.bind())
