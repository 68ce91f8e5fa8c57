"""`Deployment` and `Application`: what `@serve.deployment` and `.bind()` make.

Options given in code are remembered by name (`_options`), so the controller can tell the
code's options from Ray's defaults and let the config's override them, as Ray does.
"""

import inspect

# The options `@serve.deployment` and `.options()` take (Ray 2.60).
DEPLOYMENT_OPTIONS = (
    "name",
    "version",
    "num_replicas",
    "route_prefix",
    "ray_actor_options",
    "placement_group_bundles",
    "placement_group_strategy",
    "max_replicas_per_node",
    "user_config",
    "max_ongoing_requests",
    "max_queued_requests",
    "autoscaling_config",
    "graceful_shutdown_wait_loop_s",
    "graceful_shutdown_timeout_s",
    "health_check_period_s",
    "health_check_timeout_s",
    "logging_config",
    "request_router_config",
    "_internal",
)


class Deployment:
    """A class or function decorated with `@serve.deployment`."""

    def __init__(self, func_or_class, name, options):
        self.func_or_class = func_or_class
        self._name = name
        self._options = dict(options)

    @property
    def name(self):
        return self._name

    @property
    def version(self):
        return self._options.get("version")

    @property
    def num_replicas(self):
        return self._options.get("num_replicas", 1)

    @property
    def user_config(self):
        return self._options.get("user_config")

    @property
    def max_ongoing_requests(self):
        return self._options.get("max_ongoing_requests", 5)

    @property
    def max_queued_requests(self):
        return self._options.get("max_queued_requests", -1)

    @property
    def ray_actor_options(self):
        return self._options.get("ray_actor_options")

    @property
    def route_prefix(self):
        return self._options.get("route_prefix")

    def options(self, **kwargs):
        """A copy with some options replaced (Ray's `Deployment.options`)."""
        unknown = [k for k in kwargs if k not in DEPLOYMENT_OPTIONS and k != "func_or_class"]
        if unknown:
            raise TypeError(f"options() got unexpected keyword argument(s): {', '.join(unknown)}")
        func_or_class = kwargs.pop("func_or_class", self.func_or_class)
        name = kwargs.pop("name", self._name)
        options = dict(self._options)
        options.update({k: _plain(v) for k, v in kwargs.items()})
        return Deployment(func_or_class, name, options)

    def bind(self, *args, **kwargs):
        """Binds constructor arguments: the result is an `Application` (Ray's `.bind`)."""
        return Application(self, args, kwargs)

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            "Deployments cannot be constructed directly. Use `deployment.bind()` instead."
        )

    def __repr__(self):
        return f"Deployment(name={self._name})"


class Application:
    """A deployment with its constructor arguments bound: what `import_path` names."""

    def __init__(self, deployment, args, kwargs):
        self._bound_deployment = deployment
        self._args = args
        self._kwargs = kwargs

    def __repr__(self):
        return f"Application({self._bound_deployment.name})"


def _plain(value):
    """Option objects (AutoscalingConfig, ...) as plain dicts."""
    for attr in ("model_dump", "dict"):
        method = getattr(value, attr, None)
        if callable(method) and not isinstance(value, dict):
            return method(exclude_unset=True) if attr == "model_dump" else method()
    return value


def deployment(_func_or_class=None, **options):
    """`@serve.deployment` and `@serve.deployment(...)`."""
    unknown = [k for k in options if k not in DEPLOYMENT_OPTIONS]
    if unknown:
        raise TypeError(f"deployment() got unexpected keyword argument(s): {', '.join(unknown)}")
    if options.get("num_replicas") not in (None, "auto") and options.get("autoscaling_config"):
        raise ValueError("Manually setting num_replicas is not allowed when autoscaling_config is provided.")

    def decorate(func_or_class):
        if not (inspect.isclass(func_or_class) or callable(func_or_class)):
            raise TypeError("@serve.deployment must decorate a class or a function.")
        name = options.get("name") or func_or_class.__name__
        rest = {k: _plain(v) for k, v in options.items() if k != "name"}
        return Deployment(func_or_class, name, rest)

    return decorate(_func_or_class) if callable(_func_or_class) else decorate
