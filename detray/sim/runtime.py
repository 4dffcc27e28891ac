"""``SimRuntime``: the ``detray.runtime.Runtime`` protocol on a simulated cluster.

Owns: what each API call does in the simulator: ids (from the job, the
calling task attempt and a counter), payloads (arguments serialized with
``detray.serialization`` exactly as the real runtime does: small ones inline,
large ones put in the object store; top-level refs are dependencies, nested
refs stay refs and are kept alive), core specs (``detray.options``
builders), the events fed to the router, blocking (``usercode.block``) and
building results. Must not: decide anything (the core does), run user code
(the loop does), or apply reference changes outside a switch point (the
hooks only record).

Calls come from simulated user code: the driver (the program that called
``init``), task bodies and actor methods. A call from anywhere else (a user
thread) is refused with a ``RaySystemError``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import greenlet  # type: ignore[import-untyped]

from detray import settings as api_settings
from detray.core import events as E
from detray.core import ids
from detray.core.directory import ObjectStatus
from detray.core.ids import ActorID, NodeID, ObjectID, TaskID, WorkerID
from detray.core.records import builder
from detray.core.resources import as_floats
from detray.exceptions import GetTimeoutError, ObjectStoreFullError, RaySystemError, from_failure
from detray.object_ref import ObjectRef, typed_refs
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
from detray.runtime import CancelProbe, InitOptions, RuntimeContext, actor_name_taken, async_actor_cancel_probe
from detray.serialization import argument_label, serialize
from detray.sim import usercode
from detray.sim.cluster import ShutdownRequest, SimCluster
from detray.sim.config import ClusterSpec, SimSettings
from detray.sim.errors import WorkerKilled
from detray.sim.objects import freeze
from detray.sim.records import ArgSlot, Payload, UnitContext, Waiter
from detray.sim.trace import TraceLevel
from detray.sim.workers import CURRENT_CALL

DEFAULT_NAMESPACE = "default"


_build_submitted = builder(E.TaskSubmitted, "now", "stimulus_id", "spec", "node")  # positional: half the cost


def _return_ids(task: TaskID, count: int) -> tuple[ObjectID, ...]:
    """The ids of a task's ``count`` return objects."""
    if count == 1:  # most tasks: no generator
        return (ids.return_object_id(task, 1),)
    return tuple(ids.return_object_id(task, index) for index in range(1, count + 1))


