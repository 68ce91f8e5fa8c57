"""`python -m photon_worker serve SOCKET`: one replica's user code.

Builds the deployment (imports the application, walks its graph to this deployment, calls the
constructor with handles in place of bound deployments), then serves frames from the Rust
replica: requests (HTTP as ASGI or a plain `__call__`; handle calls as pickled arguments),
cancellations, reconfigure, health checks, shutdown. Async methods run on this process's event
loop, sync ones on a thread pool, as in Ray; the Rust replica admits at most
`max_ongoing_requests` at a time."""

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import pickle
import signal
import sys
import traceback

from photon_worker import asgi, loader, logs, protocol

PICKLE = "application/x-photon-pickle"
OUTCOME = "x-photon-outcome"  # photon_router::wire::OUTCOME


class Runtime:
    """How handle calls leave this process (used by `ray.serve.handle`). A unary call is a
    future the answer frames settle directly; a streaming call is a queue of frames read by an
    async generator."""

    def __init__(self, loop, connection):
        self.loop = loop
        self.connection = connection
        self.answers = {}  # call id -> _UnaryAnswer or asyncio.Queue
        self.next_id = 1

    def unary(self, app, deployment, method, args, kwargs, request_id, model_id):
        """Starts a call (on the loop) and returns the future of its result."""
        from ray.serve.handle import has_responses

        future = self.loop.create_future()
        meta = _call_meta(app, deployment, method, request_id, model_id, False)
        if has_responses(args, kwargs):
            self.loop.create_task(self._resolve_then_open(future, meta, args, kwargs))
        else:
            self._open_unary(future, meta, args, kwargs)
        return future

    async def _resolve_then_open(self, future, meta, args, kwargs):
        from ray.serve.handle import resolve_arguments

        try:
            args, kwargs = await resolve_arguments(args, kwargs)
        except BaseException as e:
            _settle(future, error=e)
            return
        if not future.done():
            self._open_unary(future, meta, args, kwargs)

    def _open_unary(self, future, meta, args, kwargs):
        try:
            body = pickle.dumps((tuple(args), kwargs), protocol=5)
        except BaseException as e:
            _settle(future, error=e)
            return
        call_id = self._send_call(meta, body)
        self.answers[call_id] = _UnaryAnswer(future)
        future.add_done_callback(functools.partial(self._unary_done, call_id))

    def _unary_done(self, call_id, future):
        # Awaited no more (the caller was cancelled) while the call is still out: cancel it.
        if self.answers.pop(call_id, None) is not None:
            self.connection.write(protocol.encode(protocol.HANDLE_CANCEL, call_id))

    def _send_call(self, meta, body):
        call_id = self.next_id
        self.next_id += 1
        self.connection.write(protocol.encode(protocol.HANDLE_CALL, call_id, meta, body))
        return call_id

    def answer(self, kind, call_id, meta, body):
        waiting = self.answers.get(call_id)
        if waiting is None:
            return
        if isinstance(waiting, asyncio.Queue):
            waiting.put_nowait((kind, meta, body))
            return
        if kind == protocol.HANDLE_START:
            waiting.head = (meta["status"], _content_type(meta))
            waiting.body.append(body)
            if not meta.get("end"):
                return
        elif kind == protocol.HANDLE_CHUNK:
            waiting.body.append(body)
            return
        del self.answers[call_id]
        if kind == protocol.HANDLE_END and meta.get("error"):
            _settle(waiting.future, error=_router_error(meta["error"]))
            return
        try:
            _settle(waiting.future, value=_result(waiting.head, b"".join(waiting.body)))
        except BaseException as e:
            _settle(waiting.future, error=e)

    async def stream(self, app, deployment, method, args, kwargs, request_id, model_id):
        """A streaming call: (status, content type) first, then the answer's body chunks."""
        from ray.serve.handle import resolve_arguments

        args, kwargs = await resolve_arguments(args, kwargs)
        body = pickle.dumps((tuple(args), kwargs), protocol=5)
        call_id = self._send_call(_call_meta(app, deployment, method, request_id, model_id, True), body)
        queue = asyncio.Queue()
        self.answers[call_id] = queue
        finished = False
        try:
            while True:
                kind, meta, body = await queue.get()
                if kind == protocol.HANDLE_START:
                    yield (meta["status"], _content_type(meta))
                    if body:
                        yield body
                    if meta.get("end"):
                        finished = True
                        return
                elif kind == protocol.HANDLE_CHUNK:
                    yield body
                else:
                    finished = True
                    if meta.get("error"):
                        raise _router_error(meta["error"])
                    return
        finally:
            self.answers.pop(call_id, None)
            if not finished:
                await self.connection.send(protocol.HANDLE_CANCEL, call_id)

    async def stream_items(self, *call):
        """The raw chunks of a streaming call's answer; a failed answer raises as `_result`."""
        chunks = self.stream(*call)
        head = None
        try:
            async for part in chunks:
                if head is None:
                    head = part
                    continue
                if head[0] != 200:
                    rest = [part] + [p async for p in chunks]
                    _result(head, b"".join(rest))
                yield part
            if head is not None and head[0] != 200:
                _result(head, b"")
        finally:
            await chunks.aclose()


