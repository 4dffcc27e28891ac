"""The driver protocol: what the public API asks of a runtime (simulated or real).

Owns: ``Runtime`` (the one small interface both drivers implement), the
process-wide current runtime (``current``/``set_current``), the data the API
and a runtime exchange (``StoredError``, ``RuntimeContext``, ``InitOptions``)
and ``Driver``, the entry point a driver package exposes to ``init``.

Must not: implement anything. The API layer validates user input and shapes
results (Ray's rules for ``get``/``wait``/``num_returns`` live in
``detray/api.py``); a runtime assigns ids, serializes payloads
(``detray.serialization``), builds core specs (``detray.options.task_spec``
and friends), runs the state machines and carries out their commands.

Contract of every method, for both drivers:

* Arguments arrive validated: options in normal form (fixed-point
  resources), refs are ``ObjectRef``s, timeouts are ``None`` or >= 0.
* Top-level ``ObjectRef`` arguments of a task are dependencies (resolved
  before it runs); refs nested in containers stay refs (``serialize`` reports
  them as ``contained_refs``).
* ``get`` never raises for a failed object: it returns ``StoredError(error)``
  in that slot and the API raises it (in list order, as Ray). It raises
  ``GetTimeoutError`` when the timeout passes first.
* Reference hooks (``add_local_ref``/``remove_local_ref``, the actor-handle
  pair, ``ref_escaped``) are called from ``__init__``/``__del__`` of
  ``ObjectRef``/``ActorHandle``, possibly by the garbage collector at any
  point and in any thread, possibly during interpreter exit and after
  ``shutdown``. They must be cheap, must not block, must not raise, and
  should only record the change (the simulator applies recorded drops at its
  next switch point). They may be called re-entrantly from inside another
  method of the runtime (``submit_task`` creates the refs it returns).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from detray.core.ids import ActorID, ObjectID

if TYPE_CHECKING:
    from detray.actor import ActorHandle
    from detray.exceptions import RayError
    from detray.object_ref import ObjectRef
    from detray.options import (
        ActorClassMeta,
        ActorOptions,
        FunctionDescriptor,
        MethodOptions,
        TaskOptions,
    )

__all__ = [
    "Driver",
    "InitOptions",
    "Runtime",
    "RuntimeContext",
    "StoredError",
    "current",
    "require",
    "set_current",
]


@dataclass(frozen=True, slots=True)
class StoredError:
    """A failed object's value as a runtime returns it from ``get``: raised, never returned."""

    error: RayError


@dataclass(frozen=True, slots=True, kw_only=True)
class InitOptions:
    """``init``'s arguments after the API resolved mode, seed and aliases."""

    mode: str
    """``"sim"`` or ``"real"``."""
    address: str | None = None
    """``None``: start a private cluster; ``"auto"`` or ``HOST:PORT``: connect."""
    num_cpus: float | None = None
    num_gpus: float | None = None
    resources: Mapping[str, float] | None = None
    object_store_memory: int | None = None
    namespace: str | None = None
    env_vars: Mapping[str, str] = field(default_factory=dict)
    """The job's ``runtime_env={"env_vars": ...}``."""
    log_to_driver: bool = True
    seed: int = 0
    """Simulator run seed (``DETRAY_SEED`` when not given)."""
    cluster: Any = None
    """Simulator cluster description (the driver defines its form)."""
    extra: Mapping[str, Any] = field(default_factory=dict)
    """Every other keyword given to ``init``: the driver accepts, ignores (Ray's
    dashboard and logging knobs) or rejects each with a TypeError naming it."""


def actor_name_taken(name: str, namespace: str) -> str:
    """The ``ValueError`` message of ``create_actor`` for a name already taken (Ray's words)."""
    return (
        f"The name {name} (namespace={namespace}) is already taken. Please use a different name "
        f"or get the existing actor using detray.get_actor('{name}', namespace='{namespace}')"
    )


CancelProbe = Callable[[], bool]
"""Answers ``RuntimeContext.is_canceled()`` for the calling task: whether ``ray.cancel`` reached it."""


def async_actor_cancel_probe() -> bool:
    """The probe of an async actor's code: Ray refuses ``is_canceled()`` there."""
    raise RuntimeError(
        "is_canceled() is not supported in an async actor: ray.cancel cancels its running call's "
        "asyncio task (the coroutine sees asyncio.CancelledError)"
    )


