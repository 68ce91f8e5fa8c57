"""Requests as ASGI sees them, and replies as the replica sends them.

`scope` builds the ASGI scope Ray's proxy gives an application (`root_path` is the route
prefix, `path` the full path); `Reply` is an ASGI `send` that turns the response messages into
reply frames; `convert` turns what a plain `__call__` returned into a response the way Ray
converts it (str, bytes, None, JSON, starlette responses)."""

import asyncio
import json
import sys
import urllib.parse

from photon_worker import protocol


def scope(meta, state=None):
    # The path as it came; the application sees it percent-decoded, as uvicorn gives it to Ray.
    raw_path = meta.get("path") or "/"
    path = urllib.parse.unquote(raw_path)
    prefix = meta.get("route_prefix") or ""
    if prefix == "/":
        prefix = ""
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1", "replace")) for k, v in meta.get("headers", [])]
    host = next((v.decode("latin-1") for k, v in headers if k == b"host"), "localhost")
    server_host, _, server_port = host.partition(":")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": meta.get("http_method") or "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw_path.encode("latin-1", "replace"),
        "query_string": (meta.get("query") or "").encode("latin-1"),
        "root_path": prefix,
        "headers": headers,
        "client": None,
        "server": (server_host or "localhost", int(server_port) if server_port.isdigit() else 80),
        "state": dict(state or {}),
    }


def websocket_scope(meta, state=None):
    """The ASGI scope of a WebSocket handshake."""
    ws = scope(meta, state)
    ws["type"] = "websocket"
    ws["scheme"] = "ws"
    ws.pop("method")
    offered = next((v.decode("latin-1") for k, v in ws["headers"] if k == b"sec-websocket-protocol"), "")
    ws["subprotocols"] = [p.strip() for p in offered.split(",") if p.strip()]
    return ws


class Receive:
    """ASGI `receive`: the whole body once, then `http.disconnect` when the call is cancelled."""

    def __init__(self, body):
        self.body = body
        self.sent = False
        self.disconnected = asyncio.Event()

    async def __call__(self):
        if not self.sent:
            self.sent = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        await self.disconnected.wait()
        return {"type": "http.disconnect"}


class Reply:
    """ASGI `send` for one request: `http.response.start` is held until the first body message,
    so that a whole response is one frame."""

    def __init__(self, connection, call_id):
        self.connection = connection
        self.call_id = call_id
        self.start = None
        self.started = False
        self.finished = False

    async def __call__(self, message):
        kind = message["type"]
        if kind == "http.response.start":
            self.start = message
        elif kind == "http.response.body":
            body = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            if not self.started:
                await self.begin(self.start["status"], self.start.get("headers", []), body, end=not more)
            elif body:
                await self.connection.send(protocol.REPLY_CHUNK, self.call_id, None, body)
            if not more and not self.finished:
                await self.finish()
        elif kind == "http.response.trailers":
            pass

    async def begin(self, status, headers, body=b"", end=False):
        pairs = [[_text(k), _text(v)] for k, v in headers]
        self.started = True
        meta = {"status": int(status), "headers": pairs, "end": end}
        self.finished = end
        await self.connection.send(protocol.REPLY_START, self.call_id, meta, body)

    async def chunk(self, body):
        if body:
            await self.connection.send(protocol.REPLY_CHUNK, self.call_id, None, body)

    async def message(self, body, text):
        """One WebSocket message."""
        await self.connection.send(protocol.REPLY_CHUNK, self.call_id, {"text": text}, body)

    async def close(self, code=1000, reason=""):
        """Closes the WebSocket."""
        self.finished = True
        await self.connection.send(protocol.REPLY_END, self.call_id, {"code": code, "reason": reason or ""})

    async def finish(self, error=None, grpc_status=None):
        """Ends the reply: with the error the code raised, or with the gRPC status (header pairs)
        a streaming method set."""
        self.finished = True
        meta = {"error": error} if error else {}
        if grpc_status:
            meta["grpc_status"] = [[_text(k), _text(v)] for k, v in grpc_status]
        await self.connection.send(protocol.REPLY_END, self.call_id, meta)


def _text(v):
    return v.decode("latin-1") if isinstance(v, (bytes, bytearray)) else str(v)


TEXT = "text/plain; charset=utf-8"


def json_bytes(value):
    """Ray's JSON for handler results: compact, non-ASCII escaped, pydantic models as dicts."""
    return json.dumps(value, separators=(",", ":"), default=_jsonable).encode()


def _jsonable(value):
    for attr in ("model_dump", "dict"):
        method = getattr(value, attr, None)
        if callable(method):
            return method()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def is_response(value):
    """A starlette (or FastAPI) `Response`: it sends itself."""
    responses = sys.modules.get("starlette.responses")
    return responses is not None and isinstance(value, responses.Response)


async def convert(result, reply, asgi_scope, receive):
    """Sends what a plain handler returned, converted as Ray converts it."""
    if is_response(result):
        await result(asgi_scope, receive, reply)
        if not reply.finished:
            await reply.finish()
        return
    if isinstance(result, str):
        body, content_type = result.encode(), TEXT
    elif isinstance(result, (bytes, bytearray)):
        body, content_type = bytes(result), "text/plain"
    elif result is None:
        body, content_type = b"", "text/plain"
    else:
        body, content_type = json_bytes(result), "application/json"
    await reply.begin(200, [("content-type", content_type), ("content-length", str(len(body)))], body, end=True)
