# The starlette Request a plain __call__ receives.
from ray import serve
from starlette.requests import Request


@serve.deployment
class RequestFields:
    async def __call__(self, request: Request):
        body = await request.body()
        return {
            "method": request.method,
            "path": request.url.path,
            "root_path": request.scope.get("root_path"),
            "query": dict(request.query_params),
            "header": request.headers.get("x-custom"),
            "content_type": request.headers.get("content-type"),
            "body": body.decode(),
            "json": (await request.json()) if body and request.headers.get("content-type") == "application/json" else None,
        }


app = RequestFields.bind()
