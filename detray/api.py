"""The public API (``detray.init``, ``remote``, ``get``, ``put``, ``wait`` ...), driver-agnostic.

Owns: argument checking with Ray's error types and messages, Ray's rules for
results (``get`` raises the first failed object's error in list order, a task
error as an instance of its cause's type; ``wait`` keeps input order and
returns at most ``num_returns`` ready refs), ``init``'s choice of driver
(``mode="sim"``/``DETRAY_MODE=sim`` -> ``detray.sim``, else ``detray.real``),
starting a runtime on the first call that needs one (as Ray 2.x does), and
the list of Ray APIs detray does not implement (``NOT_IMPLEMENTED``).

Must not: know how either driver works. Everything below talks to the
``detray.runtime.Runtime`` protocol.
"""

from __future__ import annotations

import importlib
import inspect
import threading
from collections.abc import Mapping
from typing import Any

from detray import runtime as _runtime_mod
from detray import settings
from detray.actor import ActorClass, ActorHandle
from detray.exceptions import RaySystemError, as_raised
from detray.object_ref import ObjectRef, is_actor_task_ref
from detray.options import env_vars_of
from detray.remote_function import RemoteFunction
from detray.runtime import InitOptions, Runtime, RuntimeContext, StoredError

__all__ = [
    "NOT_IMPLEMENTED",
    "InitContext",
    "NotSupportedError",
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
    "put",
    "remote",
    "runtime",
    "shutdown",
    "wait",
]

NOT_IMPLEMENTED: dict[str, str] = {
    "ray.util.placement_group": "placement groups are not supported",
    "ray.util.remove_placement_group": "placement groups are not supported",
    "ray.util.get_current_placement_group": "placement groups are not supported",
    "ray.util.placement_group_table": "placement groups are not supported",
    "ray.util.scheduling_strategies.PlacementGroupSchedulingStrategy": "placement groups are not supported",
    "ray.util.scheduling_strategies.NodeLabelSchedulingStrategy": "node labels are not supported",
    "ray.util.multiprocessing": "the multiprocessing.Pool shim is not provided",
    "ray.util.collective": "collective communication is not provided",
    "ray.util.state": "the state API is not provided (use `detray status` and the trace)",
    "ray.util.list_named_actors": "listing named actors is not provided",
    "ray.util.get_node_ip_address": "use get_runtime_context().get_node_id() and nodes()",
    "ray.util.inspect_serializability": "serialization errors name the culprit instead",
    "ray.timeline": "use `detray timeline` (the CLI) instead",
    "ray.java_function": "only Python is supported",
    "ray.java_actor_class": "only Python is supported",
    "ray.cpp_function": "only Python is supported",
    "ray.client": "Ray Client is not supported: connect with init(address=...)",
    "ray.init(local_mode=True)": "local mode is not supported: use mode='sim' for a single-process run",
    "ray.put(_owner=...)": "transferring ownership on put is not supported",
    "RemoteFunction.bind / ActorClass.bind / ActorMethod.bind": "Ray DAGs are not supported",
    "ray.get(ObjectRefGenerator) / num_returns='dynamic'|'streaming', or a generator (async generator) "
    "function or method without an integer num_returns": "streaming generator tasks are not supported",
    "runtime_env keys other than env_vars": "only runtime_env={'env_vars': {...}} is supported",
    "options placement_group*, accelerator_type, label_selector, fallback_strategy, "
    "concurrency_groups, concurrency_group, tensor_transport": "see detray.options.UNSUPPORTED_OPTIONS",
    "ray.data, ray.train, ray.tune, ray.serve, ray.rllib, ray.workflow, ray.dag, ray.experimental":
        "Ray's libraries are not provided",
}
"""Ray APIs detray does not implement; using one raises ``NotImplementedError`` naming it.
``docs/compatibility.md`` cites this table (and ``detray.options.UNSUPPORTED_OPTIONS``)."""


class NotSupportedError(NotImplementedError, AttributeError):
    """An attribute of Ray's API that detray does not provide.

    A ``NotImplementedError`` (the documented error) that is also an
    ``AttributeError``, so ``hasattr(detray, "timeline")`` is simply False.
    """


def not_supported(name: str, key: str | None = None) -> NotSupportedError:
    """The error for Ray API ``name``; ``key`` is its entry in ``NOT_IMPLEMENTED``."""
    reason = NOT_IMPLEMENTED.get(key or name)
    return NotSupportedError(f"{name} is not supported by detray" + (f": {reason}" if reason else ""))


