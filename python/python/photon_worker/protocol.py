"""Frames between the Rust replica and this worker, on one Unix socket, and the worker's end
of that socket.

A frame is `u32 length` (of what follows), `u8 kind`, `u64 id`, `u32 meta length`, the meta
(UTF-8 JSON, possibly empty) and the body (raw bytes). Ids name a call: the replica numbers the
requests it sends, the worker numbers the handle calls it makes.
"""

import asyncio
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
REPLY_END = 23  # meta: {}, {"error": traceback}, {"grpc_status": [[k, v]]} or a WebSocket's {"code", "reason"}
CONTROL_DONE = 24  # answer to RECONFIGURE / HEALTH: meta {} or {"error": message}
HANDLE_CALL = 25  # meta: {"app", "deployment", "method", "request_id", "model_id"}; body: args
HANDLE_CANCEL = 26
MODELS = 27  # meta: {"model_ids": [...]}, the multiplexed models held or loading


def encode(kind, call_id, meta=None, body=b""):
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode() if meta is not None else b""
    length = HEADER.size - 4 + len(meta_bytes) + len(body)
    return HEADER.pack(length, kind, call_id, len(meta_bytes)) + meta_bytes + body


class Connection(asyncio.Protocol):
    """The worker's end of the socket.

    Frames are handed to the receiver as they arrive, in the event loop turn that read them
    (`start` names the receiver; frames that came before are held until then). Frames written
    in one turn of the loop go out in one write: one system call for many replies under load.
    After a read, that write is scheduled behind the tasks the frames started, so that a reply
    which needs no waiting leaves in the very next turn."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.transport = None
        self.receiver = None
        self.held = []
        self.buffer = bytearray()
        self.pending = []
        self.pending_bytes = 0
        self.flush_scheduled = False
        self.writable = None  # a future while the socket's buffer is over its high-water mark
        self.closed = self.loop.create_future()

    def start(self, receiver):
        """From now on, `receiver(kind, id, meta, body)` gets every frame."""
        self.receiver = receiver
        held, self.held = self.held, []
        for frame in held:
            receiver(*frame)
        self._schedule_flush()

    # -- reading -------------------------------------------------------------------------

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.buffer += data
        offset, size = 0, len(self.buffer)
        while size - offset >= HEADER.size:
            length, kind, call_id, meta_len = HEADER.unpack_from(self.buffer, offset)
            end = offset + 4 + length
            if end > size:
                break
            meta_start = offset + HEADER.size
            meta = json.loads(self.buffer[meta_start : meta_start + meta_len]) if meta_len else {}
            body = bytes(self.buffer[meta_start + meta_len : end])
            offset = end
            if self.receiver is None:
                self.held.append((kind, call_id, meta, body))
            else:
                self.receiver(kind, call_id, meta, body)
        del self.buffer[:offset]
        self._schedule_flush()

    def eof_received(self):
        return False  # close

    def connection_lost(self, exc):
        if not self.closed.done():
            self.closed.set_result(None)
        self.resume_writing()

    # -- writing -------------------------------------------------------------------------

    def pause_writing(self):
        if self.writable is None:
            self.writable = self.loop.create_future()

    def resume_writing(self):
        if self.writable is not None:
            if not self.writable.done():
                self.writable.set_result(None)
            self.writable = None

    def write(self, frame):
        self.pending.append(frame)
        self.pending_bytes += len(frame)
        self._schedule_flush()

    def _schedule_flush(self):
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self):
        self.flush_scheduled = False
        if self.pending and not self.transport.is_closing():
            data = b"".join(self.pending)
            self.pending.clear()
            self.pending_bytes = 0
            self.transport.write(data)

    async def flush(self):
        """Everything written so far handed to the socket (waiting while its buffer is full)."""
        self._flush()
        while self.writable is not None:
            await self.writable

    async def send(self, kind, call_id, meta=None, body=b""):
        self.write(encode(kind, call_id, meta, body))
        # A stream that never yields to the loop must not pile up replies in memory.
        if self.pending_bytes + self.transport.get_write_buffer_size() > 1 << 20:
            await self.flush()

    async def close(self):
        """Sends what is written, then closes the socket."""
        self._flush()
        self.transport.close()
        await self.closed
