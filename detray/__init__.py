"""detray: a Ray-style distributed runtime, built simulation-first.

``import detray as ray`` runs common Ray 2.x programs unchanged: the names
below follow ``ray``'s. ``detray.init(mode="sim")`` (or ``DETRAY_MODE=sim``)
runs the program on a simulated cluster; otherwise on real processes. Ray
APIs detray does not implement raise ``NotImplementedError`` naming them
(``detray.api.NOT_IMPLEMENTED`` lists them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detray import exceptions, util
    from detray.actor import ActorClass, ActorHandle, method
    from detray.api import (
        NOT_IMPLEMENTED,
        available_resources,
        cancel,
        cluster_resources,
        get,
        get_actor,
        get_gpu_ids,
        get_runtime_context,
        init,
        is_initialized,
        kill,
        nodes,
        not_supported,
        put,
        remote,
        shutdown,
        wait,
    )
    from detray.object_ref import ObjectRef
    from detray.remote_function import RemoteFunction
    from detray.runtime import RuntimeContext

# The API loads on first use (PEP 562), so that a process that only needs a
# part of detray (a worker, the raylet, a CLI command) does not pay for all of it.
_LAZY: dict[str, tuple[str, str | None]] = {
    "actor": ("detray.actor", None),
    "exceptions": ("detray.exceptions", None),
    "util": ("detray.util", None),
    "ActorClass": ("detray.actor", "ActorClass"),
    "ActorHandle": ("detray.actor", "ActorHandle"),
    "method": ("detray.actor", "method"),
    "ObjectRef": ("detray.object_ref", "ObjectRef"),
    "RemoteFunction": ("detray.remote_function", "RemoteFunction"),
    "RuntimeContext": ("detray.runtime", "RuntimeContext"),
    **{
        name: ("detray.api", name)
        for name in (
            "NOT_IMPLEMENTED",
            "available_resources",
            "cancel",
            "cluster_resources",
            "get",
            "get_actor",
            "get_gpu_ids",
            "get_runtime_context",
            "init",
            "is_initialized",
            "kill",
            "nodes",
            "not_supported",
            "put",
            "remote",
            "shutdown",
            "wait",
        )
    },
}

__version__ = "0.1.0"

__all__ = [
    "NOT_IMPLEMENTED",
    "ActorClass",
    "ActorHandle",
    "ObjectRef",
    "RemoteFunction",
    "RuntimeContext",
    "__version__",
    "available_resources",
    "cancel",
    "cluster_resources",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "util",
    "wait",
]

_LIBRARIES = "ray.data, ray.train, ray.tune, ray.serve, ray.rllib, ray.workflow, ray.dag, ray.experimental"
_UNSUPPORTED_ATTRIBUTES = {
    "timeline": "ray.timeline",
    "java_function": "ray.java_function",
    "java_actor_class": "ray.java_actor_class",
    "cpp_function": "ray.cpp_function",
    "client": "ray.client",
    **{name: _LIBRARIES for name in ("data", "train", "tune", "serve", "rllib", "workflow", "dag", "experimental")},
}


def __getattr__(name: str) -> Any:
    lazy = _LAZY.get(name)
    if lazy is not None:
        import importlib

        module = importlib.import_module(lazy[0])
        value = module if lazy[1] is None else getattr(module, lazy[1])
        globals()[name] = value
        return value
    key = _UNSUPPORTED_ATTRIBUTES.get(name)
    if key is not None:
        from detray.api import not_supported

        raise not_supported(f"detray.{name}", key)
    raise AttributeError(f"module 'detray' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
