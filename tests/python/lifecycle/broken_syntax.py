# Not valid Python: the deploy fails with the SyntaxError.
from ray import serve

def oops(:
    pass
