"""`RayServegRPCContext`: what a gRPC method of a deployment may read of its call (the client's
metadata) and set on its answer (status code, details, trailing metadata), as in Ray. A method
gets one when it has a parameter named `grpc_context`."""


class RayServegRPCContext:
    def __init__(self, invocation_metadata=()):
        self._invocation_metadata = list(invocation_metadata)
        self._code = None
        self._details = ""
        self._trailing_metadata = []
        self._compression = None

    def auth_context(self):
        return {}

    def code(self):
        return self._code

    def details(self):
        return self._details

    def invocation_metadata(self):
        return self._invocation_metadata

    def peer(self):
        return ""

    def peer_identities(self):
        return None

    def peer_identity_key(self):
        return None

    def set_code(self, code):
        self._code = code

    def set_compression(self, compression):
        self._compression = compression

    def set_details(self, details):
        self._details = details

    def set_trailing_metadata(self, trailing_metadata):
        self._trailing_metadata = list(trailing_metadata)

    def trailing_metadata(self):
        return self._trailing_metadata

    def _status_headers(self):
        """The answer's headers that carry this context to the gRPC front door."""
        headers = []
        if self._code is not None:
            value = getattr(self._code, "value", self._code)
            headers.append(("grpc-status", str(value[0] if isinstance(value, tuple) else value)))
        if self._details:
            headers.append(("grpc-message", self._details))
        for key, value in self._trailing_metadata:
            headers.append(("x-photon-grpc-trailer-" + key.lower(), value))
        return headers
