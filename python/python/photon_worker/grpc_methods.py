"""gRPC requests for Python deployments. The front door passes the method name and the raw
request message; the message types come from the config's `grpc_servicer_functions` (the
user's generated `add_..._to_server`), called here on a stand-in server that records each
method's deserializer and serializer, as Ray's gRPC proxy registers them on its server."""

import importlib
import json
import os

SERVICERS_ENV = "PHOTON_GRPC_SERVICER_FUNCTIONS"


class _Recorder:
    """What `add_..._to_server(servicer, server)` calls on a grpc server."""

    def __init__(self):
        self.methods = {}

    def add_generic_rpc_handlers(self, handlers):
        for handler in handlers:
            for path, method in getattr(handler, "_method_handlers", {}).items():
                self.methods[path.rsplit("/", 1)[-1]] = method

    def add_registered_method_handlers(self, service, handlers):
        self.methods.update(handlers)


class _AnyServicer:
    def __getattr__(self, name):
        return lambda *args, **kwargs: None


def load():
    """Method name -> grpc method handler (with `request_deserializer`, `response_serializer`)."""
    recorder = _Recorder()
    for path in json.loads(os.environ.get(SERVICERS_ENV) or "[]"):
        module, _, attr = path.rpartition(".")
        getattr(importlib.import_module(module), attr)(_AnyServicer(), recorder)
    return recorder.methods
