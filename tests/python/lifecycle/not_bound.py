# The import path names a deployment that was never bound.
from ray import serve


@serve.deployment
class Forgot:
    def __call__(self, request):
        return "never"


app = Forgot
