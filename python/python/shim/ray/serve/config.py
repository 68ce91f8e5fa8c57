"""Option classes users pass to `@serve.deployment` (`ray.serve.config`). Each holds the fields
it was given and turns into the config's dict form."""


class _Options:
    _fields = ()

    def __init__(self, **kwargs):
        unknown = [k for k in kwargs if k not in self._fields]
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected field(s): {', '.join(unknown)}")
        self._given = dict(kwargs)
        for k in self._fields:
            setattr(self, k, kwargs.get(k))

    def dict(self, exclude_unset=True, **_):
        return dict(self._given)

    model_dump = dict

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self._given.items())})"


class AutoscalingConfig(_Options):
    _fields = (
        "min_replicas",
        "initial_replicas",
        "max_replicas",
        "target_ongoing_requests",
        "metrics_interval_s",
        "look_back_period_s",
        "smoothing_factor",
        "upscale_smoothing_factor",
        "downscale_smoothing_factor",
        "upscaling_factor",
        "downscaling_factor",
        "downscale_delay_s",
        "downscale_to_zero_delay_s",
        "upscale_delay_s",
        "aggregation_function",
        "policy",
    )


class HTTPOptions(_Options):
    _fields = ("host", "port", "root_path", "request_timeout_s", "keep_alive_timeout_s", "middlewares", "location")


class gRPCOptions(_Options):
    _fields = ("port", "grpc_servicer_functions", "request_timeout_s")


class RequestRouterConfig(_Options):
    _fields = ("request_router_class", "request_router_kwargs", "request_routing_stats_period_s", "request_routing_stats_timeout_s")
