# Sync methods run on a thread pool, async ones on the replica's event loop; a sync __call__
# may block on a handle call's result.
import threading

from ray import serve
from starlette.requests import Request


@serve.deployment
class Threads:
    async def loop_thread(self):
        return threading.get_ident()

    def sync_thread(self):
        return threading.get_ident()


@serve.deployment
class SyncIngress:
    def __init__(self, threads):
        self.threads = threads

    def __call__(self, request: Request):
        loop_thread = self.threads.loop_thread.remote().result(timeout_s=10)
        sync_thread = self.threads.sync_thread.remote().result(timeout_s=10)
        return {"sync_off_loop": loop_thread != sync_thread}


app = SyncIngress.bind(Threads.bind())