class _UnaryAnswer:
    __slots__ = ("future", "head", "body")

    def __init__(self, future):
        self.future = future
        self.head = None
        self.body = []


def _call_meta(app, deployment, method, request_id, model_id, stream):
    return {
        "app": app,
        "deployment": deployment,
        "method": method,
        "request_id": request_id,
        "model_id": model_id,
        "stream": stream,
    }


def _content_type(meta):
    return dict((k.lower(), v) for k, v in meta.get("headers", [])).get("content-type", "")


def _settle(future, value=None, error=None):
    if future.done():
        return
    if error is None:
        future.set_result(value)
    elif isinstance(error, (StopIteration, StopAsyncIteration)):  # futures refuse these
        future.set_exception(RuntimeError(f"{type(error).__name__}: {error}"))
    else:
        future.set_exception(error)


def _result(head, body):
    status, content_type = head
    if status == 200:
        return pickle.loads(body)
    if content_type == PICKLE:
        raise _as_task_error(pickle.loads(body))
    from ray.serve.exceptions import RayServeException

    raise RayServeException(body.decode("utf-8", "replace") or f"the call answered status {status}")


def _as_task_error(cause):
    """The exception a handle call raised, as Ray raises it: an instance of a class
    `RayTaskError(<its type>)` that is both a `RayTaskError` and the original type, so that
    `except OriginalType` still catches it."""
    from ray.exceptions import RayTaskError

    cls = type(cause)
    if isinstance(cause, RayTaskError):
        return cause
    try:
        task_class = type(
            f"RayTaskError({cls.__name__})",
            (RayTaskError, cls),
            {"__init__": _keep_args, "__str__": lambda self: str(self.cause), "__reduce__": lambda self: (_as_task_error, (self.cause,))},
        )
        error = task_class.__new__(task_class, *cause.args)
        error.args = cause.args
        error.cause = cause
        return error
    except TypeError:  # the two classes cannot be combined
        return cause


def _keep_args(self, *args):
    pass


def _router_error(error):
    from ray.serve import exceptions

    kind, message = error.get("kind", ""), error.get("message", "")
    if kind == "backpressure":
        return exceptions.BackPressureError(message=message)
    if kind == "deployment_unavailable":
        return exceptions.DeploymentUnavailableError(message=message)
    if kind == "replica_failed":
        return exceptions.ActorDiedError(message)
    return exceptions.RayServeException(message)


