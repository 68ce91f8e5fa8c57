"""The processes that run Ray Core remote functions for Photon's minimal `ray`. They live
here, not in the `ray` shim, because a fresh task process must find them before the import
hook that makes `ray` importable is installed."""

import asyncio
import importlib
import inspect
import os
import sys
import threading
import time


def start_process(path, parent):
    """A task process imports the user's modules as the replica does (their `ray` is Photon's),
    and ends when the worker that started it is gone (a killed worker runs no cleanup)."""
    sys.path[:] = path
    from photon_worker import loader

    loader.install_import_hook()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent):
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def run_by_name(module, qualname, args, kwargs):
    """Calls the remote function `module.qualname` (unwrapped from its `@ray.remote`)."""
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    result = getattr(target, "_func", target)(*args, **kwargs)
    if inspect.iscoroutine(result):
        return asyncio.run(result)
    return result
