# User code that raises: a 500 over HTTP; through a handle, the caller gets the exception.
from ray import serve
from starlette.requests import Request


class OutOfStock(Exception):
    pass


@serve.deployment
class Store:
    def buy(self, item: str):
        if item == "mango":
            raise OutOfStock(f"no {item} left")
        if item == "bad":
            raise ValueError("bad item")
        return f"bought {item}"


@serve.deployment
class Front:
    def __init__(self, store):
        self.store = store

    async def __call__(self, request: Request):
        what = request.query_params["what"]
        if what == "raise":
            raise RuntimeError("boom")
        if what == "json":
            return await request.json()
        if what == "missing_method":
            return await self.store.no_such_method.remote()
        try:
            return await self.store.buy.remote(what)
        except OutOfStock as e:
            # Ray's message carries its own traceback and addresses: only the type is compared.
            return {"caught": type(e).__name__, "is_out_of_stock": isinstance(e, OutOfStock)}


app = Front.bind(Store.bind())
