"""A worker process: runs the task bodies and actors its raylet sends it.

Owns: this process's side of a task attempt: loading the function (from the
function table in Redis, once per function), resolving arguments (inline
bytes from the message, large ones read zero-copy from the node's store),
calling the user's code with the caller set for nested API calls, packing
results (small inline, large written into the store by this process) and
errors (``RayTaskError`` with the remote traceback), GPU ids in
``CUDA_VISIBLE_DEVICES``, forwarding printed lines to the driver, and the
actor instance with its execution model: one call at a time on the main
thread, a thread pool for ``max_concurrency > 1``, an asyncio loop thread
for async actors. Must not: decide retries or placement (the core decides;
this reports ``DONE`` with what happened).

Theory of operation: the main thread, while idle, reads the raylet's
channel itself (``RayletConnection(main_thread_reads=True)``): a run of a
normal task or a single-threaded actor reaches it with no hand-off between
threads; while it runs one, the connection's helper thread reads (replies
to nested ``get``s, cancels). Runs for a threaded actor go to its pool and
for an async actor onto its loop, from whichever thread read them.

A non-forced cancel (``INTERRUPT``) follows Ray's documented rule
(``ray.cancel``). A normal task's code gets ``KeyboardInterrupt``: this
process sends itself SIGINT, which also ends a blocking ``time.sleep`` or a
detray ``get``; the handler raises only while a normal task's code runs on
the main thread, so a late SIGINT never breaks a read of the channel, a
report, or an actor's state. An async actor call's asyncio task is
cancelled (its coroutine sees ``asyncio.CancelledError``). A call of a
regular or threaded actor that has started is not interrupted (an actor has
state): it runs to its end and its result or error is reported as usual;
its code sees the cancel through ``get_runtime_context().is_canceled()``.
Any call that has not started yet (sent here but waiting for its thread)
reports the cancel without running. When the raylet goes away the worker
exits at once.

An actor call that raises ``exit_actor()``'s signal reports ``EXITING``
instead of a result; the raylet then asks this process to exit (``EXIT``)
once the core has let the calls still running finish, and the process runs
its ``atexit`` handlers before exiting (bounded by ``EXIT_GRACE_S``), as
Ray's intentional exit does.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import inspect
import io
import os
import pickle
import signal
import sys
import threading
from typing import Any

from detray import controlplane
from detray import runtime as runtime_mod
from detray.actor import builtin_method
from detray.core.ids import ActorID, JobID, NodeID, ObjectID, TaskID, WorkerID
from detray.core.resources import as_floats
from detray.core.specs import TaskKind, TaskSpec
from detray.core.tasks import will_retry
from detray.exceptions import (
    RayTaskError,
    TaskCancelledError,
    as_raised,
    error_type_names,
    format_traceback,
    is_intended_exit,
)
from detray.real import protocol as P
from detray.real.channel import connect
from detray.real.client import RayletConnection
from detray.real.processes import ChildContext
from detray.real.runtime import CALLER, Caller, RealRuntime
from detray.object_ref import ObjectRef
from detray.real.shm_client import StoreClient, StoreLocation
from detray.serialization import SerializedObject, deserialize, serialize, serialize_returns, unpickle_function

_EXIT = object()
EXIT_GRACE_S = 10.0
"""How long the ``atexit`` handlers of an actor that exited intentionally may run."""


class Run:
    __slots__ = (
        "spec",
        "attempt",
        "body",
        "gpu_ids",
        "args",
        "meta",
        "concurrency",
        "actor_name",
        "thread",
        "async_task",
        "cancelled",
        "cancel_requested",
    )

    def __init__(self, message: P.Message) -> None:
        _, self.spec, self.attempt, data, self.gpu_ids, self.args, meta = message
        # (function id, method, arg slots, keyword slots, num_returns, env vars): bytes only inside
        self.body: tuple[Any, ...] = pickle.loads(data)
        self.meta: Any = None if meta is None else meta[0]
        self.concurrency: int = 1 if meta is None else int(meta[1])
        self.actor_name: str | None = None if meta is None else meta[2]
        """An actor creation's: the actor's name (``None``: unnamed)."""
        self.thread: int | None = None
        """The thread running it, set (under ``runs_lock``) when its code starts."""
        self.async_task: asyncio.Task[Any] | None = None
        self.cancelled = False
        """A cancel reached it before it started, or interrupted it (see ``Worker.interrupt``)."""
        self.cancel_requested = False
        """A cancel reached it while it ran, interrupted or not: ``is_canceled()``."""


class Worker:
    """This process's worker (see the module docstring)."""

    def __init__(self, context: ChildContext) -> None:
        payload = context.payload
        assert context.token is not None
        store = payload["store"]
        self.store = StoreClient(
            StoreLocation(
                name=store["name"], memory_dir=store["memory_dir"], spill_dir=store["spill_dir"], backend=store["backend"]
            )
        )
        redis = payload["redis"]
        self.plane: Any = _LazyPlane(redis)  # Redis is needed only to load a function the first time
        self.node = NodeID(payload["node_id"])
        self.job = JobID(payload["job"])
        self.namespace = payload["namespace"]
        self.pid = os.getpid()
        self.runs: dict[TaskID, Run] = {}
        self.runs_lock = threading.Lock()
        self.functions: dict[str, Any] = {}
        self.instance: Any = None
        self.actor_id: ActorID | None = None
        self.actor_meta: Any = None
        self.actor_name: str | None = None
        self.actor_gpu_ids: tuple[int, ...] = ()
        self.actor_resources: dict[str, float] = {}
        self.actor_restarted = False
        self.pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.worker_id: WorkerID | None = None
        self.runtime: RealRuntime | None = None
        self.main_thread = threading.main_thread().ident
        self.interruptible = False
        """True while the main thread runs a task's code (``_on_sigint``)."""
        self.exiting = False
        """The actor called ``exit_actor()``: its ``atexit`` handlers run when the process exits."""
        channel = connect(payload["raylet"], context.token)
        self.conn = RayletConnection(channel, self.on_push, main_thread_reads=True)

    # --- messages (on the thread reading the channel) ---------------------------------------------

    def on_push(self, message: P.Message) -> object:
        """A pushed message, on the thread reading the channel; returns what the main thread runs."""
        tag = message[0]
        if tag == P.RUN:
            run = Run(message)
            with self.runs_lock:
                self.runs[run.spec.task_id] = run
            if run.spec.kind is TaskKind.ACTOR_TASK and self.loop is not None:
                asyncio.run_coroutine_threadsafe(self._run_async(run), self.loop)
                return None
            if run.spec.kind is TaskKind.ACTOR_TASK and self.pool is not None:
                self.pool.submit(self.execute, run)
                return None
            return run
        if tag == P.INTERRUPT:
            self.interrupt(message[1], message[2])
            return None
        if tag == P.ASSIGN:
            return message
        if tag == P.EXIT:
            if self.conn.closed:
                os._exit(0)  # the raylet is gone: nothing to report to
            return _EXIT
        return None

    def interrupt(self, task: TaskID, attempt: int) -> None:
        """A non-forced cancel of ``task``'s ``attempt``, by Ray's rule (see the module docstring)."""
        with self.runs_lock:  # against the start of the call (``execute``, ``_run_async``)
            run = self.runs.get(task)
            if run is None or run.attempt != attempt:
                return
            if run.thread is None and run.async_task is None:
                run.cancelled = True  # not started: it reports the cancel instead of running
                return
            run.cancel_requested = True
            if run.async_task is not None:
                if self.loop is not None:
                    run.cancelled = True
                    self.loop.call_soon_threadsafe(run.async_task.cancel)
                return
            if run.spec.kind is not TaskKind.NORMAL:
                return  # a regular or threaded actor's running call is not interrupted: it polls is_canceled()
            run.cancelled = True
            if run.thread == self.main_thread:
                # As Ray: SIGINT, so KeyboardInterrupt also ends a blocking call (time.sleep, I/O).
                os.kill(os.getpid(), signal.SIGINT)

    # --- the main thread ----------------------------------------------------------------------------

    def serve(self) -> None:
        # cancel() interrupts the task running on this thread, and only that (see _on_sigint)
        signal.signal(signal.SIGINT, self._on_sigint)
        self.conn.send((P.HELLO, 0, "worker", self.pid))
        next_item = self.conn.next_main_item
        while True:
            try:
                item = next_item()
                if item is _EXIT:
                    return
                if isinstance(item, Run):
                    self.execute(item)
                elif isinstance(item, tuple) and item[0] == P.ASSIGN:
                    self.assign(item)
            except KeyboardInterrupt:
                continue  # a safety net: _on_sigint raises only inside a task's code

    def _on_sigint(self, signum: int, frame: Any) -> None:
        """SIGINT raises ``KeyboardInterrupt`` only in a task's code on the main thread: never while
        it reads the channel (a frame read halfway would be lost) nor while it reports."""
        if self.interruptible:
            raise KeyboardInterrupt

    def assign(self, message: P.Message) -> None:
        _, worker_id, node, env_vars, job = message
        self.worker_id = WorkerID(worker_id)
        os.environ.update(env_vars)
        default = Caller(self.worker_id, JobID(job), TaskID(f"{worker_id}/idle"))
        self.runtime = RealRuntime(
            self.conn,
            self.store,
            self.plane,
            node=NodeID(node),
            job=JobID(job),
            namespace=self.namespace,
            default_caller=default,
            address_info={"node_id": node, "mode": "real"},
        )
        runtime_mod.set_current(self.runtime)
        sys.stdout = _LineForwarder(self, "stdout")
        sys.stderr = _LineForwarder(self, "stderr")

    # --- one attempt ------------------------------------------------------------------------------

    def label(self) -> str:
        caller = CALLER.get()
        name = caller.name if caller is not None else "worker"
        return f"({name} pid={self.pid})"

    def execute(self, run: Run) -> None:
        spec: TaskSpec = run.spec
        with self.runs_lock:
            run.thread = threading.get_ident()
            cancelled = run.cancelled
        caller = self._caller(run)
        token = CALLER.set(caller)
        if self.runtime is not None:
            self.runtime.default_caller = caller  # threads the task starts submit as the task
        saved_env = self._enter_env(run)
        interruptible = run.thread == self.main_thread and spec.kind is TaskKind.NORMAL  # see interrupt()
        try:
            try:
                if cancelled:  # cancelled while it waited its turn (an actor's queued call)
                    raise TaskCancelledError(spec.task_id)
                if interruptible:
                    self.interruptible = True
                try:
                    result = self._call(run)
                finally:
                    if interruptible:
                        self.interruptible = False
                self._done(run, result, None)
            except BaseException as exc:  # noqa: BLE001 -- reported as the task's error
                self._done(run, None, exc)
        finally:
            run.thread = None
            CALLER.reset(token)
            self._leave_env(saved_env)

    async def _run_async(self, run: Run) -> None:
        with self.runs_lock:
            run.async_task = asyncio.current_task()
            cancelled = run.cancelled
        CALLER.set(self._caller(run))
        try:
            if cancelled:  # cancelled before its coroutine started
                raise TaskCancelledError(run.spec.task_id)
            result = self._call(run)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:  # noqa: BLE001 -- reported as the task's error
            self._done(run, None, exc)
            return
        self._done(run, result, None)

    def _caller(self, run: Run) -> Caller:
        spec = run.spec
        assert self.worker_id is not None
        kind = spec.kind
        if kind is TaskKind.NORMAL:
            return Caller(
                self.worker_id,
                spec.job_id,
                TaskID(f"{spec.task_id}@{run.attempt}"),
                task_id=spec.task_id,
                resources=as_floats(dict(spec.resources)),
                gpu_ids=run.gpu_ids,
                name=spec.name,
                cancel_probe=lambda: run.cancel_requested,
            )
        creation = kind is TaskKind.ACTOR_CREATION
        meta = run.meta if creation else self.actor_meta
        return Caller(
            self.worker_id,
            spec.job_id,
            TaskID(f"{spec.task_id}@{run.attempt}"),
            task_id=spec.task_id,
            actor_id=spec.actor_id,
            actor_name=run.actor_name if creation else self.actor_name,
            actor_meta=meta,
            resources=self.actor_resources if kind is TaskKind.ACTOR_TASK else as_floats(dict(spec.resources)),
            gpu_ids=run.gpu_ids,
            name=meta.class_name if meta is not None else spec.name,
            restarted=run.attempt > 1 if creation else self.actor_restarted,
            cancel_probe=self._cancel_probe(run),
        )

    def _cancel_probe(self, run: Run) -> runtime_mod.CancelProbe:
        if run.spec.kind is TaskKind.ACTOR_TASK and self.loop is not None:
            return runtime_mod.async_actor_cancel_probe  # Ray refuses is_canceled() in an async actor
        return lambda: run.cancel_requested

    def _enter_env(self, run: Run) -> dict[str, str | None]:
        saved: dict[str, str | None] = {}
        if run.spec.kind is TaskKind.ACTOR_TASK:
            return saved
        if not run.body[5] and not run.gpu_ids and "CUDA_VISIBLE_DEVICES" not in os.environ:
            return saved  # nothing to set (the common case)
        changes = dict(run.body[5])
        changes["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu) for gpu in run.gpu_ids)
        if not run.gpu_ids and "CUDA_VISIBLE_DEVICES" not in os.environ:
            changes.pop("CUDA_VISIBLE_DEVICES")
        for key, value in changes.items():
            saved[key] = os.environ.get(key)
            os.environ[key] = value
        if run.spec.kind is TaskKind.ACTOR_CREATION:
            return {}  # an actor keeps its environment for life
        return saved

    def _leave_env(self, saved: dict[str, str | None]) -> None:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def _call(self, run: Run) -> Any:
        spec = run.spec
        function_id, method, slots, kw_slots, _num_returns, _env = run.body
        args = [self._resolve(slot, run) for slot in slots]
        kwargs = {key: self._resolve(slot, run) for key, slot in kw_slots}
        kind = spec.kind
        if kind is TaskKind.NORMAL:
            return self._function(function_id)(*args, **kwargs)
        if kind is TaskKind.ACTOR_CREATION:
            cls = self._function(function_id)
            self.actor_id = spec.actor_id
            self.actor_meta = run.meta
            self.actor_name = run.actor_name
            self.actor_gpu_ids = tuple(run.gpu_ids)
            self.actor_resources = as_floats(dict(spec.resources))
            self.actor_restarted = run.attempt > 1
            self.instance = cls(*args, **kwargs)
            return None
        if self.instance is None:
            raise RuntimeError(f"actor method {method} ran before its actor was created")
        try:
            bound = getattr(self.instance, method)
        except AttributeError as missing:
            bound = builtin_method(self.instance, method, missing)
        return bound(*args, **kwargs)

    def _function(self, function_id: str) -> Any:
        function = self.functions.get(function_id)
        if function is None:
            data = self.plane.get_function(function_id)
            if data is None:
                raise RuntimeError(f"function {function_id} is not in the function table")
            function = unpickle_function(data)
            self.functions[function_id] = function
        return function

    def _resolve(self, slot: tuple[Any, ...], run: Run) -> Any:
        if slot[0] == "v":
            return deserialize(SerializedObject(inband=slot[1], buffers=list(slot[2])), read_only=True)
        obj = slot[1]
        assert self.runtime is not None
        wire = run.args[obj]
        if wire[0] == "s" and not self.store.contains(obj):
            # Its file is gone: a get reports it and waits for the rebuild (this worker counts
            # as blocked meanwhile), as Ray's argument fetch would.
            return self._refetch(obj)
        value = self.runtime.decode(obj, wire)
        if isinstance(value, runtime_mod.StoredError):
            raise as_raised(value.error)
        return value

    def _refetch(self, obj: ObjectID) -> Any:
        assert self.runtime is not None
        value = self.runtime.get([ObjectRef(obj)], None)[0]
        if isinstance(value, runtime_mod.StoredError):
            raise as_raised(value.error)
        return value

    def _done(self, run: Run, result: Any, exc: BaseException | None) -> None:
        spec = run.spec
        task = spec.task_id
        with self.runs_lock:
            self.runs.pop(task, None)
        results: list[tuple[Any, ...]] = []
        if exc is None:
            try:
                packed = serialize_returns(result, spec.name, len(spec.return_ids))
                for obj, serialized in zip(spec.return_ids, packed):
                    results.append(self._result(obj, serialized, False))
            except BaseException as pack_error:  # noqa: BLE001 -- an unpicklable result is the task's error
                exc = pack_error
                results = []
            else:
                if spec.kind is TaskKind.ACTOR_CREATION and self.actor_meta is not None:
                    self._start_actor_executor(run.concurrency)
                self.conn.send((P.DONE, task, run.attempt, results, None, False, None))
                return
        if spec.kind is TaskKind.ACTOR_TASK and is_intended_exit(exc):
            # No result: the core fails this call with the actor's intentional exit.
            self.exiting = True
            self.conn.send((P.EXITING, task, run.attempt))
            return
        cancelled = run.cancelled and isinstance(exc, (TaskCancelledError, asyncio.CancelledError, KeyboardInterrupt))
        error_types = error_type_names(exc)
        final = cancelled or not will_retry(spec, run.attempt, error_types)
        error_value = self._error_value(spec, exc, cancelled)
        if final:
            results = [self._result(obj, error_value, True) for obj in spec.return_ids]
        init_error = P.inline(error_value, True) if spec.kind is TaskKind.ACTOR_CREATION and not cancelled else None
        self.conn.send((P.DONE, task, run.attempt, results, error_types, cancelled, init_error))

    def _result(self, obj: ObjectID, serialized: SerializedObject, is_error: bool) -> tuple[Any, ...]:
        assert self.runtime is not None
        wire, size = self.runtime.store_value(obj, serialized, is_error=is_error)
        return (obj, wire, size, tuple(serialized.contained_refs), tuple(serialized.contained_actors))

    def _error_value(self, spec: TaskSpec, exc: BaseException, cancelled: bool) -> SerializedObject:
        error: Any
        if cancelled:
            error = TaskCancelledError(spec.task_id)
        else:
            error = RayTaskError.from_exception(exc, spec.name, pid=self.pid, node=self.node, actor_id=spec.actor_id)
        try:
            return serialize(error, f"the error of {spec.name}()")
        except TypeError:
            return serialize(RayTaskError(spec.name, format_traceback(exc), None, pid=self.pid, ip=self.node))

    def _start_actor_executor(self, concurrency: int) -> None:
        if self.actor_meta.is_async:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="detray-actor-loop", daemon=True).start()
            self.loop = loop
            return
        if concurrency > 1:
            self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="detray-actor")


