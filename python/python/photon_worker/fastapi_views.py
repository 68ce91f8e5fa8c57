"""FastAPI routes declared on a deployment class's methods (`@app.get(...)` inside the class
body) get the replica's instance as `self`, as Ray's `@serve.ingress` arranges: the route is
rebuilt with `self` given by a dependency."""

import inspect


def bind_class_routes(app, cls, instance):
    try:
        from fastapi import Depends
        from fastapi.routing import APIRoute, APIWebSocketRoute
    except ImportError:
        return
    # An async dependency: FastAPI would run a sync one on its thread pool for every request.
    async def current_instance():
        return instance

    methods = {v for v in vars(cls).values() if inspect.isfunction(v)}
    for base in cls.__mro__[1:]:
        methods |= {v for v in vars(base).values() if inspect.isfunction(v)}
    routes = app.router.routes
    for index, route in enumerate(routes):
        if not isinstance(route, (APIRoute, APIWebSocketRoute)) or route.endpoint not in methods:
            continue
        endpoint = _with_self(route.endpoint, Depends(current_instance))
        if isinstance(route, APIWebSocketRoute):
            routes[index] = APIWebSocketRoute(
                route.path, endpoint, name=route.name, dependencies=route.dependencies
            )
            continue
        routes[index] = APIRoute(
            route.path,
            endpoint,
            response_model=route.response_model,
            status_code=route.status_code,
            tags=route.tags,
            dependencies=route.dependencies,
            summary=route.summary,
            description=route.description,
            response_description=route.response_description,
            responses=route.responses,
            deprecated=route.deprecated,
            methods=route.methods,
            operation_id=route.operation_id,
            response_model_include=route.response_model_include,
            response_model_exclude=route.response_model_exclude,
            response_model_by_alias=route.response_model_by_alias,
            response_model_exclude_unset=route.response_model_exclude_unset,
            response_model_exclude_defaults=route.response_model_exclude_defaults,
            response_model_exclude_none=route.response_model_exclude_none,
            include_in_schema=route.include_in_schema,
            response_class=route.response_class,
            name=route.name,
            callbacks=route.callbacks,
            openapi_extra=route.openapi_extra,
            dependency_overrides_provider=route.dependency_overrides_provider,
        )
    app.openapi_schema = None


def _with_self(func, default):
    signature = inspect.signature(func)
    params = list(signature.parameters.values())
    if not params:
        return func
    params[0] = params[0].replace(default=default, kind=inspect.Parameter.KEYWORD_ONLY)
    rest = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD else p for p in params[1:]]

    if inspect.iscoroutinefunction(func):

        async def endpoint(**kwargs):
            return await func(**kwargs)

    else:

        def endpoint(**kwargs):
            return func(**kwargs)

    endpoint.__signature__ = signature.replace(parameters=[params[0]] + rest)
    endpoint.__name__ = func.__name__
    endpoint.__qualname__ = func.__qualname__
    endpoint.__doc__ = func.__doc__
    endpoint.__annotations__ = getattr(func, "__annotations__", {})
    return endpoint
