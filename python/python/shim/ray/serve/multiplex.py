"""`@serve.multiplexed`: a per-replica LRU cache of models loaded by an async loader, keyed by
the request's multiplexed model id (`serve_multiplexed_model_id` header, or
`handle.options(multiplexed_model_id=...)`)."""

import asyncio
import collections
import functools
import inspect

from ray.serve import context as _context


def get_multiplexed_model_id():
    """The model id of the request being served ('' when it has none)."""
    return _context._get_request().multiplexed_model_id


class _ModelCache:
    def __init__(self, loader, capacity):
        self.loader = loader
        self.capacity = capacity
        self.models = collections.OrderedDict()
        self.lock = asyncio.Lock()

    async def get(self, owner, model_id):
        if not isinstance(model_id, str) or not model_id:
            raise TypeError(f"The model ID must be a non-empty string, got {model_id!r}.")
        if model_id in self.models:
            self.models.move_to_end(model_id)
            return self.models[model_id]
        async with self.lock:  # one load at a time
            if model_id in self.models:
                self.models.move_to_end(model_id)
                return self.models[model_id]
            while self.capacity > 0 and len(self.models) >= self.capacity:
                _, evicted = self.models.popitem(last=False)
                await _unload(evicted)
            _publish(list(self.models) + [model_id])  # loading counts, as in Ray
            try:
                model = await (self.loader(owner, model_id) if owner is not None else self.loader(model_id))
            except BaseException:
                _publish(list(self.models))
                raise
            self.models[model_id] = model
            _publish(list(self.models))
            return model


async def _unload(model):
    finaliser = getattr(model, "__del__", None)
    if finaliser is None:
        return
    result = finaliser()
    if inspect.isawaitable(result):
        await result


_publisher = None


def _set_publisher(publish):
    global _publisher
    _publisher = publish


def _publish(model_ids):
    if _publisher is not None:
        _publisher(model_ids)


def multiplexed(func=None, *, max_num_models_per_replica=3):
    """`@serve.multiplexed` and `@serve.multiplexed(max_num_models_per_replica=N)`."""
    if not isinstance(max_num_models_per_replica, int) or (
        max_num_models_per_replica < 1 and max_num_models_per_replica != -1
    ):
        raise ValueError("max_num_models_per_replica must be an integer >= 1 or -1 (no limit).")

    def decorate(loader):
        if not inspect.iscoroutinefunction(loader):
            raise TypeError("@serve.multiplexed can only be used to decorate async functions or methods.")
        caches = {}

        @functools.wraps(loader)
        async def get_model(*args):
            owner, model_id = (args[0], args[1]) if len(args) == 2 else (None, args[0])
            cache = caches.get(id(owner))
            if cache is None:
                cache = caches[id(owner)] = _ModelCache(loader, max_num_models_per_replica)
            return await cache.get(owner, model_id)

        return get_model

    return decorate(func) if func is not None else decorate