class RuntimeContext:
    """What ``get_runtime_context()`` reports about the code calling it (Ray's accessors).

    A runtime builds one with the facts of the calling driver, task or actor.
    ``cancel_probe`` is ``None`` in the driver; in an async actor it is
    ``async_actor_cancel_probe``.
    """

    def __init__(
        self,
        *,
        job_id: str,
        node_id: str,
        worker_id: str,
        namespace: str,
        task_id: str | None = None,
        actor_id: str | None = None,
        actor_name: str | None = None,
        actor_meta: ActorClassMeta | None = None,
        assigned_resources: Mapping[str, float] | None = None,
        gpu_ids: Sequence[int] = (),
        was_current_actor_reconstructed: bool = False,
        cancel_probe: CancelProbe | None = None,
    ) -> None:
        self._job_id = job_id
        self._node_id = node_id
        self._worker_id = worker_id
        self._namespace = namespace
        self._task_id = task_id
        self._actor_id = actor_id
        self._actor_name = actor_name
        self._actor_meta = actor_meta
        self._assigned_resources = dict(assigned_resources or {})
        self._gpu_ids = list(gpu_ids)
        self._was_reconstructed = was_current_actor_reconstructed
        self._cancel_probe = cancel_probe

    def get_job_id(self) -> str:
        return self._job_id

    def get_node_id(self) -> str:
        return self._node_id

    def get_worker_id(self) -> str:
        return self._worker_id

    def get_task_id(self) -> str | None:
        """The running task's id (``None`` in the driver)."""
        return self._task_id

    def get_actor_id(self) -> str | None:
        """The current actor's id (``None`` outside an actor)."""
        return self._actor_id

    def get_actor_name(self) -> str | None:
        """The current actor's name: ``""`` for an unnamed actor, ``None`` outside an actor (Ray's rule)."""
        if self._actor_name is None and self._actor_id is not None:
            return ""
        return self._actor_name

    @property
    def namespace(self) -> str:
        return self._namespace

    def get_namespace(self) -> str:
        return self._namespace

    @property
    def was_current_actor_reconstructed(self) -> bool:
        return self._was_reconstructed

    def get_assigned_resources(self) -> dict[str, float]:
        return dict(self._assigned_resources)

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        return {"GPU": [str(gpu) for gpu in self._gpu_ids]}

    def is_canceled(self) -> bool:
        """True once ``ray.cancel`` reached the current task or actor call (asked anew at each call).

        A running call of a regular or threaded actor is not interrupted by a
        cancel: it polls this to stop early. ``RuntimeError`` in the driver
        and in an async actor (Ray's rule).
        """
        if self._cancel_probe is None:
            raise RuntimeError("is_canceled() is only available in a task or an actor call, not in the driver")
        return self._cancel_probe()

    def get_placement_group_id(self) -> None:
        return None  # placement groups are not supported

    @property
    def current_actor(self) -> ActorHandle:
        """A handle to the current actor (``RuntimeError`` outside an actor)."""
        if self._actor_id is None or self._actor_meta is None:
            raise RuntimeError("This method is only available in an actor.")
        from detray.actor import ActorHandle

        return ActorHandle(ActorID(self._actor_id), self._actor_meta)

    def get(self) -> dict[str, Any]:
        """The context as a dict (Ray's deprecated ``get``)."""
        context: dict[str, Any] = {
            "job_id": self._job_id,
            "node_id": self._node_id,
            "namespace": self._namespace,
        }
        if self._task_id is not None:
            context["task_id"] = self._task_id
        if self._actor_id is not None:
            context["actor_id"] = self._actor_id
        return context

    def __repr__(self) -> str:
        return f"RuntimeContext({self.get()!r})"


