"""Photon's minimal `ray`, used only where Ray itself is not installed: `ray.serve` and a local
stand-in for the Ray Core calls Serve applications make (`@ray.remote`, `ray.get`, `ray.put`,
`ray.wait`). Remote functions run in a pool of processes on this machine (those that cannot be
imported by name, such as nested ones, on a thread pool); actors are local objects whose method
calls run one at a time on a thread of their own."""

import asyncio
import concurrent.futures
import functools
import inspect
import multiprocessing
import os
import sys
import time

__version__ = "2.60.0"

from ray import exceptions  # noqa: E402

# Resolves a task's arguments and waits for its process; runs tasks that have no importable name.
_tasks = concurrent.futures.ThreadPoolExecutor(max_workers=max(4, os.cpu_count() or 1), thread_name_prefix="ray-task")
_processes = None
_initialized = False


def _process_pool():
    global _processes
    if _processes is None:
        from photon_worker import tasks

        _processes = concurrent.futures.ProcessPoolExecutor(
            max_workers=max(2, os.cpu_count() or 1),
            # A fresh interpreter, not a fork of this multi-threaded one.
            mp_context=multiprocessing.get_context("spawn"),
            initializer=tasks.start_process,
            initargs=(list(sys.path), os.getpid()),
        )
    return _processes


def init(*_args, **_kwargs):
    global _initialized
    _initialized = True


def is_initialized():
    return _initialized


def shutdown():
    global _initialized
    _initialized = False


class ObjectRef:
    """The result of a `.remote()` call or of `ray.put`."""

    def __init__(self, future):
        self._future = future

    def __await__(self):
        return asyncio.wrap_future(self._future).__await__()

    def future(self):
        return self._future

    def __repr__(self):
        return f"ObjectRef({id(self._future):x})"


def _done(value):
    future = concurrent.futures.Future()
    future.set_result(value)
    return future


def put(value):
    return ObjectRef(_done(value))


def _resolve(value):
    return value._future.result() if isinstance(value, ObjectRef) else value


def _submit(executor, func, args, kwargs):
    def run():
        a = [_resolve(x) for x in args]
        k = {n: _resolve(v) for n, v in kwargs.items()}
        result = func(*a, **k)
        if inspect.iscoroutine(result):
            return asyncio.run(result)
        return result

    return ObjectRef(executor.submit(run))


def get(refs, *, timeout=None):
    if isinstance(refs, (list, tuple)):
        deadline = None if timeout is None else time.monotonic() + timeout
        out = []
        for r in refs:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            out.append(get(r, timeout=left))
        return out
    if not isinstance(refs, ObjectRef):
        raise TypeError(f"ray.get() expects an ObjectRef or a list of them, got {type(refs).__name__}")
    try:
        return refs._future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        raise exceptions.GetTimeoutError("Get timed out: some object(s) not ready.") from None


def wait(refs, *, num_returns=1, timeout=None, fetch_local=True):
    refs = list(refs)
    if num_returns > len(refs):
        raise ValueError("num_returns cannot be greater than the number of objects")
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        ready = [r for r in refs if r._future.done()]
        if len(ready) >= num_returns or (deadline is not None and time.monotonic() >= deadline):
            ready = ready[:num_returns]
            return ready, [r for r in refs if r not in ready]
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        concurrent.futures.wait(
            [r._future for r in refs if not r._future.done()],
            timeout=left,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )


class RemoteFunction:
    def __init__(self, func, options):
        self._func = func
        self._options = options
        functools.update_wrapper(self, func)

    def remote(self, *args, **kwargs):
        module, qualname = self._func.__module__, self._func.__qualname__
        if module == "__main__" or "<locals>" in qualname:
            return _submit(_tasks, self._func, args, kwargs)

        def in_a_process(*resolved, **resolved_kwargs):
            from photon_worker import tasks

            return _process_pool().submit(tasks.run_by_name, module, qualname, resolved, resolved_kwargs).result()

        return _submit(_tasks, in_a_process, args, kwargs)

    def options(self, **options):
        return RemoteFunction(self._func, {**self._options, **options})

    def __call__(self, *args, **kwargs):
        raise TypeError(f"Remote functions cannot be called directly. Use {self._func.__name__}.remote().")


class _ActorMethod:
    def __init__(self, actor, name):
        self._actor = actor
        self._name = name

    def remote(self, *args, **kwargs):
        return _submit(self._actor._executor, getattr(self._actor._instance, self._name), args, kwargs)


class ActorHandle:
    def __init__(self, cls, args, kwargs):
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ray-actor-{cls.__name__}")
        a = [_resolve(x) for x in args]
        k = {n: _resolve(v) for n, v in kwargs.items()}
        self._instance = self._executor.submit(cls, *a, **k).result()

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if not callable(getattr(self._instance, name, None)):
            raise AttributeError(f"actor has no method {name!r}")
        return _ActorMethod(self, name)


class ActorClass:
    def __init__(self, cls, options):
        self._cls = cls
        self._options = options

    def remote(self, *args, **kwargs):
        return ActorHandle(self._cls, args, kwargs)

    def options(self, **options):
        return ActorClass(self._cls, {**self._options, **options})


def remote(*args, **options):
    """`@ray.remote` and `@ray.remote(num_cpus=..., ...)` on functions and classes."""

    def make(target):
        return ActorClass(target, options) if inspect.isclass(target) else RemoteFunction(target, options)

    if len(args) == 1 and not options and callable(args[0]):
        return make(args[0])
    return make


def kill(actor, *, no_restart=True):
    actor._executor.shutdown(wait=False)
