"""Finding the user's application: the import hook that makes `ray.serve` Photon's, the
import path's resolution (a bound application or a builder of the config's `args`), and the
walk over the bound graph that names each deployment."""

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import inspect
import os
import sys

SHIM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shim")


class _ServeFinder(importlib.abc.MetaPathFinder):
    """Serves `ray.serve` (and `ray` itself when Ray is not installed) from Photon's files."""

    def __init__(self, own_ray):
        self.own_ray = own_ray

    def find_spec(self, fullname, path, target=None):
        if fullname == "ray":
            if not self.own_ray:
                return None
        elif fullname != "ray.serve" and not fullname.startswith("ray.serve."):
            return None
        base = os.path.join(SHIM, *fullname.split("."))
        if os.path.isdir(base):
            return importlib.util.spec_from_file_location(
                fullname, os.path.join(base, "__init__.py"), submodule_search_locations=[base]
            )
        if os.path.isfile(base + ".py"):
            return importlib.util.spec_from_file_location(fullname, base + ".py")
        return None


def install_import_hook():
    real_ray = importlib.machinery.PathFinder.find_spec("ray", sys.path)
    sys.meta_path.insert(0, _ServeFinder(own_ray=real_ray is None))


def add_code_paths(code):
    """Puts the app's code first on the import path: `runtime_env.working_dir`, then its
    `py_modules` (their parent directories, and the directories their wheels were installed
    into), then the directory Photon was started from."""
    paths = []
    if code.get("working_dir"):
        paths.append(code["working_dir"])
    for module_dir in code.get("py_modules") or []:
        paths.append(os.path.dirname(os.path.abspath(module_dir)))
    paths.extend(code.get("site_dirs") or [])
    paths.append(os.getcwd())
    for p in reversed(paths):
        if p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)
    if code.get("working_dir"):
        os.chdir(code["working_dir"])


def _import_attr(import_path):
    if ":" in import_path:
        module_name, _, attr = import_path.partition(":")
    else:
        module_name, _, attr = import_path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(
            f"import_path {import_path!r} must be of the form 'module.attr' or 'module:attr'."
        )
    obj = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def _call_builder(builder, args):
    params = list(inspect.signature(builder).parameters.values())
    if len(params) != 1:
        raise TypeError("Application builder functions should take exactly one parameter, a dictionary.")
    annotation = params[0].annotation
    if inspect.isclass(annotation) and hasattr(annotation, "model_validate"):
        return builder(annotation.model_validate(args))
    if inspect.isclass(annotation) and hasattr(annotation, "parse_obj"):
        return builder(annotation.parse_obj(args))
    return builder(args)


def load_application(import_path, args):
    """The bound application `import_path` names, built with `args` if it is a builder."""
    from ray.serve.deployment import Application, Deployment

    target = _import_attr(import_path)
    if isinstance(target, Application):
        if args:
            raise ValueError(
                "Arguments can only be passed to an application builder function, "
                f"but {import_path!r} is an application."
            )
        return target
    if isinstance(target, Deployment):
        raise TypeError(
            f"Expected {import_path!r} to be an Application but got a Deployment. "
            "Did you forget to call `.bind()`?"
        )
    if callable(target):
        app = _call_builder(target, args or {})
        if not isinstance(app, Application):
            raise TypeError(
                f"Expected the application builder {import_path!r} to return an Application, "
                f"but got {type(app)}."
            )
        return app
    raise TypeError(f"Expected {import_path!r} to be an Application or an application builder, but got {type(target)}.")


def _children(value):
    from ray.serve.deployment import Application

    if isinstance(value, Application):
        yield value
    elif isinstance(value, (list, tuple, set)):
        for v in value:
            yield from _children(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _children(v)


class Graph:
    """The deployments of one application, dependencies first, ingress last, each with its
    unique name (Ray appends `_1`, `_2`, ... to repeated names)."""

    def __init__(self, app):
        self.names = {}  # id(Application) -> deployment name
        self.nodes = []  # (name, Application)
        taken = set()
        self._visit(app, taken)
        self.ingress = self.names[id(app)]

    def _visit(self, app, taken):
        if id(app) in self.names:
            return
        for child in _children((app._args, app._kwargs)):
            self._visit(child, taken)
        name = app._bound_deployment.name
        if name in taken:
            i = 1
            while f"{name}_{i}" in taken:
                i += 1
            name = f"{name}_{i}"
        taken.add(name)
        self.names[id(app)] = name
        self.nodes.append((name, app))

    def find(self, name):
        for n, app in self.nodes:
            if n == name:
                return app
        raise KeyError(f"the application has no deployment named {name!r}; it has: {', '.join(n for n, _ in self.nodes)}")

    def with_handles(self, value, app_name):
        """`value` with every bound deployment replaced by a handle to it."""
        from ray.serve.deployment import Application
        from ray.serve.handle import DeploymentHandle

        if isinstance(value, Application):
            return DeploymentHandle(self.names[id(value)], app_name)
        if isinstance(value, list):
            return [self.with_handles(v, app_name) for v in value]
        if isinstance(value, tuple):
            return tuple(self.with_handles(v, app_name) for v in value)
        if isinstance(value, dict):
            return {k: self.with_handles(v, app_name) for k, v in value.items()}
        return value