class Worker:
    def __init__(self, spec, connection):
        self.spec = spec
        self.connection = connection
        self.loop = asyncio.get_running_loop()
        self.calls = {}
        self.receivers = {}
        self.sockets = {}  # call id -> the WebSocket's incoming ASGI messages
        self.instance = None
        self.callable = None
        self.asgi_app = None
        self.lifespan = None
        self.state = {}
        self.grpc_methods = None  # loaded on the first gRPC request
        workers = max(1, int(spec.get("max_ongoing_requests") or 5))
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=min(workers, 64), thread_name_prefix="serve-sync")
        self.loop.set_default_executor(self.executor)

    # -- start ---------------------------------------------------------------------------

    async def build(self):
        from ray.serve import context, handle, multiplex

        spec = self.spec
        app_name, name = spec["app"], spec["deployment"]
        self.runtime = Runtime(self.loop, self.connection)
        handle._set_runtime(self.runtime)
        context._set_replica_context(
            context.ReplicaContext(
                replica_id=context.ReplicaID(spec["replica_id"], context.DeploymentID(name, app_name))
            )
        )
        multiplex._set_publisher(self.publish_models)
        app = loader.load_application(spec["import_path"], spec.get("args") or {})
        graph = loader.Graph(app)
        bound = graph.find(name)
        target = bound._bound_deployment.func_or_class
        args = graph.with_handles(bound._args, app_name)
        kwargs = graph.with_handles(bound._kwargs, app_name)
        if inspect.isclass(target):
            self.instance = target(*args, **kwargs)
            if inspect.isawaitable(self.instance):
                self.instance = await self.instance
            self.callable = getattr(self.instance, "__call__", None)
            asgi_app = getattr(target, "_serve_asgi_app", None)
            if asgi_app is not None:
                from photon_worker.fastapi_views import bind_class_routes

                if callable(asgi_app) and not hasattr(asgi_app, "router") and inspect.isfunction(asgi_app):
                    asgi_app = asgi_app()  # an app builder
                bind_class_routes(asgi_app, target, self.instance)
                self.asgi_app = asgi_app
                await self.start_lifespan()
        else:
            self.instance = None
            self.callable = target
        context._set_replica_context(
            context.ReplicaContext(
                replica_id=context.ReplicaID(spec["replica_id"], context.DeploymentID(name, app_name)),
                servable_object=self.instance,
            )
        )

    def publish_models(self, model_ids):
        frame = protocol.encode(protocol.MODELS, 0, {"model_ids": list(model_ids)})
        self.loop.call_soon_threadsafe(self.connection.write, frame)

    async def start_lifespan(self):
        incoming = asyncio.Queue()
        started = self.loop.create_future()

        async def receive():
            return await incoming.get()

        async def send(message):
            if message["type"] == "lifespan.startup.complete" and not started.done():
                started.set_result(None)
            elif message["type"] == "lifespan.startup.failed" and not started.done():
                started.set_exception(RuntimeError(message.get("message", "lifespan startup failed")))

        async def run():
            try:
                await self.asgi_app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": self.state}, receive, send)
            except BaseException:
                pass  # an app without lifespan support
            finally:
                if not started.done():
                    started.set_result(None)

        incoming.put_nowait({"type": "lifespan.startup"})
        self.lifespan = (incoming, self.loop.create_task(run()))
        await started

    # -- frames --------------------------------------------------------------------------

    def dispatch(self, kind, call_id, meta, body):
        if kind == protocol.REQUEST:
            task = self.loop.create_task(self.request(call_id, meta, body))
            self.calls[call_id] = task
            task.add_done_callback(lambda _: self.calls.pop(call_id, None))
        elif kind == protocol.CANCEL:
            receiver = self.receivers.get(call_id)
            if receiver is not None:
                receiver.disconnected.set()
            task = self.calls.get(call_id)
            if task is not None:
                task.cancel()
        elif kind == protocol.RECONFIGURE:
            self.loop.create_task(self.control(call_id, self.reconfigure, meta.get("user_config")))
        elif kind == protocol.HEALTH:
            self.loop.create_task(self.control(call_id, self.check_health))
        elif kind == protocol.WS_RECEIVE:
            socket = self.sockets.get(call_id)
            if socket is not None:
                message = {"type": "websocket.receive"}
                message["text" if meta.get("text") else "bytes"] = body.decode() if meta.get("text") else body
                socket.put_nowait(message)
        elif kind == protocol.WS_DISCONNECT:
            socket = self.sockets.get(call_id)
            if socket is not None:
                socket.put_nowait({"type": "websocket.disconnect", "code": meta.get("code", 1005)})
        elif kind in (protocol.HANDLE_START, protocol.HANDLE_CHUNK, protocol.HANDLE_END):
            self.runtime.answer(kind, call_id, meta, body)
        elif kind == protocol.SHUTDOWN:
            self.loop.create_task(self.shutdown_and_close(call_id))

    async def shutdown_and_close(self, call_id):
        await self.shutdown()
        await self.connection.send(protocol.CONTROL_DONE, call_id, {})
        await self.connection.close()

    async def control(self, call_id, action, *args):
        try:
            await action(*args)
            meta = {}
        except BaseException as e:
            logs.logger.error("%s", traceback.format_exc().rstrip())
            meta = {"error": _describe(e)}
        await self.connection.send(protocol.CONTROL_DONE, call_id, meta)

    async def call_user(self, func, *args, **kwargs):
        if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
            result = func(*args, **kwargs)
        else:
            run = functools.partial(contextvars.copy_context().run, func, *args, **kwargs)
            result = await self.loop.run_in_executor(self.executor, run)
        if inspect.isawaitable(result) and not inspect.isasyncgen(result):
            result = await result
        return result

    async def reconfigure(self, user_config):
        method = getattr(self.instance, "reconfigure", None)
        if method is None:
            if user_config is not None:
                raise ValueError(
                    "user_config specified but deployment " + self.spec["deployment"] + " missing reconfigure method."
                )
            return
        if user_config is not None:
            await self.call_user(method, user_config)

    async def check_health(self):
        method = getattr(self.instance, "check_health", None)
        if method is not None:
            await self.call_user(method)

    async def shutdown(self):
        if self.lifespan is not None:
            incoming, task = self.lifespan
            incoming.put_nowait({"type": "lifespan.shutdown"})
            try:
                await asyncio.wait_for(task, 5)
            except BaseException:
                pass
        finaliser = getattr(self.instance, "__del__", None)
        if finaliser is not None:
            try:
                await self.call_user(finaliser)
            except BaseException:
                logs.logger.error("__del__ raised:\n%s", traceback.format_exc().rstrip())

    # -- requests ------------------------------------------------------------------------

    async def request(self, call_id, meta, body):
        from ray.serve import context

        token = context._set_request(
            context.RequestContext(
                route=meta.get("route_prefix", ""),
                request_id=meta.get("request_id", ""),
                app_name=self.spec["app"],
                multiplexed_model_id=meta.get("model_id", ""),
            )
        )
        reply = asgi.Reply(self.connection, call_id)
        try:
            if meta.get("kind") == "pickle":
                await self.handle_request(meta, body, reply)
            elif meta.get("kind") == "grpc":
                await self.grpc_request(meta, body, reply)
            elif meta.get("kind") == "websocket":
                await self.websocket_request(call_id, meta, reply)
            else:
                await self.http_request(call_id, meta, body, reply)
        except asyncio.CancelledError:
            if not reply.finished:
                await reply.finish("cancelled")
        except BaseException as e:
            text = traceback.format_exc().rstrip()
            logs.logger.error("Request failed:\n%s", text)
            if meta.get("kind") == "pickle" and not reply.started:
                await reply.begin(500, [("content-type", PICKLE)], _pickle_exception(e, text), end=True)
            elif not reply.finished:
                await reply.finish(text)
        finally:
            context._request.reset(token)
            self.receivers.pop(call_id, None)

    def method(self, name):
        if name in ("__call__", "") or self.instance is None:
            if self.callable is None:
                raise AttributeError(f"Deployment {self.spec['deployment']} has no __call__ method.")
            return self.callable
        method = getattr(self.instance, name, None)
        if method is None or not callable(method):
            raise AttributeError(f"Tried to call a method '{name}' that does not exist.")
        return method

    async def handle_request(self, meta, body, reply):
        from ray.serve.handle import frame_item, resolve_arguments

        args, kwargs = pickle.loads(body)
        args, kwargs = await resolve_arguments(args, kwargs)
        result = await self.call_user(self.method(meta.get("method") or "__call__"), *args, **kwargs)
        streaming = inspect.isasyncgen(result) or inspect.isgenerator(result)
        if meta.get("stream") is False and streaming:
            raise TypeError(
                "Method returned a generator. You must use `handle.options(stream=True)` to call generators on a deployment."
            )
        if not streaming:
            data = pickle.dumps(result, protocol=5)
            await reply.begin(200, [("content-type", PICKLE)], data, end=True)
            return
        await reply.begin(200, [("content-type", PICKLE)])
        await _stream(result, reply, frame_item)

    async def grpc_request(self, meta, body, reply):
        if self.grpc_methods is None:
            from photon_worker import grpc_methods

            self.grpc_methods = grpc_methods.load()
        name = meta.get("method") or "__call__"
        handler = self.grpc_methods.get(name)
        deserialize = getattr(handler, "request_deserializer", None) or (lambda data: data)
        serialize = getattr(handler, "response_serializer", None) or (lambda message: message)
        method = self.method(name)
        kwargs = {}
        context = None
        if "grpc_context" in _parameters(method):
            from ray.serve.grpc_util import RayServegRPCContext

            context = RayServegRPCContext([(k, v) for k, v in meta.get("headers", [])])
            kwargs["grpc_context"] = context
        try:
            result = await self.call_user(method, deserialize(body), **kwargs)
        except Exception:
            if context is None or context.code() is None:
                raise
            # The method set its own status before raising: that status is the answer.
            logs.logger.error("gRPC method raised:\n%s", traceback.format_exc().rstrip())
            await reply.begin(200, context._status_headers(), b"", end=True)
            return
        if not (inspect.isasyncgen(result) or inspect.isgenerator(result)):
            status = context._status_headers() if context is not None else []
            await reply.begin(200, status, serialize(result), end=True)
            return
        await reply.begin(200, [])
        # As in Ray, the status a streaming method sets applies when the stream has ended (also
        # one set after its last message).
        await _stream(result, reply, serialize, context._status_headers if context is not None else None)

    async def websocket_request(self, call_id, meta, reply):
        if self.asgi_app is None:
            raise TypeError(f"Deployment {self.spec['deployment']} has no ASGI app (@serve.ingress) to take WebSockets.")
        incoming = asyncio.Queue()
        incoming.put_nowait({"type": "websocket.connect"})
        self.sockets[call_id] = incoming

        async def send(message):
            kind = message["type"]
            if kind == "websocket.accept":
                headers = list(message.get("headers") or [])
                if message.get("subprotocol"):
                    headers.append((b"sec-websocket-protocol", message["subprotocol"].encode()))
                await reply.begin(101, headers)
            elif kind == "websocket.send":
                if message.get("text") is not None:
                    await reply.message(message["text"].encode(), True)
                else:
                    await reply.message(bytes(message.get("bytes") or b""), False)
            elif kind == "websocket.close":
                if not reply.started:
                    await reply.begin(403, [], b"", end=True)
                elif not reply.finished:
                    await reply.close(message.get("code", 1000), message.get("reason"))

        try:
            await self.asgi_app(asgi.websocket_scope(meta, self.state), incoming.get, send)
        finally:
            self.sockets.pop(call_id, None)
        if not reply.started:  # the app returned without accepting
            await reply.begin(403, [], b"", end=True)
        elif not reply.finished:
            await reply.close(1000)

    async def http_request(self, call_id, meta, body, reply):
        receive = asgi.Receive(body)
        self.receivers[call_id] = receive
        scope = asgi.scope(meta, self.state)
        if self.asgi_app is not None:
            await self.asgi_app(scope, receive, reply)
            if not reply.started:
                raise RuntimeError("the ASGI application returned without a response")
            if not reply.finished:
                await reply.finish()
            return
        from starlette.requests import Request

        method = self.method(meta.get("method") or "__call__")
        if inspect.isgeneratorfunction(method):
            # Ray 2.60 runs a sync generator __call__ to its end and answers what it returns.
            result = await self.call_user(_run_to_end, method, Request(scope, receive))
        else:
            result = await self.call_user(method, Request(scope, receive))
        if inspect.isgenerator(result) or inspect.isasyncgen(result):
            # Over plain HTTP, Ray streams only a StreamingResponse: an (async) generator fails
            # the request outside the user's code.
            text = f"'{method.__name__}' produced a generator; over HTTP, stream with a StreamingResponse."
            logs.logger.error("%s", text)
            await reply.begin(500, [(OUTCOME, "failed")], text.encode(), end=True)
            return
        await asgi.convert(result, reply, scope, receive)


