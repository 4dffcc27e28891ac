"""``ObjectRef``: a handle to an object that exists (or will) somewhere in the cluster.

Owns: the ref's identity (its ``ObjectID``; equality and hashing by id, as
Ray), its pickling (recorded as contained when inside ``serialize``), its
reference-count notifications to the runtime it was created under,
``await ref`` / ``ref.future()``, and whether it is the result of an actor
method call (``is_actor_task_ref``: Ray reads that from the id; detray's ids do
not carry it, so the ref does, through pickling too).

Must not: hold the value, block in ``__init__``/``__del__``, or reach a
runtime other than the one it registered with for counting (a ref that
outlives its runtime notifies the old one, which ignores it after shutdown).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Generator
from typing import Any

from detray import runtime as _runtime_mod
from detray import serialization
from detray.core import ids
from detray.core.ids import ObjectID, WorkerID
from detray.exceptions import as_raised
from detray.runtime import Runtime, StoredError

__all__ = ["ObjectRef"]


class ObjectRef:
    """A reference to a remote object (Ray's ``ray.ObjectRef``).

    Hashable and compared by id, so refs work as dict keys and in sets; the
    same id seen through two refs is the same object. ``await ref`` in async
    code (e.g. an async actor) gives the value; ``ref.future()`` a
    ``concurrent.futures.Future``.
    """

    __slots__ = ("_id", "_owner", "_runtime", "_token", "_actor_task", "__weakref__")

    def __init__(self, object_id: str, owner: str | None = None) -> None:
        self._id = ObjectID(object_id)
        self._owner = None if owner is None else WorkerID(owner)
        self._actor_task = False
        runtime = _runtime_mod._current
        self._runtime = runtime
        self._token = None if runtime is None else runtime.add_local_ref(self._id)

    def __del__(self) -> None:
        # Cheap and silent: may run in any thread, during GC or at interpreter exit.
        try:
            runtime = self._runtime
            if runtime is not None:
                runtime.remove_local_ref(self._id, self._token)
        except Exception:  # noqa: BLE001 - a finalizer must never raise
            pass

    # --- identity -------------------------------------------------------------------------
    @property
    def id(self) -> ObjectID:
        return self._id

    @property
    def owner(self) -> WorkerID | None:
        """The worker that owns the object (``None`` when unknown to this ref)."""
        return self._owner

    def hex(self) -> str:
        """The id as a string (Ray's ``hex()``; detray ids are readable strings)."""
        return self._id

    def binary(self) -> bytes:
        return self._id.encode()

    def task_id(self) -> str:
        """The task that created the object (for a put: the task that called put)."""
        return ids.creating_task(self._id)

    def job_id(self) -> str:
        return ids.creating_task(self._id)[:8]

    def is_nil(self) -> bool:
        return False

    def call_site(self) -> str:
        return ""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ObjectRef) and other._id == self._id

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self._id)

    def __repr__(self) -> str:
        return f"ObjectRef({self._id})"

    # --- copying and pickling ---------------------------------------------------------------
    def __copy__(self) -> ObjectRef:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ObjectRef:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        if not serialization.record_ref(self._id):
            runtime = _runtime_mod._current or self._runtime
            if runtime is not None:
                runtime.ref_escaped(self._id)
        # Two rebuilders with names of one length: a pickle holding refs of one kind has
        # the same size whichever kind it holds (the simulator's timings follow sizes).
        rebuild = _rebuild_method_ref if self._actor_task else _rebuild_object_ref
        return (rebuild, (self._id, self._owner))

    # --- waiting ------------------------------------------------------------------------------
    def future(self) -> concurrent.futures.Future[Any]:
        """A future of the value; it raises the object's error as ``get`` would."""
        source = _serving_runtime().future(self)
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def settle(done: concurrent.futures.Future[Any]) -> None:
            if done.cancelled():
                result.cancel()
                return
            error = done.exception()
            if error is not None:
                result.set_exception(error)
                return
            value = done.result()
            if isinstance(value, StoredError):
                result.set_exception(as_raised(value.error))
            else:
                result.set_result(value)

        source.add_done_callback(settle)
        return result

    def as_future(self) -> asyncio.Future[Any]:
        """An asyncio future of the value, for the running event loop."""
        return asyncio.wrap_future(self.future())

    def __await__(self) -> Generator[Any, None, Any]:
        value = yield from _serving_runtime().awaitable(self).__await__()
        if isinstance(value, StoredError):
            raise as_raised(value.error)
        return value


_new_object = object.__new__


def typed_refs(object_ids: tuple[ObjectID, ...], owner: WorkerID) -> list[ObjectRef]:
    """``[ObjectRef(obj, owner) for obj in object_ids]`` for ids already typed (a task's
    return refs, one list per submission): one runtime lookup and no ``__init__`` call per ref."""
    runtime = _runtime_mod._current
    refs = []
    for obj in object_ids:
        ref = _new_object(ObjectRef)
        ref._id = obj
        ref._owner = owner
        ref._runtime = runtime
        ref._token = None if runtime is None else runtime.add_local_ref(obj)
        ref._actor_task = False
        refs.append(ref)
    return refs


def mark_actor_task(refs: list[ObjectRef]) -> list[ObjectRef]:
    """``refs``, the returns of an actor method call, marked as such (``is_actor_task_ref``)."""
    for ref in refs:
        ref._actor_task = True
    return refs


def is_actor_task_ref(ref: ObjectRef) -> bool:
    """Whether ``ref`` is a return of an actor method call (here or in the process that
    pickled it); ``cancel(force=True)`` refuses those, as Ray does."""
    return ref._actor_task


def _rebuild_object_ref(object_id: str, owner: str | None) -> ObjectRef:
    return ObjectRef(object_id, owner)


def _rebuild_method_ref(object_id: str, owner: str | None) -> ObjectRef:
    ref = ObjectRef(object_id, owner)
    ref._actor_task = True
    return ref


def _serving_runtime() -> Runtime:
    return _runtime_mod.require()


def shape_returns(refs: list[ObjectRef], num_returns: int) -> Any:
    """What ``.remote()`` returns: one ref, ``None`` for ``num_returns=0``, else a list."""
    if num_returns == 1:
        return refs[0]
    if num_returns == 0:
        return None
    return list(refs)
