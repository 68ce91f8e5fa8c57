# A constructor that raises: every replica fails to start.
from ray import serve


@serve.deployment
class Fails:
    def __init__(self):
        raise RuntimeError("cannot start: the model file is missing")

    def __call__(self, request):
        return "never"


app = Fails.bind()