def _parameters(func):
    try:
        return inspect.signature(func).parameters
    except (TypeError, ValueError):
        return {}


def _run_to_end(generator_function, *args):
    generator = generator_function(*args)
    while True:
        try:
            next(generator)
        except StopIteration as stop:
            return stop.value


_DONE = object()


async def _stream(generator, reply, encode, grpc_status=None):
    """Sends each item a (sync or async) generator yields as one chunk, then ends the reply (with
    the gRPC status `grpc_status()` returns then, when given)."""
    if inspect.isasyncgen(generator):
        async for item in generator:
            await reply.chunk(encode(item))
    else:
        for step in _iterate_off_loop(generator):
            item = await step
            if item is _DONE:
                break
            await reply.chunk(encode(item))
    await reply.finish(grpc_status=grpc_status() if grpc_status else None)


def _iterate_off_loop(generator):
    """A sync generator's items, each produced on a worker thread."""
    loop = asyncio.get_running_loop()

    def step():
        try:
            return next(generator)
        except StopIteration:
            return _DONE

    while True:
        yield loop.run_in_executor(None, step)


def _describe(e):
    return f"{type(e).__name__}: {e}"


def _pickle_exception(e, text):
    try:
        data = pickle.dumps(e, protocol=5)
        pickle.loads(data)
        return data
    except BaseException:
        from ray.serve.exceptions import RayServeException

        return pickle.dumps(RayServeException(text), protocol=5)


async def serve(socket_path, spec):
    loop = asyncio.get_running_loop()
    _, connection = await loop.create_unix_connection(protocol.Connection, socket_path)
    worker = Worker(spec, connection)
    try:
        await worker.build()
    except BaseException:
        text = traceback.format_exc().rstrip()
        logs.logger.error("%s", text)
        await connection.send(protocol.READY, 0, {"error": text})
        await connection.close()
        return 1
    await connection.send(protocol.READY, 0, {})
    connection.start(worker.dispatch)
    # Ends when the replica asks for a shutdown (the worker closes the socket after it) or
    # when the replica is gone.
    await connection.closed
    return 0


def main(socket_path, spec):
    # The Rust replica owns this process's life (it ends with the socket): signals sent to
    # the whole process group (Ctrl-C) must not skip the graceful shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    loader.install_import_hook()
    loader.add_code_paths(spec)
    logs.setup(spec)
    sys.exit(_run(serve(socket_path, spec)))


def _run(main):
    """Runs the worker on uvloop's event loop when the environment has it, as Ray's replicas
    do (a Ray Serve install brings it), else on asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    if sys.version_info >= (3, 11):
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return asyncio.run(main)
