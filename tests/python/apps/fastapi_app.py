# A FastAPI ingress: path and query parameters, pydantic bodies, response models, status
# codes, HTTPException, exception handlers, and routes that use the instance as `self`.
from typing import Optional

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from ray import serve

api = FastAPI()


class Item(BaseModel):
    name: str
    price: float
    tags: list[str] = []


class ItemOut(BaseModel):
    name: str
    total: float


class Refused(Exception):
    pass


@api.exception_handler(Refused)
async def refused(request, exc):
    return JSONResponse({"refused": str(exc)}, status_code=409)


@serve.deployment
@serve.ingress(api)
class Shop:
    def __init__(self, tax: float):
        self.tax = tax
        self.orders = 0

    @api.get("/")
    def root(self):
        return {"shop": "open"}

    @api.get("/items/{item_id}")
    async def item(self, item_id: int, q: Optional[str] = None):
        return {"item_id": item_id, "q": q}

    @api.post("/items", response_model=ItemOut, status_code=201)
    def create(self, item: Item):
        self.orders += 1
        return {"name": item.name, "total": round(item.price * (1 + self.tax), 2), "ignored": "x"}

    @api.get("/orders")
    def orders(self):
        return {"orders": self.orders}

    @api.get("/missing")
    def missing(self):
        raise HTTPException(status_code=404, detail="no such thing")

    @api.get("/refuse")
    def refuse(self):
        raise Refused("not today")


app = Shop.bind(0.5)
