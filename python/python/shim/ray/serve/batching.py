"""`@serve.batch`: callers pass one item each; the decorated function gets a list of them.

A batch starts with its first item and closes at `max_batch_size` items or
`batch_wait_timeout_s` after that first item, whichever is first; up to
`max_concurrent_batches` run at once. Items of different multiplexed models go in different
sub-batches. An async generator yields one list per step, one element per caller.
"""

import asyncio
import functools
import inspect

from ray.serve import context as _context


def _validate(max_batch_size, batch_wait_timeout_s, max_concurrent_batches):
    if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 1:
        raise ValueError(f"max_batch_size must be an integer >= 1, got {max_batch_size}")
    if not isinstance(batch_wait_timeout_s, (int, float)) or batch_wait_timeout_s < 0:
        raise ValueError(f"batch_wait_timeout_s must be a float >= 0, got {batch_wait_timeout_s}")
    if not isinstance(max_concurrent_batches, int) or max_concurrent_batches < 1:
        raise ValueError(f"max_concurrent_batches must be an integer >= 1, got {max_concurrent_batches}")


class _Item:
    __slots__ = ("owner", "value", "future", "queue", "model_id")

    def __init__(self, owner, value, streaming, model_id):
        loop = asyncio.get_running_loop()
        self.owner = owner
        self.value = value
        self.model_id = model_id
        self.future = None if streaming else loop.create_future()
        self.queue = asyncio.Queue() if streaming else None


_END = object()


class _BatchQueue:
    def __init__(self, func, max_batch_size, batch_wait_timeout_s, max_concurrent_batches, batch_size_fn):
        self.func = func
        self.max_batch_size = max_batch_size
        self.batch_wait_timeout_s = batch_wait_timeout_s
        self.batch_size_fn = batch_size_fn
        self.streaming = inspect.isasyncgenfunction(func)
        self.items = asyncio.Queue()
        self.semaphore = asyncio.Semaphore(max_concurrent_batches)
        self.task = asyncio.get_running_loop().create_task(self._run())

    def _size(self, batch):
        return self.batch_size_fn([i.value for i in batch]) if self.batch_size_fn else len(batch)

    async def _collect(self):
        loop = asyncio.get_running_loop()
        batch = [await self.items.get()]
        deadline = loop.time() + self.batch_wait_timeout_s
        while self._size(batch) < self.max_batch_size:
            remaining = deadline - loop.time()
            try:
                item = self.items.get_nowait() if remaining <= 0 else await asyncio.wait_for(self.items.get(), remaining)
            except (asyncio.TimeoutError, asyncio.QueueEmpty):
                break
            batch.append(item)
            if self.batch_size_fn and self._size(batch) > self.max_batch_size:
                batch.pop()
                self.items.put_nowait(item)  # goes to the next batch
                break
        return [i for i in batch if i.future is None or not i.future.cancelled()]

    async def _run(self):
        while True:
            batch = await self._collect()
            if not batch:
                continue
            await self.semaphore.acquire()
            groups = {}
            for item in batch:
                groups.setdefault(item.model_id, []).append(item)
            tasks = [asyncio.ensure_future(self._execute(group)) for group in groups.values()]
            asyncio.ensure_future(self._release_after(tasks))

    async def _release_after(self, tasks):
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.semaphore.release()

    async def _execute(self, batch):
        values = [i.value for i in batch]
        owner = batch[0].owner
        args = (owner, values) if owner is not None else (values,)
        try:
            if self.streaming:
                async for results in self.func(*args):
                    self._check_size(results, batch)
                    for item, result in zip(batch, results):
                        if result is not StopIteration:
                            item.queue.put_nowait(result)
                for item in batch:
                    item.queue.put_nowait(_END)
                return
            results = await self.func(*args) if inspect.iscoroutinefunction(self.func) else self.func(*args)
            self._check_size(results, batch)
            for item, result in zip(batch, results):
                if not item.future.done():
                    item.future.set_result(result)
        except Exception as e:  # every caller in the batch gets it
            for item in batch:
                if self.streaming:
                    item.queue.put_nowait(e)
                elif not item.future.done():
                    item.future.set_exception(e)

    @staticmethod
    def _check_size(results, batch):
        if not isinstance(results, (list, tuple)) or len(results) != len(batch):
            size = len(results) if hasattr(results, "__len__") else "?"
            raise TypeError(
                f"Batched function doesn't preserve batch size. The input list has length {len(batch)} "
                f"but the returned list has length {size}."
            )


def batch(_func=None, *, max_batch_size=10, batch_wait_timeout_s=0.01, max_concurrent_batches=1, batch_size_fn=None):
    """`@serve.batch` and `@serve.batch(max_batch_size=..., ...)`."""
    if _func is not None and not callable(_func):
        raise TypeError("@serve.batch can only be used to decorate functions or methods.")
    _validate(max_batch_size, batch_wait_timeout_s, max_concurrent_batches)

    def decorate(func):
        if not (inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)):
            raise TypeError("Functions decorated with @serve.batch must be 'async def'")
        settings = {"max_batch_size": max_batch_size, "batch_wait_timeout_s": batch_wait_timeout_s}
        queues = {}  # one per event loop

        def queue():
            loop = asyncio.get_running_loop()
            q = queues.get(loop)
            if q is None:
                q = queues[loop] = _BatchQueue(
                    func, settings["max_batch_size"], settings["batch_wait_timeout_s"], max_concurrent_batches, batch_size_fn
                )
            q.max_batch_size = settings["max_batch_size"]
            q.batch_wait_timeout_s = settings["batch_wait_timeout_s"]
            return q

        def split(args):
            if len(args) == 2:
                return args[0], args[1]
            if len(args) == 1:
                return None, args[0]
            raise TypeError("@serve.batch functions take exactly one item per call")

        if inspect.isasyncgenfunction(func):

            @functools.wraps(func)
            async def stream_wrapper(*args, **kwargs):
                owner, value = split(args + tuple(kwargs.values()))
                item = _Item(owner, value, True, _context._get_request().multiplexed_model_id)
                queue().items.put_nowait(item)
                while True:
                    result = await item.queue.get()
                    if result is _END:
                        return
                    if isinstance(result, Exception):
                        raise result
                    yield result

            wrapper = stream_wrapper
        else:

            @functools.wraps(func)
            async def wrapper(*args, **kwargs):
                owner, value = split(args + tuple(kwargs.values()))
                item = _Item(owner, value, False, _context._get_request().multiplexed_model_id)
                queue().items.put_nowait(item)
                return await item.future

        def set_max_batch_size(n):
            _validate(n, settings["batch_wait_timeout_s"], max_concurrent_batches)
            settings["max_batch_size"] = n

        def set_batch_wait_timeout_s(t):
            _validate(settings["max_batch_size"], t, max_concurrent_batches)
            settings["batch_wait_timeout_s"] = t

        wrapper.set_max_batch_size = set_max_batch_size
        wrapper.set_batch_wait_timeout_s = set_batch_wait_timeout_s
        wrapper._get_curr_max_batch_size = lambda: settings["max_batch_size"]
        wrapper._get_curr_batch_wait_timeout_s = lambda: settings["batch_wait_timeout_s"]
        return wrapper

    return decorate(_func) if _func is not None else decorate