class _LazyPlane:
    """The control plane, connected on first use (a worker starts even while Redis is down;
    what needs Redis then fails with ``ControlPlaneUnavailable`` naming it)."""

    def __init__(self, redis: dict[str, Any]) -> None:
        self._redis = redis
        self._plane: controlplane.ControlPlane | None = None
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        with self._lock:
            if self._plane is None:
                r = self._redis
                self._plane = controlplane.connect(
                    r["host"], int(r["port"]), password=r["password"], cluster_id=r["cluster_id"]
                )
        return getattr(self._plane, name)


class _LineForwarder(io.TextIOBase):
    """``sys.stdout``/``sys.stderr`` of a worker: each complete line goes to the driver, prefixed."""

    def __init__(self, worker: Worker, stream: str) -> None:
        self.worker = worker
        self.stream = stream
        self.buffer_text = ""
        self.lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self.lock:
            self.buffer_text += text
            if "\n" not in self.buffer_text:
                return len(text)
            *lines, self.buffer_text = self.buffer_text.split("\n")
        prefix = self.worker.label()
        try:
            self.worker.conn.send(*[(P.PRINT, f"{prefix} {line}", self.stream) for line in lines])
        except Exception:  # noqa: BLE001 -- output after the raylet left is dropped
            pass
        return len(text)

    def flush(self) -> None:
        with self.lock:
            text, self.buffer_text = self.buffer_text, ""
        if text:
            try:
                self.worker.conn.send((P.PRINT, f"{self.worker.label()} {text}", self.stream))
            except Exception:  # noqa: BLE001
                pass


def _run_exit_handlers() -> None:
    """The ``atexit`` handlers, as an interpreter exit would run them; a handler that does
    not return within ``EXIT_GRACE_S`` does not keep the process (and its resources)."""
    watchdog = threading.Timer(EXIT_GRACE_S, os._exit, (0,))
    watchdog.daemon = True
    watchdog.start()
    try:
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001 -- the process exits anyway
        pass
    watchdog.cancel()


def main(context: ChildContext) -> None:
    """Entry point of a worker process (``spawn_python_child``)."""
    worker = Worker(context)
    try:
        worker.serve()
        if worker.exiting:
            _run_exit_handlers()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except Exception:  # noqa: BLE001
            pass
        os._exit(0)