# --- init / shutdown ----------------------------------------------------------------------------

_init_lock = threading.RLock()

_DRIVER_LABELS = {settings.MODE_SIM: "the simulator", settings.MODE_REAL: "the real runtime"}


class InitContext:
    """What ``init`` returns (Ray's ``RayContext``): address info, and a context manager
    that shuts the runtime down on exit."""

    def __init__(self, address_info: Mapping[str, Any]) -> None:
        self.address_info = dict(address_info)
        self.dashboard_url: str | None = self.address_info.get("webui_url")

    def __getitem__(self, key: str) -> Any:
        return self.address_info[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.address_info.get(key, default)

    def __enter__(self) -> InitContext:
        return self

    def __exit__(self, *exc_info: object) -> None:
        shutdown()

    def __repr__(self) -> str:
        return f"InitContext({self.address_info!r})"


def _load_driver(mode: str) -> _runtime_mod.Driver:
    module_name = f"detray.{mode}"
    not_built = NotImplementedError(
        f"detray.init(mode={mode!r}): {_DRIVER_LABELS[mode]} is not built yet"
    )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            raise not_built from None
        raise
    if not callable(getattr(module, "start", None)):
        raise not_built
    return module


def _check_number(name: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise TypeError(f"init(): {name} must be a number, got {type(value).__name__}")


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: Mapping[str, float] | None = None,
    object_store_memory: int | None = None,
    local_mode: bool = False,
    ignore_reinit_error: bool = False,
    namespace: str | None = None,
    runtime_env: Mapping[str, Any] | None = None,
    log_to_driver: bool = True,
    mode: str | None = None,
    seed: int | None = None,
    cluster: Any = None,
    redis_address: str | None = None,
    **kwargs: Any,
) -> InitContext:
    """Start or connect this process to a cluster (Ray's ``ray.init``).

    ``mode`` (or ``DETRAY_MODE``) picks the driver: ``"sim"`` runs on a
    simulated cluster (``seed``, else ``DETRAY_SEED``; ``cluster``), anything
    else on real processes. ``redis_address`` is an alias of ``address``.
    Other keywords go to the driver, which accepts, ignores or rejects them.
    """
    with _init_lock:
        current = _runtime_mod.current()
        if current is not None and current.is_initialized():
            if ignore_reinit_error:
                return InitContext(current.address_info())
            raise RuntimeError(
                "Maybe you called detray.init twice by accident? This error can be suppressed "
                "by passing in 'ignore_reinit_error=True' or by calling 'detray.shutdown()' "
                "prior to 'detray.init()'."
            )
        if local_mode:
            raise NotImplementedError(
                "detray.init(local_mode=True): " + NOT_IMPLEMENTED["ray.init(local_mode=True)"]
            )
        if redis_address is not None:
            if address is not None and address != redis_address:
                raise ValueError(
                    f"init(): address={address!r} and redis_address={redis_address!r} disagree"
                )
            address = redis_address
        resolved_mode = (mode or settings.mode_from_env()).strip().lower()
        if resolved_mode not in settings.MODES:
            raise ValueError(
                f"init(): unknown mode {resolved_mode!r}; use one of {list(settings.MODES)} "
                f"(or set {settings.MODE_ENV})"
            )
        if address is not None and not isinstance(address, str):
            raise TypeError(f"init(): address must be a str, got {type(address).__name__}")
        for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus)):
            _check_number(name, value)
        if resources is not None and not isinstance(resources, Mapping):
            raise TypeError(f"init(): resources must be a dict, got {type(resources).__name__}")
        if namespace is not None and not isinstance(namespace, str):
            raise TypeError(f"init(): namespace must be a str, got {type(namespace).__name__}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"init(): seed must be an int, got {type(seed).__name__}")
        options = InitOptions(
            mode=resolved_mode,
            address=address,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            resources=None if resources is None else dict(resources),
            object_store_memory=object_store_memory,
            namespace=namespace,
            env_vars=env_vars_of(runtime_env, "init()"),
            log_to_driver=log_to_driver,
            seed=settings.seed_from_env() if seed is None else seed,
            cluster=cluster,
            extra=dict(kwargs),
        )
        driver = _load_driver(resolved_mode)
        started = driver.start(options)
        _runtime_mod.set_current(started)
        return InitContext(started.address_info())


def shutdown(_exiting_interpreter: bool = False) -> None:
    """Disconnect from the cluster (a private one is torn down). ``init`` works again after it."""
    with _init_lock:
        current = _runtime_mod.set_current(None)
        if current is not None:
            current.shutdown()


def is_initialized() -> bool:
    current = _runtime_mod.current()
    return current is not None and current.is_initialized()


def _auto_init() -> Runtime:
    with _init_lock:
        current = _runtime_mod.current()
        if current is not None and current.is_initialized():
            return current
        if not settings.auto_connect_enabled():
            raise RaySystemError(
                "detray has not been started yet. You can start it with 'detray.init()'."
            )
        init()
        started = _runtime_mod.current()
        assert started is not None
        return started


_runtime_mod._auto_init = _auto_init


def runtime() -> Runtime:
    """The current runtime, started with ``init()`` if there is none (Ray's auto-init)."""
    return _runtime_mod.require()


def _connected(api_name: str) -> Runtime:
    current = _runtime_mod.current()
    if current is None or not current.is_initialized():
        raise RaySystemError(
            f"detray has not been started yet: call 'detray.init()' before '{api_name}()'."
        )
    return current


# --- remote ------------------------------------------------------------------------------------

_REMOTE_USAGE = (
    "The @remote decorator must be applied either with no arguments and no parentheses, "
    "for example '@remote', or with keyword options, for example "
    "'@remote(num_returns=2, resources={\"CustomResource\": 1})'."
)


def _make_remote(target: Any, options: dict[str, Any]) -> RemoteFunction | ActorClass:
    if inspect.isclass(target):
        return ActorClass(target, options)
    if inspect.isfunction(target):
        return RemoteFunction(target, options)
    raise TypeError(
        "The @remote decorator must be applied to either a function or a class, "
        f"got {type(target).__name__}."
    )


def remote(*args: Any, **kwargs: Any) -> Any:
    """Make a function a remote function, or a class an actor class.

    ``@remote`` or ``@remote(num_cpus=2, num_gpus=0.5, resources={...},
    num_returns=2, max_retries=..., retry_exceptions=..., scheduling_strategy=...,
    max_restarts=..., max_task_retries=..., max_concurrency=..., name=...,
    namespace=..., lifetime="detached", get_if_exists=True, runtime_env=...)``.
    Options are checked when applied: unknown ones are a ``ValueError``, wrong
    types a ``TypeError``, each naming the option and the function or class.
    """
    if len(args) == 1 and not kwargs and (inspect.isclass(args[0]) or callable(args[0])):
        return _make_remote(args[0], {})
    if args:
        raise TypeError(_REMOTE_USAGE)

    def decorate(target: Any) -> RemoteFunction | ActorClass:
        return _make_remote(target, kwargs)

    return decorate


# --- objects -----------------------------------------------------------------------------------


def _check_timeout(api_name: str, timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{api_name}(): timeout must be a number or None, got {type(timeout).__name__}")
    if timeout < 0:
        raise ValueError(f"{api_name}(): 'timeout' must be a non-negative number or None, got {timeout}")
    return float(timeout)


def get(object_refs: ObjectRef | list[ObjectRef], *, timeout: float | None = None) -> Any:
    """The value of a ref, or the values of a list of refs (in order).

    Blocks until ready; raises ``GetTimeoutError`` (a ``TimeoutError``) when
    ``timeout`` seconds pass first. A failed object raises its error (the
    first in list order); a task's exception is raised as ``RayTaskError``
    that is also an instance of the original exception's type.
    """
    single = isinstance(object_refs, ObjectRef)
    if single:
        refs: list[ObjectRef] = [object_refs]  # type: ignore[list-item]
    elif isinstance(object_refs, list):
        refs = object_refs
        for item in refs:
            if not isinstance(item, ObjectRef):
                raise TypeError(
                    f"Attempting to call `get` on the value {item!r}, which is not an ObjectRef."
                )
    else:
        raise ValueError("'object_refs' must either be an ObjectRef or a list of ObjectRefs.")
    timeout_s = _check_timeout("get", timeout)
    values = runtime().get(refs, timeout_s)
    for value in values:
        if isinstance(value, StoredError):
            raise as_raised(value.error)
    return values[0] if single else values


def put(value: Any, *, _owner: Any = None) -> ObjectRef:
    """Store ``value`` in the object store; returns its ref."""
    if isinstance(value, ObjectRef):
        raise TypeError(
            "Calling 'put' on an ObjectRef is not allowed. If you really want to do this, "
            "you can wrap the ObjectRef in a list and call 'put' on it."
        )
    if _owner is not None:
        raise NotImplementedError("put(_owner=...): " + NOT_IMPLEMENTED["ray.put(_owner=...)"])
    return runtime().put(value)


def wait(
    ray_waitables: list[ObjectRef],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    """(ready, not ready): returns when ``num_returns`` refs are ready or ``timeout`` passed.

    Both lists keep the input order; ``ready`` holds at most ``num_returns`` refs.
    """
    given: object = ray_waitables
    if isinstance(given, ObjectRef):
        raise TypeError(
            "wait() expected a list of ObjectRef, got a single ObjectRef; wrap it in a list."
        )
    if not isinstance(given, list):
        raise TypeError(f"wait() expected a list of ObjectRef, got {type(given).__name__}")
    for item in ray_waitables:
        if not isinstance(item, ObjectRef):
            raise TypeError(f"wait() expected a list of ObjectRef, got an item {item!r}")
    timeout_s = _check_timeout("wait", timeout)
    if isinstance(num_returns, bool) or not isinstance(num_returns, int):
        raise TypeError(f"wait(): num_returns must be an int, got {type(num_returns).__name__}")
    if not ray_waitables:
        return [], []
    if len(set(ray_waitables)) != len(ray_waitables):
        raise ValueError("Wait requires a list of unique object refs.")
    if num_returns <= 0:
        raise ValueError(f"Invalid number of objects to return {num_returns}.")
    if num_returns > len(ray_waitables):
        raise ValueError(
            "num_returns cannot be greater than the number of object refs provided to wait."
        )
    ready, _ = runtime().wait(ray_waitables, num_returns, timeout_s, bool(fetch_local))
    ready_set = set(ready)
    ready_in_order = [ref for ref in ray_waitables if ref in ready_set][:num_returns]
    chosen = set(ready_in_order)
    return ready_in_order, [ref for ref in ray_waitables if ref not in chosen]


def cancel(object_ref: ObjectRef, *, force: bool = False, recursive: bool = True) -> None:
    """Cancel the task that creates ``object_ref`` (``get`` then raises ``TaskCancelledError``).

    ``force=True`` (kill the worker running it) is refused with ``ValueError`` for an
    actor method call, as Ray refuses it: it would kill the actor; use ``kill()`` for that.
    """
    if not isinstance(object_ref, ObjectRef):
        raise TypeError(
            "cancel() only supported for object refs. For actors, try kill(). "
            f"Got: {type(object_ref).__name__}."
        )
    if force and is_actor_task_ref(object_ref):
        raise ValueError("force=True is not supported for actor tasks.")
    runtime().cancel(object_ref, bool(force), bool(recursive))


# --- actors ------------------------------------------------------------------------------------


def kill(actor: ActorHandle, *, no_restart: bool = True) -> None:
    """Kill an actor now (in-flight and queued calls fail with ``ActorDiedError``)."""
    if not isinstance(actor, ActorHandle):
        raise TypeError(
            "kill() only supported for actors. For tasks, try cancel(). "
            f"Got: {type(actor).__name__}."
        )
    runtime().kill(actor.actor_id, bool(no_restart))


def get_actor(name: str, namespace: str | None = None) -> ActorHandle:
    """A handle to the live actor named ``name`` (in ``namespace``, default the job's)."""
    if not isinstance(name, str) or not name:
        raise ValueError("Please supply a non-empty value to get_actor")
    if namespace is not None and not isinstance(namespace, str):
        raise TypeError(f"get_actor(): namespace must be a str, got {type(namespace).__name__}")
    found = runtime().lookup_actor(name, namespace)
    if found is None:
        where = f" in namespace {namespace!r}" if namespace is not None else ""
        raise ValueError(
            f"Failed to look up actor with name '{name}'{where}. This could because "
            "1. You are trying to look up a named actor you didn't create. "
            "2. The named actor died. "
            "3. You did not use a namespace matching the namespace of the actor."
        )
    actor_id, meta = found
    return ActorHandle(actor_id, meta)


# --- cluster -------------------------------------------------------------------------------------


def cluster_resources() -> dict[str, float]:
    """Total resources of the live nodes (floats, as Ray reports them)."""
    return _connected("cluster_resources").cluster_resources()


def available_resources() -> dict[str, float]:
    return _connected("available_resources").available_resources()


def nodes() -> list[dict[str, Any]]:
    return _connected("nodes").nodes()


def get_gpu_ids() -> list[int]:
    """The GPU ids assigned to the calling task or actor."""
    return runtime().get_gpu_ids()


def get_runtime_context() -> RuntimeContext:
    return runtime().get_runtime_context()
