"""Frames between the Rust replica and this worker, on one Unix socket.

A frame is `u32 length` (of what follows), `u8 kind`, `u64 id`, `u32 meta length`, the meta
(UTF-8 JSON, possibly empty) and the body (raw bytes). Ids name a call: the replica numbers the
requests it sends, the worker numbers the handle calls it makes.
"""

import json
import struct

HEADER = struct.Struct("<IBQI")

# replica -> worker
REQUEST = 1  # meta: the request head; body: the request body
CANCEL = 2  # the caller went away
RECONFIGURE = 3  # meta: {"user_config": ...}
HEALTH = 4
SHUTDOWN = 5
HANDLE_START = 6  # answer to a handle call: meta {"status", "headers", "end"?}, body: first bytes
HANDLE_CHUNK = 7
HANDLE_END = 8  # meta: {} or {"error": {"kind", "message"}}
WS_RECEIVE = 9  # a WebSocket message from the client: meta {"text": bool}, body: its bytes
WS_DISCONNECT = 10  # the client closed the WebSocket: meta {"code"}
# worker -> replica
READY = 20  # meta: {} or {"error": traceback}
REPLY_START = 21  # meta: {"status", "headers", "end"}; body: first bytes
REPLY_CHUNK = 22  # meta: none, or {"text": bool} for a WebSocket message
REPLY_END = 23  # meta: {} or {"error": traceback}, or {"code", "reason"} closing a WebSocket
CONTROL_DONE = 24  # answer to RECONFIGURE / HEALTH: meta {} or {"error": message}
HANDLE_CALL = 25  # meta: {"app", "deployment", "method", "request_id", "model_id"}; body: args
HANDLE_CANCEL = 26
MODELS = 27  # meta: {"model_ids": [...]}, the multiplexed models held or loading


def encode(kind, call_id, meta=None, body=b""):
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode() if meta is not None else b""
    length = HEADER.size - 4 + len(meta_bytes) + len(body)
    return HEADER.pack(length, kind, call_id, len(meta_bytes)) + meta_bytes + body


async def read_frame(reader):
    """The next frame as (kind, id, meta, body); None at the end of the stream."""
    try:
        head = await reader.readexactly(HEADER.size)
    except Exception:
        return None
    length, kind, call_id, meta_len = HEADER.unpack(head)
    rest = await reader.readexactly(length - (HEADER.size - 4))
    meta = json.loads(rest[:meta_len]) if meta_len else {}
    return kind, call_id, meta, rest[meta_len:]
