# starlette Response objects keep their status, headers and media type.
from ray import serve
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response


@serve.deployment
class Responses:
    def __call__(self, request: Request):
        kind = request.query_params["kind"]
        if kind == "created":
            return JSONResponse({"created": True}, status_code=201, headers={"x-app": "yes"})
        if kind == "text":
            return PlainTextResponse("plain", status_code=202)
        if kind == "html":
            return HTMLResponse("<b>hi</b>")
        if kind == "teapot":
            return Response(b"short and stout", status_code=418, media_type="application/x-teapot")
        return Response(status_code=204)


app = Responses.bind()
