"""`DeploymentHandle` and the responses of its calls.

A call leaves this process: the worker hands it to the Rust replica's router (queues,
`max_ongoing_requests`, power of two choices, retries), which sends it to a replica of the
target deployment. Arguments and results travel pickled; a `DeploymentResponse` passed as an
argument is awaited first and its result passed instead, as in Ray.
"""

import asyncio
import concurrent.futures
import functools
import pickle
import struct

from ray.serve import context as _context
from ray.serve.exceptions import RayServeException

_runtime = None  # set by the worker: how calls leave this process


def _set_runtime(runtime):
    global _runtime
    _runtime = runtime


def _require_runtime():
    if _runtime is None:
        raise RayServeException("Deployment handles can only be used inside a running Photon replica.")
    return _runtime


def _on_loop(loop):
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


async def _resolve(value):
    if isinstance(value, DeploymentResponse):
        return await value
    return value


class DeploymentHandle:
    """Calls a deployment: `handle.remote(...)`, `handle.method.remote(...)`."""

    def __init__(self, deployment_name, app_name=None, *, _method_name="__call__", _stream=False, _model_id=""):
        self.deployment_name = deployment_name
        self.app_name = app_name
        self._method_name = _method_name
        self._stream = _stream
        self._model_id = _model_id

    def options(self, *, method_name=None, stream=None, multiplexed_model_id=None, **_ignored):
        return DeploymentHandle(
            self.deployment_name,
            self.app_name,
            _method_name=method_name if method_name is not None else self._method_name,
            _stream=stream if stream is not None else self._stream,
            _model_id=multiplexed_model_id if multiplexed_model_id is not None else self._model_id,
        )

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self.options(method_name=name)

    def __reduce__(self):
        return (
            _rebuild_handle,
            (self.deployment_name, self.app_name, self._method_name, self._stream, self._model_id),
        )

    def __repr__(self):
        return f"DeploymentHandle(deployment='{self.deployment_name}')"

    def remote(self, *args, **kwargs):
        runtime = _require_runtime()
        app = self.app_name or _context.get_replica_context().app_name
        request = _context._get_request()
        call = (app, self.deployment_name, self._method_name, args, kwargs, request.request_id, self._model_id or "")
        if self._stream:
            return DeploymentResponseGenerator(runtime, runtime.stream_items(*call))
        return DeploymentResponse(runtime, functools.partial(runtime.unary, *call))


def _rebuild_handle(name, app, method, stream, model_id):
    return DeploymentHandle(name, app, _method_name=method, _stream=stream, _model_id=model_id)


class DeploymentResponse:
    """The future result of a handle call: `await` it, or `.result()` from a thread. The call
    leaves at once, whether or not anyone waits for it, as in Ray."""

    def __init__(self, runtime, start):
        self._runtime = runtime
        if _on_loop(runtime.loop):
            self._future = start()
        else:
            self._future = asyncio.run_coroutine_threadsafe(_started(start), runtime.loop)

    def __await__(self):
        if isinstance(self._future, concurrent.futures.Future):
            return asyncio.wrap_future(self._future).__await__()
        return self._future.__await__()

    def result(self, *, timeout_s=None, _skip_asyncio_check=False):
        if _on_loop(self._runtime.loop) and not _skip_asyncio_check:
            raise RuntimeError(
                "Sync methods should not be called from within an `asyncio` event loop. "
                "Use `await response` instead."
            )
        if isinstance(self._future, concurrent.futures.Future):
            try:
                return self._future.result(timeout=timeout_s)
            except concurrent.futures.TimeoutError:
                raise TimeoutError("Timed out waiting for result.") from None
        return asyncio.run_coroutine_threadsafe(_await_task(self._future), self._runtime.loop).result(timeout_s)

    def cancel(self):
        self._future.cancel()

    def cancelled(self):
        return self._future.cancelled()


async def _await_task(task):
    return await task


async def _started(start):
    return await start()


class DeploymentResponseGenerator:
    """The results of a streaming handle call (`.options(stream=True)`), one per `yield`."""

    def __init__(self, runtime, coroutine):
        self._runtime = runtime
        self._queue = None
        self._items = _ChunkReader()
        self._done = False
        self._chunks = coroutine  # an async generator of raw chunks

    def __aiter__(self):
        return self

    async def __anext__(self):
        while True:
            item = self._items.next_item()
            if item is not _NOTHING:
                return pickle.loads(item)
            if self._done:
                raise StopAsyncIteration
            try:
                chunk = await self._chunks.__anext__()
            except StopAsyncIteration:
                self._done = True
                if self._items.pending():
                    raise RayServeException("stream ended inside an item") from None
                continue
            self._items.feed(chunk)

    def __iter__(self):
        return self

    def __next__(self):
        if _on_loop(self._runtime.loop):
            raise RuntimeError("Sync iteration is not allowed inside an `asyncio` event loop; use `async for`.")
        try:
            return asyncio.run_coroutine_threadsafe(self.__anext__(), self._runtime.loop).result()
        except StopAsyncIteration:
            raise StopIteration from None

    def cancel(self):
        closer = self._chunks.aclose()
        if _on_loop(self._runtime.loop):
            self._runtime.loop.create_task(closer)
        else:
            asyncio.run_coroutine_threadsafe(closer, self._runtime.loop)


_NOTHING = object()
_LENGTH = struct.Struct("<I")


class _ChunkReader:
    """Splits a byte stream of `u32 length + pickle` items."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, chunk):
        self._buffer += chunk

    def pending(self):
        return len(self._buffer) > 0

    def next_item(self):
        if len(self._buffer) < 4:
            return _NOTHING
        (length,) = _LENGTH.unpack_from(self._buffer)
        if len(self._buffer) < 4 + length:
            return _NOTHING
        item = bytes(self._buffer[4 : 4 + length])
        del self._buffer[: 4 + length]
        return item


def frame_item(value):
    """One streamed item as the receiving `_ChunkReader` reads it."""
    data = pickle.dumps(value, protocol=5)
    return _LENGTH.pack(len(data)) + data


def has_responses(args, kwargs):
    """Whether a call's arguments hold `DeploymentResponse`s to await first."""
    return any(isinstance(a, DeploymentResponse) for a in args) or any(
        isinstance(v, DeploymentResponse) for v in kwargs.values()
    )


async def resolve_arguments(args, kwargs):
    """Awaits the `DeploymentResponse`s among a call's arguments."""
    args = [await _resolve(a) for a in args]
    kwargs = {k: await _resolve(v) for k, v in kwargs.items()}
    return args, kwargs
