"""``RealRuntime``: the ``detray.runtime.Runtime`` protocol in a driver or worker process of a real cluster.

Owns: what each API call does in this process: ids (from the job, the
calling task attempt and a counter, as in the simulator), serializing
arguments and values (small ones inline in the message, large ones written
straight into the node's shared-memory store by this process: one copy),
core specs (``detray.options`` builders), the messages to the raylet, and
turning replies into values (zero-copy reads from the store). The caller
(driver, or the task running on this thread) is a ``Caller`` in a context
variable, so threads of a threaded actor and coroutines of an async actor
each submit under their own task. Must not: decide anything (the raylet's
core does), or block in the reference hooks.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextvars
import itertools
import pickle
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from detray import settings as api_settings
from detray.controlplane import ControlPlaneUnavailable
from detray.core import ids
from detray.core.errors import ErrorKind, Failure
from detray.core.ids import ActorID, JobID, NodeID, ObjectID, TaskID, WorkerID
from detray.exceptions import ActorDiedError, GetTimeoutError, ObjectLostError, RaySystemError, from_failure
from detray.object_ref import ObjectRef
from detray.options import (
    ActorClassMeta,
    ActorOptions,
    FunctionDescriptor,
    MethodOptions,
    TaskOptions,
    actor_spec,
    actor_task_spec,
    task_spec,
)
from detray.real import protocol as P
from detray.real.client import RayletConnection
from detray.real.shm_client import ObjectNotInStoreError, StoreClient
from detray.runtime import CancelProbe, RuntimeContext, StoredError, actor_name_taken
from detray.serialization import SerializedObject, argument_label, deserialize, serialize

DEFAULT_NAMESPACE = "default"
LOST_RETRIES_MAX = 3
"""Rounds of "this object's file is gone, rebuild it" a get goes through before reporting it lost."""
PICKLE_PROTOCOL = 5


class Caller:
    """Who is calling the API: the driver, or one task attempt in a worker."""

    __slots__ = (
        "worker_id",
        "job",
        "parent_key",
        "submits",
        "puts",
        "task_id",
        "actor_id",
        "actor_name",
        "actor_meta",
        "resources",
        "gpu_ids",
        "name",
        "restarted",
        "cancel_probe",
    )

    def __init__(
        self,
        worker_id: WorkerID,
        job: JobID,
        parent_key: TaskID,
        *,
        task_id: TaskID | None = None,
        actor_id: ActorID | None = None,
        actor_name: str | None = None,
        actor_meta: ActorClassMeta | None = None,
        resources: Mapping[str, float] | None = None,
        gpu_ids: Sequence[int] = (),
        name: str = "",
        restarted: bool = False,
        cancel_probe: CancelProbe | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.job = job
        self.parent_key = parent_key
        self.submits = itertools.count(1)
        self.puts = itertools.count(1)
        self.task_id = task_id
        self.actor_id = actor_id
        self.actor_name = actor_name
        self.actor_meta = actor_meta
        self.resources = dict(resources or {})
        self.gpu_ids = list(gpu_ids)
        self.name = name
        self.restarted = restarted
        self.cancel_probe = cancel_probe
        """``is_canceled()`` of the attempt (``None``: the driver, which may not ask)."""


CALLER: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("detray_real_caller", default=None)


class RealRuntime:
    """One process's connection to a real cluster (see the module docstring)."""

    def __init__(
        self,
        conn: RayletConnection,
        store: StoreClient,
        plane: Any,
        *,
        node: NodeID,
        job: JobID,
        namespace: str,
        default_caller: Caller,
        address_info: Mapping[str, Any],
        on_shutdown: Callable[[], None] | None = None,
    ) -> None:
        self.conn = conn
        self.store = store
        self.plane = plane
        self.node = node
        self.job = job
        self.namespace = namespace
        self.default_caller = default_caller
        self._address_info = dict(address_info)
        self._on_shutdown = on_shutdown
        self._registered: set[str] = set()
        self._register_lock = threading.Lock()
        self._initialized = True
        self._caller_seq: dict[tuple[WorkerID, ActorID], int] = {}
        self._seq_lock = threading.Lock()
        self.function_cache: dict[str, Any] = {}
        if on_shutdown is not None:
            atexit.register(self.shutdown)

    # --- lifecycle ---------------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        """True until ``shutdown``, also when the cluster died meanwhile: then calls raise
        ``RaySystemError`` saying why (rather than a new cluster starting unnoticed)."""
        return self._initialized

    def shutdown(self) -> None:
        if not self._initialized:
            return
        self._initialized = False
        if self._on_shutdown is not None:
            atexit.unregister(self.shutdown)
            self._on_shutdown()

    def address_info(self) -> Mapping[str, Any]:
        return dict(self._address_info)

    # --- the caller -------------------------------------------------------------------------------

    def _caller(self) -> Caller:
        if not self._initialized:
            raise RaySystemError("detray has been shut down: call detray.init() again")
        if self.conn.closed:
            raise RaySystemError(self.conn.close_reason)
        caller = CALLER.get()
        return caller if caller is not None else self.default_caller

    def _register(self, function: FunctionDescriptor) -> str:
        function_id = function.function_id()  # pickles once: an unpicklable function fails here
        if function_id not in self._registered:
            with self._register_lock:
                if function_id not in self._registered:
                    self.plane.register_function(function_id, function.pickled())
                    self._registered.add(function_id)
        return function_id

    # --- arguments -------------------------------------------------------------------------------

    def _pack(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], caller: Caller, keep: list[ObjectRef]
    ) -> tuple[list[Any], list[Any], list[ObjectID], list[ObjectID], list[ActorID]]:
        deps: list[ObjectID] = []
        held: list[ObjectID] = []
        actors: list[ActorID] = []
        slots = [self._slot(value, argument_label(name, i), caller, deps, held, actors, keep) for i, value in enumerate(args)]
        kw_slots = [
            (key, self._slot(value, argument_label(name, keyword=key), caller, deps, held, actors, keep))
            for key, value in kwargs.items()
        ]
        return slots, kw_slots, deps, held, actors

    def _slot(
        self,
        value: Any,
        what: str,
        caller: Caller,
        deps: list[ObjectID],
        held: list[ObjectID],
        actors: list[ActorID],
        keep: list[ObjectRef],
    ) -> tuple[Any, ...]:
        if isinstance(value, ObjectRef):
            deps.append(value.id)
            return ("r", value.id)
        serialized = serialize(value, what)
        if serialized.total_bytes > api_settings.INLINE_THRESHOLD_BYTES:
            keep.append(self._put_serialized(serialized, caller))  # counted until the task holds it
            obj = keep[-1].id
            deps.append(obj)
            return ("r", obj)
        held.extend(serialized.contained_refs)
        actors.extend(serialized.contained_actors)
        return ("v", serialized.inband, [bytes(b) for b in serialized.buffers])

    # --- tasks and actors -------------------------------------------------------------------------

    def submit_task(
        self, function: FunctionDescriptor, args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> list[ObjectRef]:
        caller = self._caller()
        function_id = self._register(function)
        task = ids.task_id(caller.job, caller.parent_key, next(caller.submits))
        owner = caller.worker_id
        return_ids = tuple(ids.return_object_id(task, index) for index in range(1, options.num_returns + 1))
        keep: list[ObjectRef] = []
        slots, kw_slots, deps, held, actors = self._pack(options.name, args, kwargs, caller, keep)
        spec = task_spec(options, task_id=task, job_id=caller.job, owner=owner, args=tuple(deps), return_ids=return_ids)
        data = pickle.dumps(
            (function_id, None, slots, kw_slots, options.num_returns, dict(options.env_vars)), protocol=PICKLE_PROTOCOL
        )
        with self.conn.lock:  # the refs' counts go in this batch, right before the SUBMIT
            refs = [ObjectRef(obj, owner) for obj in return_ids]
            self.conn.post((P.SUBMIT, spec, data, tuple(held), tuple(actors), caller.task_id, False))
        return refs

    def create_actor(
        self,
        cls: FunctionDescriptor,
        meta: ActorClassMeta,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: ActorOptions,
    ) -> ActorID:
        caller = self._caller()
        function_id = self._register(cls)
        namespace = options.namespace or self.namespace
        creation = ids.task_id(caller.job, caller.parent_key, next(caller.submits))
        owner = caller.worker_id
        keep: list[ObjectRef] = []
        slots, kw_slots, deps, held, actors = self._pack(f"{cls.qualname}.__init__", args, kwargs, caller, keep)
        spec = actor_spec(
            options, creation_task_id=creation, job_id=caller.job, owner=owner, args=tuple(deps), default_namespace=namespace
        )
        data = pickle.dumps((function_id, None, slots, kw_slots, 0, dict(options.env_vars)), protocol=PICKLE_PROTOCOL)
        message = (P.ACTOR, None, spec, data, meta, tuple(held), tuple(actors), options.get_if_exists, caller.task_id)
        if options.name is None:
            self.conn.post(message)
            return spec.actor_id
        answer, holder, _meta = self.conn.call(lambda req: (P.ACTOR, req, *message[2:]))
        if answer == "unavailable":
            raise ControlPlaneUnavailable(self._address_info.get("redis_address", "?"), holder)
        if answer == "exists":
            return ActorID(holder)
        if answer == "taken":
            raise ValueError(actor_name_taken(options.name, namespace))
        return spec.actor_id

    def submit_actor_task(
        self, actor: ActorID, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: MethodOptions
    ) -> list[ObjectRef]:
        caller = self._caller()
        task = ids.task_id(caller.job, caller.parent_key, next(caller.submits))
        owner = caller.worker_id
        return_ids = tuple(ids.return_object_id(task, index) for index in range(1, options.num_returns + 1))
        keep: list[ObjectRef] = []
        slots, kw_slots, deps, held, actors = self._pack(options.name, args, kwargs, caller, keep)
        key = (owner, actor)
        with self._seq_lock:
            seq = self._caller_seq.get(key, 0) + 1
            self._caller_seq[key] = seq
        spec = actor_task_spec(
            options,
            actor=actor,
            actor_max_task_retries=0,  # the raylet puts in the actor's when the method has none
            task_id=task,
            job_id=caller.job,
            owner=owner,
            args=tuple(deps),
            return_ids=return_ids,
            caller_seq=seq,
        )
        data = pickle.dumps((None, method, slots, kw_slots, options.num_returns, {}), protocol=PICKLE_PROTOCOL)
        inherit = options.max_task_retries is None
        with self.conn.lock:  # the refs' counts go in this batch, right before the SUBMIT
            refs = [ObjectRef(obj, owner) for obj in return_ids]
            self.conn.post((P.SUBMIT, spec, data, tuple(held), tuple(actors), caller.task_id, inherit))
        return refs

    def lookup_actor(self, name: str, namespace: str | None) -> tuple[ActorID, ActorClassMeta] | None:
        self._caller()
        found = self.conn.call(lambda req: (P.LOOKUP, req, name, namespace or self.namespace))
        if found is None:
            return None
        if found[0] == "unavailable":
            raise ControlPlaneUnavailable(self._address_info.get("redis_address", "?"), found[1])
        return ActorID(found[0]), found[1]

    def kill(self, actor: ActorID, no_restart: bool) -> None:
        self._caller()
        self.conn.send((P.KILL, actor, no_restart))

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self._caller()
        if ids.is_put(ref.id):
            return
        self.conn.send((P.CANCEL, ids.creating_task(ref.id), force, recursive))

    # --- objects ---------------------------------------------------------------------------------

    def put(self, value: Any) -> ObjectRef:
        caller = self._caller()
        serialized = serialize(value, "the value given to put()")
        return self._put_serialized(serialized, caller)

    def _put_serialized(self, serialized: SerializedObject, caller: Caller) -> ObjectRef:
        obj = ids.put_object_id(caller.parent_key, next(caller.puts))
        owner = caller.worker_id
        wire, size = self.store_value(obj, serialized, is_error=False)
        with self.conn.lock:  # the ref's count goes in this batch, right before the PUT
            ref = ObjectRef(obj, owner)
            self.conn.post(
                (P.PUT, obj, owner, wire, size, tuple(serialized.contained_refs), tuple(serialized.contained_actors))
            )
        return ref

    def store_value(self, obj: ObjectID, serialized: SerializedObject, *, is_error: bool) -> tuple[P.Wire, int]:
        """The wire form of a new object's value: inline when small, else written to the store."""
        total = serialized.total_bytes
        if total <= api_settings.INLINE_THRESHOLD_BYTES:
            return P.inline(serialized, is_error), total
        size = self.store.create(obj, serialized, is_error=is_error)
        return (P.IN_STORE_ERROR if is_error else P.IN_STORE), size

    def _request(self, kind: str, objects: tuple[ObjectID, ...], required: int, fetch: bool) -> tuple[int, concurrent.futures.Future[Any]]:
        return self.conn.request(lambda req: (P.REQUEST, req, kind, objects, required, fetch))

    def _answer(self, req: int, kind: str, future: concurrent.futures.Future[Any], timeout_s: float | None) -> Any:
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            self.conn.send((P.UNREQUEST, req, kind))
            return future.result()  # the answer it had, or the timeout answer
        except BaseException:  # interrupted (Ctrl-C, a cancelled task): withdraw the request
            if not self.conn.closed:
                self.conn.send((P.UNREQUEST, req, kind))
            raise

    def get(self, refs: Sequence[ObjectRef], timeout_s: float | None) -> list[Any]:
        self._caller()
        objects = tuple(dict.fromkeys(ref.id for ref in refs))
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        values: dict[ObjectID, P.Wire] = {}
        wanted = objects
        for _ in range(LOST_RETRIES_MAX + 1):
            req, future = self._request("get", wanted, len(wanted), True)
            left_s = None if deadline is None else max(0.0, deadline - time.monotonic())
            answer = self._answer(req, "get", future, left_s)
            if answer[0] == "timeout":
                raise GetTimeoutError(f"Get timed out after {timeout_s} s: some object(s) not ready.")
            values.update(answer[1])
            # A store file that vanished (deleted, or its node's memory lost) is reported;
            # the core rebuilds the object from lineage and the next round waits for it.
            lost = tuple(obj for obj in wanted if values[obj][0] == "s" and not self.store.contains(obj))
            if not lost:
                break
            self.conn.send((P.LOST, lost))
            wanted = lost
        decoded = {obj: self.decode(obj, wire) for obj, wire in values.items()}
        return [decoded[ref.id] for ref in refs]

    def decode(self, obj: ObjectID, wire: P.Wire) -> Any:
        """The value (or ``StoredError``) of ``obj`` from its wire form."""
        kind = wire[0]
        if kind == "i":
            value = deserialize(P.from_inline(wire), read_only=True)
            return StoredError(value) if wire[3] else value
        if kind == "s":
            try:
                stored = self.store.get_stored(obj)
            except ObjectNotInStoreError:
                return StoredError(ObjectLostError(obj, detail="its file is gone from the node's object store"))
            value = deserialize(stored.serialized, read_only=True)
            return StoredError(value) if stored.is_error else value
        failure: Failure = wire[1]
        cause = wire[2]
        if cause is not None and failure.kind is ErrorKind.ACTOR_DIED:
            return StoredError(ActorDiedError(deserialize(P.from_inline(cause))))
        return StoredError(from_failure(failure, obj))

    def wait(
        self, refs: Sequence[ObjectRef], num_returns: int, timeout_s: float | None, fetch_local: bool
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        self._caller()
        objects = tuple(ref.id for ref in refs)
        req, future = self._request("wait", objects, num_returns, fetch_local)
        answer = self._answer(req, "wait", future, timeout_s)
        ready_ids = set(answer[1])
        ready = [ref for ref in refs if ref.id in ready_ids]
        not_ready = [ref for ref in refs if ref.id not in ready_ids]
        return ready, not_ready

    def future(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        self._caller()
        result: concurrent.futures.Future[Any] = concurrent.futures.Future()
        _, source = self._request("await", (ref.id,), 1, True)
        obj = ref.id

        def settle(done: concurrent.futures.Future[Any]) -> None:
            error = done.exception()
            if error is not None:
                result.set_exception(error)
                return
            try:
                result.set_result(self.decode(obj, done.result()[1][obj]))
            except BaseException as exc:  # noqa: BLE001 -- delivered to the waiter
                result.set_exception(exc)

        source.add_done_callback(settle)
        return result

    def awaitable(self, ref: ObjectRef) -> Awaitable[Any]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError("await of an ObjectRef needs a running event loop") from None
        return asyncio.wrap_future(self.future(ref))

    # --- reference hooks (cheap, never raise) ---------------------------------------------------------

    def add_local_ref(self, object_id: ObjectID) -> object:
        self.conn.added.append(object_id)
        return None

    def remove_local_ref(self, object_id: ObjectID, token: object) -> None:
        if self._initialized:
            self.conn.removed.append(object_id)

    def ref_escaped(self, object_id: ObjectID) -> None:
        self.conn.escaped.append(object_id)

    def add_actor_handle(self, actor_id: ActorID) -> object:
        self.conn.actors_added.append(actor_id)
        return None

    def remove_actor_handle(self, actor_id: ActorID, token: object) -> None:
        if self._initialized:
            self.conn.actors_removed.append(actor_id)

    # --- cluster ---------------------------------------------------------------------------------

    def _info(self, what: str) -> Any:
        self._caller()
        return self.conn.call(lambda req: (P.INFO, req, what))

    def cluster_resources(self) -> dict[str, float]:
        return dict(self._info("cluster"))

    def available_resources(self) -> dict[str, float]:
        return dict(self._info("available"))

    def nodes(self) -> list[dict[str, Any]]:
        return list(self._info("nodes"))

    def get_gpu_ids(self) -> list[int]:
        return list(self._caller().gpu_ids)

    def get_runtime_context(self) -> RuntimeContext:
        caller = self._caller()
        return RuntimeContext(
            job_id=caller.job,
            node_id=self.node,
            worker_id=caller.worker_id,
            namespace=self.namespace,
            task_id=caller.task_id,
            actor_id=caller.actor_id,
            actor_name=caller.actor_name,
            actor_meta=caller.actor_meta,
            assigned_resources=caller.resources,
            gpu_ids=caller.gpu_ids,
            was_current_actor_reconstructed=caller.restarted,
            cancel_probe=caller.cancel_probe,
        )
