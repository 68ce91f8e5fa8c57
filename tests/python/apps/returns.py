# What a plain __call__ may return, and how each value reaches the client.
from ray import serve
from starlette.requests import Request

VALUES = {
    "str": "hello",
    "unicode": "héllo ☃",
    "bytes": b"raw bytes",
    "none": None,
    "int": 42,
    "float": 6.0,
    "dict": {"a": 1, "b": [1.5, "x", None, True], "ü": "ñ"},
    "list": [1, 2, 3],
}


@serve.deployment
class Returns:
    def __call__(self, request: Request):
        return VALUES[request.query_params["kind"]]


app = Returns.bind()
