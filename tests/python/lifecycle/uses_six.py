# Needs a package its config's runtime_env.pip installs; fastapi comes from the base interpreter.
import fastapi
import six
from ray import serve


@serve.deployment
def versions(request):
    return {"six": six.__version__, "fastapi_from_base": fastapi.__name__}


app = versions.bind()