class SimRuntime:
    """One connection of this process to a simulated cluster (see the module docstring)."""

    def __init__(self, options: InitOptions, spec: ClusterSpec, sim: SimSettings, seed: int) -> None:
        self.options = options
        self.seed = seed
        self.namespace = options.namespace or DEFAULT_NAMESPACE
        self.job = ids.job_id(1)
        self.cluster = SimCluster(spec, sim, seed, log_to_driver=options.log_to_driver)
        # The ledger's hooks, bound once: every ObjectRef made or dropped calls one.
        self._ref_added = self.cluster.ledger.ref_added
        self._ref_removed = self.cluster.ledger.ref_removed
        head = self.cluster.head
        self.driver_worker = WorkerID(f"{head}/driver")
        self.driver_context = UnitContext(
            kind="driver",
            worker_id=self.driver_worker,
            node=head,
            job=self.job,
            parent_key=ids.driver_task_id(self.job),
        )
        self._registered: dict[str, None] = {}
        self._last_registered: FunctionDescriptor | None = None
        self._argument_handles: list[ObjectRef] = []
        self._caller_seq: dict[tuple[WorkerID, ActorID], int] = {}
        self._driver_glet = greenlet.getcurrent()
        self.get_observer: Callable[[ObjectID, Any], None] | None = None
        """Called with (object id, stored value or None) for every value a ``get`` returns,
        in any unit (``detray.testing`` records them to compare runs)."""
        self._initialized = True
        self.cluster.start(self.driver_context)
        atexit.register(self._at_exit)

    # --- lifecycle ---------------------------------------------------------------------------------

    def is_initialized(self) -> bool:
        return self._initialized and not self.cluster.closed

    def shutdown(self) -> None:
        if not self._initialized:
            return
        self._initialized = False
        atexit.unregister(self._at_exit)
        if self.cluster.closed:
            return
        if greenlet.getcurrent() is not self._driver_glet or usercode.current_context() is not self.driver_context:
            raise RaySystemError("shutdown() must be called by the driver, not by a task or another thread")
        usercode.block(ShutdownRequest())

    def _at_exit(self) -> None:
        try:
            if self._initialized and not self.cluster.closed and greenlet.getcurrent() is self._driver_glet:
                self.shutdown()
        except BaseException:  # noqa: B036 -- nothing may escape at interpreter exit
            pass

    def address_info(self) -> Mapping[str, Any]:
        return {
            "address": f"sim://seed={self.seed}",
            "node_id": self.cluster.head,
            "mode": "sim",
            "seed": self.seed,
            "nodes": len(self.cluster.nodes),
            "gcs_address": self.cluster.plane.address,
            "redis_address": self.cluster.plane.address,
            "webui_url": None,
            "session_dir": None,
        }

    # --- the caller -------------------------------------------------------------------------------

    def _ctx(self) -> UnitContext:
        call = CURRENT_CALL.get(None)
        context = call if call is not None else usercode.current_context()
        if not isinstance(context, UnitContext):
            if not self.is_initialized():
                raise RaySystemError("the simulated cluster has shut down")
            raise RaySystemError(
                "detray (sim): API calls must come from the driver, a task or an actor "
                "(not from a user thread or outside the simulation)"
            )
        worker = context.worker
        if worker is not None and not worker.alive:
            raise WorkerKilled("the worker running this code died: its calls are discarded")
        ledger = self.cluster.ledger
        if ledger.refs or ledger.actors:  # ledger.pending(), inlined (once per API call)
            # A call into the runtime is a switch point: what the program's references
            # did so far counts before the runtime acts (a cancel must not free a
            # result whose ref was just created).
            self.cluster._switch_point()
        return context

    def _block(self, request: Any) -> Any:
        try:
            return usercode.block(request)
        except BaseException:
            if self.cluster.closed:
                self._initialized = False
            raise

    def _register(self, function: FunctionDescriptor) -> None:
        if function is self._last_registered:  # the same function submitted again: nothing to check
            return
        function_id = function.function_id()  # pickles once: an unpicklable function fails here
        self._last_registered = function
        if function_id not in self._registered:
            self._registered[function_id] = None
            payload = function.pickled()
            self.cluster._plane_write(lambda: None if self.cluster.plane.register_function(function_id, payload) else None)

    # --- arguments -----------------------------------------------------------------------------

    def _pack(
        self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], context: UnitContext
    ) -> tuple[tuple[ArgSlot, ...], tuple[tuple[str, ArgSlot], ...], tuple[ObjectID, ...], tuple[ObjectID, ...], list[ActorID]]:
        deps: list[ObjectID] = []
        held: list[ObjectID] = []
        actors: list[ActorID] = []
        slots = tuple(
            self._slot(value, argument_label(name, index), context, deps, held, actors)
            for index, value in enumerate(args)
        )
        kw_slots = tuple(
            (key, self._slot(value, argument_label(name, keyword=key), context, deps, held, actors))
            for key, value in kwargs.items()
        )
        return slots, kw_slots, tuple(deps), tuple(held), actors

    def _slot(
        self,
        value: Any,
        what: str,
        context: UnitContext,
        deps: list[ObjectID],
        held: list[ObjectID],
        actors: list[ActorID],
    ) -> ArgSlot:
        if isinstance(value, ObjectRef):
            deps.append(value.id)
            return ("r", value.id)
        serialized = serialize(value, what)
        if serialized.total_bytes > api_settings.INLINE_THRESHOLD_BYTES:
            obj = self._put_serialized(serialized, context, what)
            # Put on the caller's behalf: a handle counts it until the task holds it
            # (dropped after the submission, so the object is freed once the task is done).
            self._argument_handles.append(ObjectRef(obj, context.worker_id))
            deps.append(obj)
            return ("r", obj)
        stored = freeze(serialized)
        held.extend(stored.contained_refs)
        actors.extend(stored.contained_actors)
        return ("v", stored)

    # --- tasks and actors ------------------------------------------------------------------------

    def submit_task(
        self, function: FunctionDescriptor, args: tuple[Any, ...], kwargs: dict[str, Any], options: TaskOptions
    ) -> list[ObjectRef]:
        context = self._ctx()
        cluster = self.cluster
        self._register(function)
        context.submit_count += 1
        task = ids.task_id(context.job, context.parent_key, context.submit_count)
        owner = context.worker_id
        return_ids = _return_ids(task, options.num_returns)
        if args or kwargs:
            slots, kw_slots, deps, held, actors = self._pack(options.name, args, kwargs, context)
        else:
            slots, kw_slots, deps, held, actors = (), (), (), (), []
        # function, method, args, kwargs, num_returns, held_refs, held_actors (positional: a third of the cost)
        payload = Payload(function, None, slots, kw_slots, options.num_returns, held, tuple(actors))
        spec = task_spec(options, task, context.job, owner, deps, return_ids)  # task_id, job_id, owner, args, return_ids
        cluster.executor.add_payload(task, payload, context)
        return self._submit(cluster, context, task, spec, return_ids, owner, options.name)

    def _submit(self, cluster: Any, context: Any, task: Any, spec: Any, return_ids: Any, owner: Any, name: str) -> list[ObjectRef]:
        """The common tail of task and actor-task submission: count the return refs
        (before the task exists), trace it, and hand it to the core."""
        owner_of = cluster.owner_of
        for obj in return_ids:
            owner_of[obj] = owner
        refs = typed_refs(return_ids, owner)
        cluster._switch_point()  # the return refs count before the task exists
        if cluster.trace.level >= TraceLevel.DEBUG:
            cluster.emit(context.node, "task.submitted", level=TraceLevel.DEBUG, task=task, name=name, owner=owner)
        cluster.feed(_build_submitted(cluster.env.now, task, spec, context.node))
        if self._argument_handles:
            self._argument_handles.clear()
        return refs

    def create_actor(
        self,
        cls: FunctionDescriptor,
        meta: ActorClassMeta,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: ActorOptions,
    ) -> ActorID:
        context = self._ctx()
        cluster = self.cluster
        self._register(cls)
        namespace = options.namespace or self.namespace
        if options.name is not None:
            found = self.lookup_actor(options.name, namespace)
            if found is not None:
                if options.get_if_exists:
                    return found[0]
                raise ValueError(actor_name_taken(options.name, namespace))
        context.submit_count += 1
        creation = ids.task_id(context.job, context.parent_key, context.submit_count)
        owner = context.worker_id
        slots, kw_slots, deps, held, actors = self._pack(f"{cls.qualname}.__init__", args, kwargs, context)
        spec = actor_spec(
            options, creation_task_id=creation, job_id=context.job, owner=owner, args=deps, default_namespace=namespace
        )
        actor = spec.actor_id
        if options.name is not None:
            if not self._claim_name(namespace, options.name, actor):
                raise ValueError(actor_name_taken(options.name, namespace))
        executor = cluster.executor
        executor.actor_meta[actor] = meta
        executor.actor_specs[actor] = spec
        executor.add_payload(
            creation,
            Payload(
                function=cls, method=None, args=slots, kwargs=kw_slots, num_returns=0, held_refs=held, held_actors=tuple(actors)
            ),
            context,
        )
        cluster.emit(context.node, "actor.created", actor=actor, name=options.name or "", owner=owner)
        executor._actor_record(actor, "PENDING_CREATION", None, None, 0)
        cluster.feed(E.ActorCreated(now=cluster.env.now, stimulus_id=creation, spec=spec, node=context.node))
        self._argument_handles.clear()
        return actor

    def _claim_name(self, namespace: str, name: str, actor: ActorID) -> bool:
        """Claim ``name`` in the name table; a name still held by a dead actor (its
        release not carried out yet) is taken over."""
        cluster = self.cluster
        plane = cluster.plane
        if cluster.plane_call(lambda: plane.claim_actor_name(namespace, name, actor)):
            return True
        holder = cluster.plane_call(lambda: plane.lookup_actor_name(namespace, name))
        if holder is None or self._actor_alive(ActorID(holder)):
            return False
        cluster.plane_call(lambda: plane.release_actor_name(namespace, name, holder))
        return bool(cluster.plane_call(lambda: plane.claim_actor_name(namespace, name, actor)))

    def _actor_alive(self, actor: ActorID) -> bool:
        state = self.cluster.router.actors.state(actor)
        return state is not None and state.name != "DEAD"

    def submit_actor_task(
        self, actor: ActorID, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], options: MethodOptions
    ) -> list[ObjectRef]:
        context = self._ctx()
        cluster = self.cluster
        executor = cluster.executor
        actor_spec_ = executor.actor_specs.get(actor)
        if actor_spec_ is None:
            raise ValueError(f"actor {actor} is unknown to this simulated cluster")
        context.submit_count += 1
        task = ids.task_id(context.job, context.parent_key, context.submit_count)
        owner = context.worker_id
        return_ids = _return_ids(task, options.num_returns)
        if args or kwargs:
            slots, kw_slots, deps, held, actors = self._pack(options.name, args, kwargs, context)
        else:
            slots, kw_slots, deps, held, actors = (), (), (), (), []
        key = (owner, actor)
        seq = self._caller_seq.get(key, 0) + 1
        self._caller_seq[key] = seq
        spec = actor_task_spec(
            options,
            actor=actor,
            actor_max_task_retries=actor_spec_.max_task_retries,
            task_id=task,
            job_id=context.job,
            owner=owner,
            args=deps,
            return_ids=return_ids,
            caller_seq=seq,
        )
        executor.add_payload(
            task,
            Payload(
                function=None,
                method=method,
                args=slots,
                kwargs=kw_slots,
                num_returns=options.num_returns,
                held_refs=held,
                held_actors=tuple(actors),
            ),
            context,
        )
        executor._call_opened(actor)
        return self._submit(cluster, context, task, spec, return_ids, owner, options.name)

    def lookup_actor(self, name: str, namespace: str | None) -> tuple[ActorID, ActorClassMeta] | None:
        self._ctx()
        cluster = self.cluster
        space = namespace or self.namespace
        holder = cluster.plane_call(lambda: cluster.plane.lookup_actor_name(space, name))
        if holder is None:
            return None
        actor = ActorID(holder)
        if not self._actor_alive(actor):
            return None
        return actor, cluster.executor.actor_meta[actor]

    def kill(self, actor: ActorID, no_restart: bool) -> None:
        self._ctx()
        cluster = self.cluster
        cluster.emit(None, "actor.kill_requested", actor=actor, no_restart=no_restart)
        cluster.feed(E.ActorKillRequested(now=cluster.env.now, stimulus_id=cluster.sid("kill"), actor=actor, no_restart=no_restart))

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self._ctx()
        if ids.is_put(ref.id):
            return
        cluster = self.cluster
        payloads = cluster.executor.payloads
        targets = [ids.creating_task(ref.id)]
        seen = {targets[0]}
        index = 0
        while recursive and index < len(targets):
            payload = payloads.get(targets[index])
            index += 1
            children = () if payload is None or payload.children is None else payload.children
            for child in children:
                if child not in seen:
                    seen.add(child)
                    targets.append(child)
        for task in targets:
            cluster.emit(None, "task.cancel_requested", task=task, force=force)
            cluster.feed(
                E.CancelRequested(now=cluster.env.now, stimulus_id=cluster.sid("cancel"), task=task, force=force, recursive=recursive)
            )

    # --- objects -----------------------------------------------------------------------------

    def put(self, value: Any) -> ObjectRef:
        context = self._ctx()
        serialized = serialize(value, "the value given to put()")
        obj = self._put_serialized(serialized, context, "put()")
        ref = ObjectRef(obj, context.worker_id)
        status = self.cluster.router.directory.status(obj)
        if status is ObjectStatus.FAILED:
            failure = self.cluster.router.directory.failure(obj)
            if failure is not None:
                raise from_failure(failure, obj)
            raise ObjectStoreFullError(f"put of {serialized.total_bytes} bytes does not fit")
        return ref

    def _put_serialized(self, serialized: Any, context: UnitContext, what: str) -> ObjectID:
        cluster = self.cluster
        context.put_count += 1
        obj = ids.put_object_id(context.parent_key, context.put_count)
        owner = context.worker_id
        stored = freeze(serialized)
        cluster.owner_of[obj] = owner
        cluster.values.store(obj, stored)
        cluster.values.add_copy(obj, context.node)
        if stored.contained_refs:
            cluster.executor.hold_refs(stored.contained_refs)
        if stored.contained_actors:
            cluster.executor.hold_actors(stored.contained_actors)
        cluster.emit(context.node, "object.put", obj=obj, size=stored.size_bytes)
        cluster.feed(
            E.ObjectPut(
                now=cluster.env.now, stimulus_id=obj, obj=obj, node=context.node, size_bytes=stored.size_bytes, owner=owner
            )
        )
        return obj

    def _request(
        self, context: UnitContext, kind: str, objects: tuple[ObjectID, ...], required: int, fetch: bool, timeout_s: float | None
    ) -> Waiter:
        cluster = self.cluster
        waiter_id = cluster.new_waiter_id(kind)
        waiter = Waiter(
            waiter_id=waiter_id,
            kind=kind,
            objects=objects,
            node=context.node,
            num_required=required,
            fetch=fetch,
            timeout_s=timeout_s,
        )
        cluster.waiters[waiter_id] = waiter
        cluster.feed(
            E.ObjectsRequested(
                now=cluster.env.now,
                stimulus_id=waiter_id,
                waiter=waiter_id,
                node=context.node,
                objects=objects,
                num_required=required,
                fetch=fetch,
            )
        )
        return waiter

    def get(self, refs: Sequence[ObjectRef], timeout_s: float | None) -> list[Any]:
        context = self._ctx()
        wanted = [ref._id for ref in refs]  # the ids once (not two ``id`` property calls per ref)
        objects = tuple(dict.fromkeys(wanted))
        waiter = self._request(context, "get", objects, len(objects), True, timeout_s)
        if not waiter.done:
            if timeout_s == 0:
                self.cluster.executor._drop_waiter(waiter)
                raise GetTimeoutError("Get timed out: some object(s) not ready.")
            self._block(waiter)
        if waiter.timed_out:
            raise GetTimeoutError(f"Get timed out after {timeout_s} s: some object(s) not ready.")
        executor = self.cluster.executor
        observer = self.get_observer
        if observer is not None:
            for ref in refs:
                observer(ref.id, executor.stored_for(waiter, ref.id))
        return executor.values_for(waiter, wanted)

    def wait(
        self, refs: Sequence[ObjectRef], num_returns: int, timeout_s: float | None, fetch_local: bool
    ) -> tuple[list[ObjectRef], list[ObjectRef]]:
        context = self._ctx()
        objects = tuple(ref.id for ref in refs)
        waiter = self._request(context, "wait", objects, num_returns, fetch_local, timeout_s)
        if not waiter.done:
            if timeout_s == 0:
                self.cluster.executor._drop_waiter(waiter)
                waiter.timed_out = True
            else:
                self._block(waiter)
        if waiter.timed_out or waiter.wake is None:
            ready_ids = self._ready_now(objects, context.node, fetch_local)
        else:
            ready_ids = set(waiter.wake.ready)
            ready_ids.update(obj for obj, _failure in waiter.wake.failed)
        ready = [ref for ref in refs if ref.id in ready_ids]
        return ready, [ref for ref in refs if ref.id not in ready_ids]

    def _ready_now(self, objects: tuple[ObjectID, ...], node: NodeID, fetch: bool) -> set[ObjectID]:
        directory = self.cluster.router.directory
        ready = set()
        for obj in objects:
            status = directory.status(obj)
            if status in (ObjectStatus.FAILED, ObjectStatus.FREED):
                ready.add(obj)
            elif status is ObjectStatus.AVAILABLE and (not fetch or node in directory.locations(obj)):
                ready.add(obj)
        return ready

    def future(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        """A ``concurrent.futures.Future`` the loop completes when ``ref`` is ready (or failed).

        Returns at once, as Ray's does. The future is made inside the calling unit, so its
        condition is a cooperative lock (``coop``): ``result(timeout=)``, ``exception()``,
        ``concurrent.futures.wait`` and ``as_completed`` block only the calling unit, in
        virtual time (timeouts count virtual seconds), and resume when the loop sets the
        result, in the loop's fixed order: futures complete in virtual completion order,
        the same in every run of a seed. A wait that nothing can end is a ``DeadlockError``
        naming the future's object. While user threads run, such a wait is a real one
        (see ``coop``).
        """
        context = self._ctx()
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        waiter = self._request(context, "future", (ref.id,), 1, True, None)
        waiter.future = future
        if waiter.done:
            future.set_result(self.cluster.executor.value_for(waiter, ref.id))
        return future

    def awaitable(self, ref: ObjectRef) -> Awaitable[Any]:
        context = self._ctx()
        actor = context.actor
        if actor is not None and actor.loop is not None:
            future = actor.loop.create_future()
            waiter = self._request(context, "await", (ref.id,), 1, True, None)
            if waiter.done:
                future.set_result(self.cluster.executor.value_for(waiter, ref.id))
            else:
                waiter.future = future
                waiter.actor = actor
            return future
        return self._blocking_value(ref)

    async def _blocking_value(self, ref: ObjectRef) -> Any:
        # Outside an async actor (e.g. asyncio.run in the driver) awaiting blocks the caller.
        return self.get([ref], None)[0]

    # --- reference hooks ----------------------------------------------------------------------

    def add_local_ref(self, object_id: ObjectID) -> object:
        self._ref_added(object_id)
        return None

    def remove_local_ref(self, object_id: ObjectID, token: object) -> None:
        self._ref_removed(object_id)

    def ref_escaped(self, object_id: ObjectID) -> None:
        # Pickled outside ``serialize``: its copies cannot be counted, so it stays pinned.
        self.cluster.ledger.ref_added(object_id)

    def add_actor_handle(self, actor_id: ActorID) -> object:
        self.cluster.ledger.actor_added(actor_id)
        return None

    def remove_actor_handle(self, actor_id: ActorID, token: object) -> None:
        self.cluster.ledger.actor_removed(actor_id)

    # --- cluster ------------------------------------------------------------------------------

    def cluster_resources(self) -> dict[str, float]:
        return self.cluster.resources_of("total")

    def available_resources(self) -> dict[str, float]:
        return self.cluster.resources_of("available")

    def nodes(self) -> list[dict[str, Any]]:
        cluster = self.cluster
        out = []
        for node, rec in cluster.nodes.items():
            alive = rec.up and cluster.router.is_live(node)
            out.append(
                {
                    "NodeID": node,
                    "Alive": alive,
                    "alive": alive,
                    "NodeName": rec.spec.name or node,
                    "NodeManagerAddress": node,
                    "NodeManagerHostname": rec.spec.name or node,
                    "Resources": dict(rec.spec.resources) if alive else {},
                    "ObjectStoreMemory": rec.spec.object_store_bytes,
                    "Incarnation": rec.incarnation,
                    "Labels": {},
                }
            )
        return out

    def get_gpu_ids(self) -> list[int]:
        return list(self._ctx().gpu_ids)

    def get_runtime_context(self) -> RuntimeContext:
        context = self._ctx()
        actor = context.actor
        actor_id = None if actor is None else actor.actor_id
        spec = None if actor_id is None else self.cluster.executor.actor_specs.get(actor_id)
        resources: dict[str, float] = {}
        if context.spec is not None:
            if actor is not None and spec is not None:
                resources = as_floats(spec.creation.resources)
            else:
                resources = as_floats(context.spec.resources)
        task: TaskID | None = context.task_id
        return RuntimeContext(
            job_id=context.job,
            node_id=context.node,
            worker_id=context.worker_id,
            namespace=self.namespace,
            task_id=task,
            actor_id=actor_id,
            actor_name=None if spec is None else spec.name,
            actor_meta=None if actor is None else actor.meta,
            assigned_resources=resources,
            gpu_ids=context.gpu_ids,
            was_current_actor_reconstructed=actor is not None and actor.restarts > 0,
            cancel_probe=_cancel_probe(context),
        )


def _cancel_probe(context: UnitContext) -> CancelProbe | None:
    """``is_canceled()`` of the calling unit: its run's flag (set by ``interrupt_task``)."""
    if context.kind == "driver":
        return None
    if context.actor is not None and context.actor.loop is not None:
        return async_actor_cancel_probe
    run = context.run
    if run is None:
        return _never_cancelled
    return lambda: run.cancel_requested


def _never_cancelled() -> bool:
    return False


