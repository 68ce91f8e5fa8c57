# Run with Ray installed: `ray.serve` is Photon's, the rest of `ray` is Ray's own.
import ray
import ray.exceptions
from ray import serve
from starlette.requests import Request


@serve.deployment
class Which:
    def __call__(self, request: Request):
        return {
            "ray_version": ray.__version__,
            "ray_from": "site-packages" in ray.__file__ and "site-packages" in ray.exceptions.__file__,
            "serve_is_photon": "site-packages" not in serve.__file__,
        }


app = Which.bind()
