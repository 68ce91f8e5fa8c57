# A module that takes a while to import (as one that loads a model at import time does).
import time

from ray import serve

time.sleep(3)


@serve.deployment
def slow(request):
    return "imported at last"


app = slow.bind()