@runtime_checkable
class Runtime(Protocol):
    """One runtime: a connection of this process to a (simulated or real) cluster."""

    # --- lifecycle ---------------------------------------------------------------------------
    def is_initialized(self) -> bool:
        """False once ``shutdown`` ran (or the connection is gone)."""
        ...

    def shutdown(self) -> None:
        """Disconnect; a private cluster is torn down. Idempotent."""
        ...

    def address_info(self) -> Mapping[str, Any]:
        """What ``init`` returns to the user (addresses, node id, session)."""
        ...

    # --- tasks and actors ----------------------------------------------------------------------
    def submit_task(
        self,
        function: FunctionDescriptor,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> list[ObjectRef]:
        """Submit a normal task; returns exactly ``options.num_returns`` refs."""
        ...

    def create_actor(
        self,
        cls: FunctionDescriptor,
        meta: ActorClassMeta,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: ActorOptions,
    ) -> ActorID:
        """Create an actor (or, with ``get_if_exists``, find the live one with that name).

        A name already taken in the namespace (without ``get_if_exists``) is a
        ``ValueError`` naming it, as in Ray.
        """
        ...

    def submit_actor_task(
        self,
        actor: ActorID,
        method: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: MethodOptions,
    ) -> list[ObjectRef]:
        """Submit a call of ``method`` to ``actor``; exactly ``options.num_returns`` refs."""
        ...

    def lookup_actor(self, name: str, namespace: str | None) -> tuple[ActorID, ActorClassMeta] | None:
        """A live named actor (``namespace`` ``None``: the job's), or ``None``."""
        ...

    def kill(self, actor: ActorID, no_restart: bool) -> None:
        ...

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        ...

    # --- objects -----------------------------------------------------------------------------
    def put(self, value: Any) -> ObjectRef:
        ...

    def get(self, refs: Sequence[ObjectRef], timeout_s: float | None) -> list[Any]:
        """Values in the order of ``refs``; a failed object is ``StoredError(error)``.

        Raises ``GetTimeoutError`` when ``timeout_s`` passes before all are ready.
        """
        ...

    def wait(
        self,
        refs: Sequence[ObjectRef],
        num_returns: int,
        timeout_s: float | None,
        fetch_local: bool,
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        """(ready, not ready): returns once ``num_returns`` are ready (failed counts as
        ready) or the timeout passed. The API orders and trims the lists."""
        ...

    def future(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        """A future completed with the value (or ``StoredError``) of ``ref``."""
        ...

    def awaitable(self, ref: ObjectRef) -> Awaitable[Any]:
        """An awaitable of the value (or ``StoredError``) for ``await ref`` in async code."""
        ...

    # --- reference hooks (see the module docstring: cheap, never raise) ------------------------
    def add_local_ref(self, object_id: ObjectID) -> object:
        """A new ``ObjectRef`` to ``object_id`` exists in this process; the token returned
        comes back with its ``remove_local_ref`` (e.g. the holder it was created in)."""
        ...

    def remove_local_ref(self, object_id: ObjectID, token: object) -> None:
        ...

    def ref_escaped(self, object_id: ObjectID) -> None:
        """A ref was pickled outside ``serialize``: its copies cannot be counted (pin it)."""
        ...

    def add_actor_handle(self, actor_id: ActorID) -> object:
        ...

    def remove_actor_handle(self, actor_id: ActorID, token: object) -> None:
        ...

    # --- cluster -----------------------------------------------------------------------------
    def cluster_resources(self) -> dict[str, float]:
        ...

    def available_resources(self) -> dict[str, float]:
        ...

    def nodes(self) -> list[dict[str, Any]]:
        """One dict per node, Ray's keys (``NodeID``, ``Alive``, ``Resources``, ...)."""
        ...

    def get_gpu_ids(self) -> list[int]:
        ...

    def get_runtime_context(self) -> RuntimeContext:
        ...


class Driver(Protocol):
    """What ``detray.sim`` and ``detray.real`` expose to ``init``: a module with ``start``."""

    def start(self, options: InitOptions) -> Runtime:
        ...


# --- the current runtime of this process --------------------------------------------------------

_current: Runtime | None = None

_auto_init: Callable[[], Runtime] | None = None
"""Installed by ``detray.api``: starts a runtime when an API call comes before ``init``."""


def current() -> Runtime | None:
    """The runtime API calls go to (``None`` before ``init``)."""
    return _current


def set_current(runtime: Runtime | None) -> Runtime | None:
    """Make ``runtime`` current (``None`` after shutdown); returns the previous one.

    Drivers call it from ``init`` and, in a worker process, when the worker
    starts; tests use it to install a fake.
    """
    global _current
    previous = _current
    _current = runtime
    return previous


def require() -> Runtime:
    """The current runtime, started on demand as Ray does (``init()`` with no arguments)."""
    runtime = _current
    if runtime is not None and runtime.is_initialized():
        return runtime
    if _auto_init is None:
        raise RuntimeError("detray.runtime.require() needs detray.api to be imported")
    return _auto_init()
