# A deployment with a runtime_env of its own (packages and a wheel in py_modules, given in the
# config's ray_actor_options), called by an ingress without them: each runs in its own.
import importlib.util

from ray import serve


@serve.deployment
class Packaged:
    def __call__(self):
        # Imported here: the application itself is imported where these are not installed.
        import photon_wheel_mod
        import six

        return {"six": six.__version__, "wheel": photon_wheel_mod.VALUE}


@serve.deployment
class Front:
    def __init__(self, packaged):
        self.packaged = packaged

    async def __call__(self, request):
        return {"front_has_six": importlib.util.find_spec("six") is not None, "packaged": await self.packaged.remote()}


app = Front.bind(Packaged.bind())
