"""A tiny eager Runtime for API tests: runs tasks at submission, in this process.

It implements the ``detray.runtime.Runtime`` protocol just enough to check the
API layer end to end: values go through ``serialize``/``deserialize`` (copy
semantics, contained refs), a task's exception is stored as a ``RayTaskError``,
and the reference hooks are recorded so tests can assert on them. Objects
listed in ``never_ready`` stay pending forever (for timeouts).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections import Counter
from typing import Any

from detray import serialization
from detray.core import ids
from detray.core.ids import ActorID, ObjectID
from detray.exceptions import GetTimeoutError, RayError, RayTaskError
from detray.object_ref import ObjectRef
from detray.options import ActorClassMeta, ActorOptions, FunctionDescriptor, MethodOptions, TaskOptions
from detray.runtime import RuntimeContext, StoredError


class FakeRuntime:
    def __init__(self) -> None:
        self.job = ids.job_id(1)
        self.driver_task = ids.driver_task_id(self.job)
        self.task_counter = 0
        self.put_counter = 0
        self.store: dict[ObjectID, serialization.SerializedObject | StoredError] = {}
        self.never_ready: set[ObjectID] = set()
        self.submitted: list[tuple[str, TaskOptions]] = []
        self.actors: dict[ActorID, Any] = {}
        self.actor_meta: dict[ActorID, ActorClassMeta] = {}
        self.actor_options: dict[ActorID, ActorOptions] = {}
        self.names: dict[tuple[str, str], ActorID] = {}
        self.killed: list[tuple[ActorID, bool]] = []
        self.cancelled: list[tuple[ObjectID, bool, bool]] = []
        self.local_refs: Counter[str] = Counter()
        self.actor_handles: Counter[str] = Counter()
        self.escaped: list[ObjectID] = []
        self.initialized = True
        self.init_options: Any = None

    # --- lifecycle ---
    def is_initialized(self) -> bool:
        return self.initialized

    def shutdown(self) -> None:
        self.initialized = False

    def address_info(self) -> dict[str, Any]:
        return {"address": "fake", "node_id": ids.node_id(0)}

    # --- helpers ---
    def _next_task(self) -> ids.TaskID:
        self.task_counter += 1
        return ids.task_id(self.job, self.driver_task, self.task_counter)

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, ObjectRef):
            stored = self.store[value.id]
            if isinstance(stored, StoredError):
                raise stored.error
            return serialization.deserialize(stored)
        return value

    def _run(self, name: str, call: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
             return_ids: list[ObjectID]) -> None:
        try:
            args = tuple(self._resolve(serialization.deserialize(serialization.serialize(a)))
                         for a in args)
            kwargs = {k: self._resolve(serialization.deserialize(serialization.serialize(v)))
                      for k, v in kwargs.items()}
            result = call(*args, **kwargs)
        except RayError as error:
            if isinstance(error, RayTaskError):
                error = RayTaskError.from_exception(error, name)
            for obj in return_ids:
                self.store[obj] = StoredError(error)
            return
        except Exception as error:  # noqa: BLE001
            stored = StoredError(RayTaskError.from_exception(error, name, pid=1, node="node-00000"))
            for obj in return_ids:
                self.store[obj] = stored
            return
        values = [result] if len(return_ids) == 1 else list(result or ())[: len(return_ids)]
        for obj, value in zip(return_ids, values):
            self.store[obj] = serialization.serialize(value)

    # --- tasks and actors ---
    def submit_task(self, function: FunctionDescriptor, args: tuple[Any, ...],
                    kwargs: dict[str, Any], options: TaskOptions) -> list[ObjectRef]:
        self.submitted.append((function.qualname, options))
        task = self._next_task()
        return_ids = [ids.return_object_id(task, i + 1) for i in range(options.num_returns)]
        self._run(options.name, function.function, args, kwargs, return_ids)
        return [ObjectRef(obj, "driver") for obj in return_ids]

    def create_actor(self, cls: FunctionDescriptor, meta: ActorClassMeta, args: tuple[Any, ...],
                     kwargs: dict[str, Any], options: ActorOptions) -> ActorID:
        namespace = options.namespace or "default"
        if options.name is not None and (options.name, namespace) in self.names:
            if options.get_if_exists:
                return self.names[(options.name, namespace)]
            raise ValueError(f"The name {options.name} (namespace={namespace}) is already taken.")
        actor = ids.actor_id(self._next_task())
        self.actors[actor] = cls.function(*args, **kwargs)
        self.actor_meta[actor] = meta
        self.actor_options[actor] = options
        if options.name is not None:
            self.names[(options.name, namespace)] = actor
        return actor

    def submit_actor_task(self, actor: ActorID, method: str, args: tuple[Any, ...],
                          kwargs: dict[str, Any], options: MethodOptions) -> list[ObjectRef]:
        task = self._next_task()
        return_ids = [ids.return_object_id(task, i + 1) for i in range(options.num_returns)]
        self._run(options.name, getattr(self.actors[actor], method), args, kwargs, return_ids)
        return [ObjectRef(obj, "driver") for obj in return_ids]

    def lookup_actor(self, name: str, namespace: str | None) -> tuple[ActorID, ActorClassMeta] | None:
        actor = self.names.get((name, namespace or "default"))
        return None if actor is None else (actor, self.actor_meta[actor])

    def kill(self, actor: ActorID, no_restart: bool) -> None:
        self.killed.append((actor, no_restart))

    def cancel(self, ref: ObjectRef, force: bool, recursive: bool) -> None:
        self.cancelled.append((ref.id, force, recursive))

    # --- objects ---
    def put(self, value: Any) -> ObjectRef:
        self.put_counter += 1
        obj = ids.put_object_id(self.driver_task, self.put_counter)
        self.store[obj] = serialization.serialize(value)
        return ObjectRef(obj, "driver")

    def get(self, refs: Any, timeout_s: float | None) -> list[Any]:
        if any(ref.id in self.never_ready for ref in refs):
            raise GetTimeoutError("Get timed out: some object(s) not ready.")
        out: list[Any] = []
        for ref in refs:
            stored = self.store[ref.id]
            out.append(stored if isinstance(stored, StoredError) else serialization.deserialize(stored))
        return out

    def wait(self, refs: Any, num_returns: int, timeout_s: float | None,
             fetch_local: bool) -> tuple[list[ObjectRef], list[ObjectRef]]:
        # Deliberately returns ready refs in reverse order: the API must restore input order.
        ready = [ref for ref in refs if ref.id not in self.never_ready][::-1]
        return ready, [ref for ref in refs if ref.id in self.never_ready]

    def future(self, ref: ObjectRef) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        future.set_result(self.get([ref], None)[0])
        return future

    def awaitable(self, ref: ObjectRef) -> Any:
        async def value() -> Any:
            await asyncio.sleep(0)
            return self.get([ref], None)[0]

        return value()

    # --- reference hooks ---
    def add_local_ref(self, object_id: ObjectID) -> object:
        self.local_refs[object_id] += 1
        return "driver"

    def remove_local_ref(self, object_id: ObjectID, token: object) -> None:
        self.local_refs[object_id] -= 1

    def ref_escaped(self, object_id: ObjectID) -> None:
        self.escaped.append(object_id)

    def add_actor_handle(self, actor_id: ActorID) -> object:
        self.actor_handles[actor_id] += 1
        return None

    def remove_actor_handle(self, actor_id: ActorID, token: object) -> None:
        self.actor_handles[actor_id] -= 1

    # --- cluster ---
    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 4.0, "GPU": 1.0}

    def available_resources(self) -> dict[str, float]:
        return {"CPU": 3.0}

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": ids.node_id(0), "Alive": True, "Resources": self.cluster_resources()}]

    def get_gpu_ids(self) -> list[int]:
        return []

    def get_runtime_context(self) -> RuntimeContext:
        return RuntimeContext(job_id=self.job, node_id=ids.node_id(0), worker_id="driver",
                              namespace="default")
