"""Simulated workers: running task bodies, actors and async actors as units of user code.

Owns: the workers of every node and what runs on them (``Run`` per task
attempt, ``Exec`` per unit of user code), the payloads of tasks (function and
serialized arguments), actor instances and their event loops, the virtual
interval of an attempt (body at its start, results at its end), storing
results and error values, kills (worker, node, forced cancel, ``os._exit`` in
user code) and cancellation, units waiting for a cooperative threading lock
(``coop``), and the reference holds of values nested in arguments and
results. Must not: decide retries, placement or copies (the core does; this
module reports facts: ``TaskStarted``, ``TaskFinished``, ``TaskFailed``,
``WorkerBlocked``...), or run user code outside the loop's order.

Theory of operation: ``StartTask`` feeds ``TaskStarted`` and starts a unit
whose body resolves the arguments, calls the function and serializes the
returns, all as user code. When the body ends, its duration (the duration
model, scaled by the node's slowdown) is scheduled as one SimPy timeout; at
its end the results are stored and ``TaskFinished``/``TaskFailed`` is fed,
unless the attempt was killed or cancelled meanwhile (a bumped token). A
body that blocks (``get``) feeds ``WorkerBlocked`` and ``WorkerUnblocked``
around the wait so its CPUs are lent (a wait for a threading lock lends
nothing: Ray does not see it either). A non-forced cancel of a running
normal task raises ``KeyboardInterrupt`` at its pending wait, as Ray's does;
the stored error is ``TaskCancelledError``. ``os._exit`` kills the unit's
worker at once, as the ``KillWorker`` fault. Async actors run every call as an
asyncio task on the actor's ``VirtualLoop``; a *step* unit runs the loop
until nothing is ready, and the next step is scheduled when an awaited ref
is ready or the earliest timer falls due. An actor call that raised
``exit_actor()``'s signal stores no result: at the end of its interval it
reports the intentional exit (``ActorKillRequested`` with ``exit_call``) and
the core fails the call, ends the actor and kills its worker.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from detray.actor import builtin_method
from detray.core import commands as C
from detray.core import events as E
from detray.core import ids
from detray.core.errors import ErrorKind, Failure
from detray.core.ids import ActorID, NodeID, ObjectID, TaskID, WorkerID
from detray.core.records import builder
from detray.core.specs import TaskKind, TaskSpec
from detray.core.tasks import will_retry
from detray.exceptions import (
    ActorDiedError,
    ObjectLostError,
    RayTaskError,
    TaskCancelledError,
    as_raised,
    error_type_names,
    from_failure,
    is_intended_exit,
)
from detray.runtime import StoredError
from detray.serialization import serialize
from detray.sim import streams, virtual_env
from detray.sim.asyncloop import VirtualLoop
from detray.sim.coop import LockWait
from detray.sim.errors import WorkerKilled
from detray.sim.objects import NONE_STORED, StoredValue, freeze, read, serialize_result
from detray.sim.records import (
    ActorInstance,
    Exec,
    Payload,
    Run,
    SimNode,
    SimWorker,
    UnitContext,
    Waiter,
)
from detray.sim.trace import TraceLevel
from detray.sim.usercode import Done, Outcome, Raised, UnitState, UserCode, format_user_traceback
from detray.sim.virtual_env import RandomSlot

CURRENT_CALL: contextvars.ContextVar[UnitContext] = contextvars.ContextVar("detray_sim_call")
"""Set in each async actor call's asyncio context: the call's ``UnitContext``."""

PID_BASE = 1000
LOCK_TIMEOUT_LATENESS_S = 1e-6
"""A timed wait for a threading lock ends this long after its timeout (a real one never ends
before it): code that checks its deadline afterwards with ``<`` (``as_completed``) sees it passed."""
_NO_KWARGS: dict[str, Any] = {}  # the keyword arguments of calls without any: shared, only ever read
_NORMAL = TaskKind.NORMAL  # a module constant: an enum member lookup costs about 0.1 us on the hot path
_CANCELLED_TYPES = error_type_names(TaskCancelledError)


# The events every task feeds, built positionally (``records.builder``: about half the cost of keywords).
_build_started = builder(E.TaskStarted, "now", "stimulus_id", "task", "attempt", "node", "worker")
_build_finished = builder(E.TaskFinished, "now", "stimulus_id", "task", "attempt", "node", "worker", "return_sizes")


class Executor:
    """Workers and the user code they run, for one ``SimCluster``."""

    def __init__(self, cluster: Any) -> None:
        self.c = cluster
        self.workers: dict[WorkerID, SimWorker] = {}
        self.payloads: dict[TaskID, Payload] = {}
        self.actor_meta: dict[ActorID, Any] = {}
        self.actor_specs: dict[ActorID, Any] = {}
        self.init_errors: dict[ActorID, RayTaskError] = {}
        self.handle_counts: dict[ActorID, int] = {}
        self.calls_open: dict[ActorID, int] = {}
        self.out_of_scope: dict[ActorID, None] = {}
        self._pid_count = 0
        self._loops: list[VirtualLoop] = []
        self.starts = 0
        self.finishes = 0
        """Attempts that ended (finished, failed or cancelled); ``starts`` counts those begun."""
        self.start_observers: list[Callable[[TaskSpec, NodeID], None]] = []
        """Called with (spec, node) as each attempt starts (tools: utilization, progress)."""
        """Attempts started so far (progress, as the resource refresh sees it)."""

    # -- workers -------------------------------------------------------------------------------

    def new_worker(self, worker: WorkerID, node: NodeID) -> None:
        self._pid_count += 1
        self.workers[worker] = SimWorker(worker=worker, node=node, pid=PID_BASE + self._pid_count)
        self.c.nodes[node].workers[worker] = None
        if self.c.trace.level >= TraceLevel.DEBUG:
            self.c.emit(node, "worker.started", level=TraceLevel.DEBUG, worker=worker)

    def worker_alive(self, worker: WorkerID) -> bool:
        rec = self.workers.get(worker)
        return rec is not None and rec.alive

    def kill_worker(self, worker_id: WorkerID, why: str) -> None:
        """The worker process dies now: its units are killed, ``WorkerDied`` is fed."""
        worker = self.workers.get(worker_id)
        if worker is None or not worker.alive:
            self.c.count("kill_of_dead_worker")
            return
        self._kill(worker, why)
        if self.c.nodes[worker.node].up:
            self.c.feed(E.WorkerDied(now=self.c.now(), stimulus_id=self.c.sid("died"), worker=worker_id, node=worker.node))
            self.c.mark_dirty(worker.node)

    def _kill(self, worker: SimWorker, why: str) -> None:
        worker.alive = False
        self.c.emit(worker.node, "worker.died", worker=worker.worker, why=why)
        runs = list(worker.runs.values())
        for run in runs:
            self._end_run(run)
        worker.runs.clear()
        for ex in list(worker.execs):
            self._kill_exec(ex, why)
        worker.execs.clear()
        for run in runs:
            task = run.async_task
            if task is not None and task.done() and not task.cancelled():
                task.exception()  # the kill ended it: read, so asyncio does not log it as never retrieved
        actor = worker.actor
        if actor is not None:
            worker.actor = None
            if actor.loop is not None:
                self._close_loop(actor.loop)
            actor.loop = None
            actor.instance = None
        self.c.nodes[worker.node].workers.pop(worker.worker, None)
        del self.workers[worker.worker]

    def _kill_exec(self, ex: Exec, why: str) -> None:
        if ex.dead:
            return
        ex.dead = True
        ex.token += 1
        if ex.waiter is not None:
            self._drop_waiter(ex.waiter)
            ex.waiter = None
        if ex.unit.state is not UnitState.FINISHED:
            self.c.runner.kill(ex.unit, WorkerKilled(f"the worker running this code died ({why})"))
            self.c._switch_point()

    def _end_run(self, run: Run) -> None:
        if run.ended:
            return
        run.ended = True
        run.token += 1
        self._release_holds(run)

    def _release_holds(self, run: Run) -> None:
        """What the run's unstored results kept alive is let go (killed or cancelled)."""
        if run.held:
            self.release_refs(run.held)
            run.held = ()
        if run.held_actors:
            self.actor_handles_changed([(actor, -1) for actor in sorted(run.held_actors)])
            run.held_actors = ()

    def node_lost(self, node: SimNode) -> None:
        """Every process of the node died (no ``WorkerDied``: the router learns ``NodeDied``)."""
        for worker_id in list(node.workers):
            worker = self.workers.get(worker_id)
            if worker is not None and worker.alive:
                self._kill(worker, "node died")
        node.workers.clear()

    def node_declared_dead(self, node: NodeID) -> None:
        self.c.emit(node, "node.died", incarnation=self.c.router.incarnations.get(node, 0))

    # -- starting attempts ------------------------------------------------------------------------

    def start_task(self, command: C.StartTask) -> None:
        c = self.c
        node_id = command.node
        node = c.nodes.get(node_id)
        worker = self.workers.get(command.worker)
        if node is None or not node.up or worker is None or not worker.alive:
            c.count("start_task_on_dead_worker")
            return
        spec = command.spec
        task = spec.task_id
        kind = spec.kind
        attempt = command.attempt
        payload = self.payloads.get(task)
        if payload is None:
            raise AssertionError(f"no payload for task {task} ({spec.name}) at StartTask")
        now = c.now()
        # The per-attempt records are built positionally, in field order: a third of the keyword call's cost.
        run = Run(spec, attempt, node_id, worker, command.gpu_ids, payload, now)
        worker.runs[task] = run
        self.starts += 1
        for observe in self.start_observers:
            observe(spec, node_id)
        c.feed(_build_started(now, task, task, attempt, node_id, command.worker))
        c.mark_dirty(node_id)
        c.emit(node_id, "task.started", task=task, attempt=attempt, worker=command.worker, name=spec.name)
        actor: ActorInstance | None
        if kind is _NORMAL:
            actor = None
            body: Any = _normal_body
            label = spec.name
            context_kind = "task"
            gpu_ids = command.gpu_ids
        elif kind is TaskKind.ACTOR_CREATION:
            actor = self._new_actor(spec, command, worker)
            body = _creation_body
            label = actor.meta.class_name
            context_kind = "creation"
            gpu_ids = command.gpu_ids
        else:
            actor = worker.actor
            if actor is None or actor.instance is None:
                c.count("actor_task_without_instance")
                self._end_run(run)
                del worker.runs[task]
                return
            label = actor.meta.class_name
            gpu_ids = actor.gpu_ids
            context_kind = "actor_task"
            body = _method_body
        # kind, worker_id, node, job, parent_key, task_id, attempt, spec, worker, actor, gpu_ids, run
        context = UnitContext(
            context_kind, worker.worker, node_id, spec.job_id, TaskID(f"{task}@{attempt}"), task, attempt, spec, worker, actor, gpu_ids, run
        )
        if actor is not None and kind is TaskKind.ACTOR_TASK:
            actor.calls[task] = run
            if actor.loop is not None:
                self._start_async_call(run, actor, context)
                return
        full_label = f"{label} pid={worker.pid}, ip={node_id}"
        # fn, args, kwargs, context, label, key, random_slot (positional: one unit per attempt)
        if actor is not None:
            unit = UserCode(body, (self, run), None, context, full_label, (), actor.random_slot)
        else:
            unit = UserCode(body, (self, run), None, context, full_label, (task, attempt))
        ex = Exec(unit, context, worker, run, actor)  # unit, context, worker, run, actor
        run.exec = ex
        worker.execs.append(ex)
        c.run_exec(ex, "start", None)

    def _new_actor(self, spec: TaskSpec, command: C.StartTask, worker: SimWorker) -> ActorInstance:
        actor_id = spec.actor_id
        assert actor_id is not None
        meta = self.actor_meta[actor_id]
        restarts = command.attempt - 1
        slot = RandomSlot(streams.stream_seed(self.c.seed, "user_random", "actor", actor_id, restarts))
        actor = ActorInstance(
            actor_id=actor_id,
            meta=meta,
            worker=worker.worker,
            node=command.node,
            gpu_ids=command.gpu_ids,
            random_slot=slot,
            restarts=restarts,
        )
        if meta.is_async:
            actor.loop = VirtualLoop(self.c.now, label=f"{meta.class_name} {actor_id}")
            self._loops.append(actor.loop)
        worker.actor = actor
        if restarts:
            self.c.emit(command.node, "actor.restarting", actor=actor_id, restarts=restarts)
            self._actor_record(actor_id, "RESTARTING", command.node, worker.worker, restarts)
        return actor

    # -- user code inside units (bodies call these) ---------------------------------------------------

    def resolve_args(self, payload: Payload) -> tuple[list[Any], dict[str, Any]]:
        """The arguments as fresh values (runs as user code: ``__setstate__`` is the user's)."""
        if not payload.args and not payload.kwargs:
            return [], _NO_KWARGS  # no comprehension to run (the dict is only ever read)
        resolve = self._resolve
        args = [resolve(slot) for slot in payload.args]
        kwargs = {name: resolve(slot) for name, slot in payload.kwargs}
        return args, kwargs

    def _resolve(self, slot: tuple[str, Any]) -> Any:
        kind, item = slot
        if kind == "v":
            return read(item)
        value = self.c.values.get(item)
        if value is None:
            failure = self.c.router.directory.failure(item)
            if failure is not None:
                raise as_raised(self.error_of(item, failure))
            raise ObjectLostError(item, detail="the argument's bytes are gone from the simulated store")
        if value.is_error:
            raise as_raised(read(value))
        return read(value)

    def pack_returns(self, run: Run, result: Any) -> list[Any]:
        """Serialize a body's result into its return objects (runs as user code)."""
        return serialize_result(result, run.spec.name, len(run.spec.return_ids))

    # -- a unit ended or blocked --------------------------------------------------------------------

    def blocked_on(self, ex: Exec, waiter: Waiter) -> None:
        waiter.exec = ex
        ex.waiter = waiter
        worker = ex.worker
        if worker is not None and ex.context.kind != "driver":
            ex.blocked_worker = True
            self.c.feed(E.WorkerBlocked(now=self.c.now(), stimulus_id=self.c.sid("blocked"), worker=worker.worker, node=worker.node))
            self.c.mark_dirty(worker.node)
        if waiter.timeout_s is not None:
            self.c.later(waiter.timeout_s, self._wait_timeout, waiter)

    def blocked_on_lock(self, ex: Exec, wait: LockWait) -> None:
        """The unit waits for a cooperative threading lock (``coop``): it resumes, through
        the queue, with True once a release hands it the lock, or False at its timeout."""
        ex.lock_wait = wait
        token = ex.token
        append = self.c.queue.append
        resume = self._lock_wait_ended

        def wake(granted: bool) -> None:
            append((resume, ex, token, wait))

        wait.wake = wake
        if wait.done:  # handed over by a user thread before the loop saw the unit block
            wake(wait.granted)
        elif wait.timeout_s is not None:
            self.c.later(wait.timeout_s + LOCK_TIMEOUT_LATENESS_S, wait.expire)

    def _lock_wait_ended(self, ex: Exec, token: int, wait: LockWait) -> None:
        if ex.dead or ex.token != token or ex.lock_wait is not wait:
            return
        ex.lock_wait = None
        self.c.run_exec(ex, "resume", wait.granted)

    def process_exit(self, ex: Exec, code: int) -> None:
        """``os._exit(code)`` in a unit: a task's or actor's worker process dies as by the
        ``KillWorker`` fault (the core retries or restarts as for any worker death); in the
        driver, the real process exits."""
        worker = ex.worker
        if worker is None:
            virtual_env.real_exit(code)  # as the real call: no cleanup, no flush
            return
        self.kill_worker(worker.worker, f"os._exit({code}) in {ex.unit.label or ex.context.kind}")

    def _unblock(self, ex: Exec) -> None:
        if ex.blocked_worker:
            ex.blocked_worker = False
            worker = ex.worker
            assert worker is not None
            if worker.alive:
                self.c.feed(
                    E.WorkerUnblocked(now=self.c.now(), stimulus_id=self.c.sid("unblocked"), worker=worker.worker, node=worker.node)
                )
                self.c.mark_dirty(worker.node)

    def _wait_timeout(self, waiter: Waiter) -> None:
        if waiter.done:
            return
        self._drop_waiter(waiter)
        waiter.timed_out = True
        ex = waiter.exec
        if ex is None or ex.dead or ex.waiter is not waiter:
            return
        ex.waiter = None
        self._unblock(ex)
        self.c.run_exec(ex, "resume", waiter)

    def _drop_waiter(self, waiter: Waiter) -> None:
        if waiter.done:
            return
        waiter.done = True
        if self.c.waiters.pop(waiter.waiter_id, None) is not None:
            self.c.feed(E.WaiterCancelled(now=self.c.now(), stimulus_id=self.c.sid("cancelwait"), waiter=waiter.waiter_id))

    def cancel_wait(self, ex: Exec) -> None:
        waiter = ex.waiter
        if waiter is not None:
            self._drop_waiter(waiter)
            ex.waiter = None
        self._unblock(ex)

    def deliver_wake(self, waiter: Waiter) -> None:
        kind = waiter.kind
        if kind == "await":
            actor = waiter.actor
            assert actor is not None
            actor.resolutions.append((waiter.future, waiter))
            self.schedule_step(actor)
            return
        if kind == "future":
            obj = waiter.objects[0]
            future = waiter.future
            if not future.done():
                future.set_result(self.value_for(waiter, obj))
            return
        ex = waiter.exec
        if ex is None or ex.dead or ex.waiter is not waiter:
            return
        ex.waiter = None
        self._unblock(ex)
        self.c.run_exec(ex, "resume", waiter)

    def stored_for(self, waiter: Waiter, obj: ObjectID) -> Any:
        """The stored bytes (``StoredValue``) of ``obj`` a woken waiter reads, or None."""
        return (waiter.values or {}).get(obj) or self.c.values.get(obj)

    def value_for(self, waiter: Waiter, obj: ObjectID) -> Any:
        """The value (or ``StoredError``) of ``obj`` for a woken waiter (deserialized here)."""
        wake = waiter.wake
        assert wake is not None
        for failed_obj, failure in wake.failed:
            if failed_obj == obj:
                return StoredError(self.error_of(obj, failure))
        value = self.stored_for(waiter, obj)
        if value is None:
            return StoredError(ObjectLostError(obj, detail="its bytes are gone from the simulated store"))
        if value.is_error:
            return StoredError(read(value))
        return read(value)

    def values_for(self, waiter: Waiter, objects: Iterable[ObjectID]) -> list[Any]:
        """`value_for` of each object, in order (a woken ``get``), with the common
        case (nothing failed, the bytes in the store, not an error) inlined."""
        wake = waiter.wake
        assert wake is not None
        if wake.failed:
            return [self.value_for(waiter, obj) for obj in objects]
        snapshot = waiter.values or {}  # what ``stored_for`` reads first (filled at the wake)
        stored = self.c.values.get
        out: list[Any] = []
        append = out.append
        for obj in objects:
            value = snapshot.get(obj) or stored(obj)
            if value is NONE_STORED:  # the shared ``None`` result: ``read`` would unpickle None
                append(None)
            elif value is None or value.is_error:
                append(self.value_for(waiter, obj))
            else:
                append(read(value))
        return out

    def error_of(self, obj: ObjectID, failure: Failure) -> Any:
        """The exception a user catches for a failed object (an actor's init error kept)."""
        if failure.kind is ErrorKind.ACTOR_DIED:
            actor = failure.detail("actor")
            cause = self.init_errors.get(ActorID(actor)) if actor else None
            if cause is not None:
                return ActorDiedError(cause)
        return from_failure(failure, obj)

    def unit_ended(self, ex: Exec, outcome: Outcome) -> None:
        worker = ex.worker
        if worker is not None:
            try:
                worker.execs.remove(ex)  # one scan, not a membership test and then a removal
            except ValueError:
                pass
        run = ex.run
        if run is not None and run.exec is ex:
            run.exec = None  # the unit is over: no Run <-> Exec cycle left for the collector
        if ex.dead:
            return
        if ex.context.kind == "async_step":
            self._step_ended(ex, outcome)
            return
        assert run is not None
        self.body_done(run, outcome)

    def body_done(self, run: Run, outcome: Outcome) -> None:
        """The body returned or raised: its results appear after its duration."""
        if run.ended or run.finishing:
            return
        spec = run.spec
        c = self.c
        error_types: tuple[str, ...] | None = None
        cancelled = False
        stored: list[StoredValue] = []
        if outcome.__class__ is Done:
            if spec.kind is TaskKind.ACTOR_CREATION:
                actor = run.worker.actor
                assert actor is not None
                actor.instance = outcome.value
            else:
                stored = [freeze(s) for s in outcome.value]
                for value in stored:  # a plain loop: most results contain nothing
                    if value.contained_refs or value.contained_actors:
                        self._hold_contained(run, stored)
                        break
        else:
            assert isinstance(outcome, Raised)
            exc = outcome.exc
            if isinstance(exc, WorkerKilled):
                return
            if spec.kind is TaskKind.ACTOR_TASK and is_intended_exit(exc):
                delay_s = c.durations.duration_s(spec.name, spec.task_id, run.attempt) * c.nodes[run.node].slowdown
                run.finishing = True
                c.later(delay_s, self._exit_requested, run, run.token)
                return
            cancelled = run.cancel_requested and isinstance(exc, (TaskCancelledError, KeyboardInterrupt, _cancelled_error()))
            # The interrupt of a cancel is reported as the error its caller gets (as before
            # Ray's KeyboardInterrupt replaced the TaskCancelledError raised in the body).
            error_types = _CANCELLED_TYPES if cancelled and isinstance(exc, KeyboardInterrupt) else error_type_names(exc)
            stored = [self._error_value(run, exc, cancelled)]
        delay_s = c.durations.duration_s(spec.name, spec.task_id, run.attempt) * c.nodes[run.node].slowdown
        run.finishing = True
        c.later(delay_s, self._finish, run, run.token, stored, error_types, cancelled)

    def _hold_contained(self, run: Run, stored: list[StoredValue]) -> None:
        """Keep alive what the body's results contain until they are stored."""
        held = [obj for value in stored for obj in value.contained_refs]
        if held:
            run.held = tuple(held)
            self.hold_refs(run.held)
        actors = [actor for value in stored for actor in value.contained_actors]
        if actors:
            run.held_actors = tuple(actors)
            self.hold_actors(actors)

    def _error_value(self, run: Run, exc: BaseException, cancelled: bool) -> StoredValue:
        spec = run.spec
        error: Any
        if cancelled:
            error = TaskCancelledError(spec.task_id)
        else:
            error = RayTaskError.from_exception(
                exc,
                spec.name,
                pid=run.worker.pid,
                node=run.node,
                actor_id=spec.actor_id,
            )
        if spec.kind is TaskKind.ACTOR_CREATION and not cancelled and spec.actor_id is not None:
            self.init_errors[spec.actor_id] = error
        try:
            serialized = serialize(error, f"the error of {spec.name}()")
        except TypeError:
            serialized = serialize(RayTaskError(spec.name, format_user_traceback(exc), None, pid=run.worker.pid, ip=run.node))
        return freeze(serialized, is_error=True)

    def _finish(
        self,
        run: Run,
        token: int,
        stored: list[StoredValue],
        error_types: tuple[str, ...] | None,
        cancelled: bool,
    ) -> None:
        if run.ended or run.token != token:
            return
        self.finishes += 1
        c = self.c
        spec = run.spec
        task = spec.task_id
        worker = self._close_run(run)
        node = run.node
        now = c.now()
        if error_types is None:
            sizes = self._store(spec, stored, node)
            run.held = ()  # the stored values hold them now
            run.held_actors = ()
            c.emit(node, "task.finished", task=task, attempt=run.attempt)
            c.feed(_build_finished(now, task, task, run.attempt, node, worker.worker, sizes))
            final = True
            if spec.kind is TaskKind.ACTOR_CREATION and spec.actor_id is not None:
                c.emit(node, "actor.alive", actor=spec.actor_id)
                self._actor_record(spec.actor_id, "ALIVE", node, worker.worker, run.attempt - 1)
        else:
            final = cancelled or not will_retry(spec, run.attempt, error_types)
            sizes = self._store(spec, stored * len(spec.return_ids), node) if final else ()
            c.emit(node, "task.failed", task=task, attempt=run.attempt, error=error_types[0], final=final)
            c.feed(
                E.TaskFailed(
                    now=now,
                    stimulus_id=task,
                    task=task,
                    attempt=run.attempt,
                    node=node,
                    worker=worker.worker,
                    error_types=error_types,
                    cancelled=cancelled,
                    return_sizes=sizes,
                )
            )
        c.mark_dirty(node)
        if final and spec.kind is TaskKind.NORMAL:
            self.maybe_drop_payload(task)
        elif final and spec.kind is TaskKind.ACTOR_TASK:
            self.drop_payload(task)
            if spec.actor_id is not None:
                self._call_closed(spec.actor_id)

    def _exit_requested(self, run: Run, token: int) -> None:
        """The call's interval ended after it called ``exit_actor()``: report the exit (the
        core fails the call, the queued ones and, once none runs, ends the actor)."""
        if run.ended or run.token != token:
            return
        self.finishes += 1
        c = self.c
        spec = run.spec
        task = spec.task_id
        actor_id = spec.actor_id
        assert actor_id is not None
        worker = self._close_run(run)
        c.emit(run.node, "actor.exit_requested", actor=actor_id, task=task, attempt=run.attempt)
        c.feed(
            E.ActorKillRequested(
                now=c.now(),
                stimulus_id=task,
                actor=actor_id,
                exit_call=task,
                exit_attempt=run.attempt,
                worker=worker.worker,
            )
        )
        c.mark_dirty(run.node)
        self.drop_payload(task)
        self._call_closed(actor_id)

    @staticmethod
    def _close_run(run: Run) -> SimWorker:
        """Mark ``run`` ended and take it off its worker (and actor); returns the worker."""
        run.ended = True
        task = run.spec.task_id
        worker = run.worker
        worker.runs.pop(task, None)
        actor = worker.actor
        if actor is not None:
            actor.calls.pop(task, None)
        return worker

    def _store(self, spec: TaskSpec, stored: list[StoredValue], node: NodeID) -> tuple[tuple[ObjectID, int], ...]:
        values = self.c.values
        owner_of = self.c.owner_of
        sizes = []
        for obj, value in zip(spec.return_ids, stored):
            previous = values.store(obj, value)
            if previous is not None and previous is not value:
                self.release_contained(previous)
            values.add_copy(obj, node)
            owner_of.setdefault(obj, spec.owner)
            sizes.append((obj, value.size_bytes))
        return tuple(sizes)

    # -- cancellation ---------------------------------------------------------------------------------

    def interrupt_task(self, command: C.InterruptTask) -> None:
        worker = self.workers.get(command.worker)
        run = None if worker is None else worker.runs.get(command.task)
        if worker is None or run is None or run.attempt != command.attempt or run.ended:
            self.c.count("interrupt_too_late")
            return
        self.c.emit(run.node, "task.interrupted", task=command.task, force=command.force)
        if command.force:
            self.kill_worker(worker.worker, "force-cancelled")
            return
        run.cancel_requested = True
        if run.async_task is not None:
            run.async_task.cancel()
            actor = worker.actor
            if actor is not None:
                self.schedule_step(actor)
            return
        if run.spec.kind is TaskKind.ACTOR_TASK:
            # Not interrupted (an actor has state): its code may poll is_canceled() (the flag above).
            self.c.count("interrupt_sync_actor_task_ignored")
            return
        if run.finishing:
            run.token += 1
            run.finishing = False
            self._release_holds(run)
            self._finish(run, run.token, [self._error_value(run, TaskCancelledError(command.task), True)], ("detray.exceptions.TaskCancelledError",), True)
            return
        # As Ray documents for a running normal task: ``KeyboardInterrupt`` in its code (its
        # ``except KeyboardInterrupt:``/``finally`` cleanup runs); the caller's get raises
        # ``TaskCancelledError`` (``body_done`` stores that when the body lets it out).
        ex = run.exec
        if ex is None or ex.dead:
            return
        if ex.waiter is not None:
            self.cancel_wait(ex)
        elif ex.unit.state is not UnitState.BLOCKED:
            return
        self.c.run_exec(ex, "throw", KeyboardInterrupt())

    # -- actors ---------------------------------------------------------------------------------------

    def _start_async_call(self, run: Run, actor: ActorInstance, context: UnitContext) -> None:
        loop = actor.loop
        assert loop is not None
        call_context = contextvars.Context()
        call_context.run(CURRENT_CALL.set, context)
        # The task copies the context it is created in: the call's (Python 3.10 has no context=).
        task = call_context.run(loop.create_task, self._async_body(run))
        task.add_done_callback(lambda done: self._async_done(run, done))
        run.async_task = task
        self.schedule_step(actor)

    async def _async_body(self, run: Run) -> list[Any]:
        payload = run.payload
        assert payload is not None and payload.method is not None
        args, kwargs = self.resolve_args(payload)
        actor = run.worker.actor
        assert actor is not None
        try:
            bound = getattr(actor.instance, payload.method)
        except AttributeError as missing:
            bound = builtin_method(actor.instance, payload.method, missing)
        result = bound(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return self.pack_returns(run, result)

    def _async_done(self, run: Run, task: Any) -> None:
        if run.ended:
            return
        if task.cancelled():
            error: BaseException = TaskCancelledError(run.spec.task_id)
            self.body_done(run, Raised(error, ""))
            return
        exc = task.exception()
        if exc is not None:
            self.body_done(run, Raised(exc, format_user_traceback(exc)))
        else:
            self.body_done(run, Done(task.result()))

    def schedule_step(self, actor: ActorInstance) -> None:
        if actor.step_pending or actor.step_running or actor.loop is None:
            return
        actor.step_pending = True
        self.c.queue.append((self._run_step, actor))

    def _run_step(self, actor: ActorInstance) -> None:
        actor.step_pending = False
        worker = self.workers.get(actor.worker)
        if worker is None or not worker.alive or actor.loop is None:
            return
        actor.step_running = True
        context = UnitContext(
            kind="async_step",
            worker_id=worker.worker,
            node=worker.node,
            job=ids.job_id(1),
            parent_key=TaskID(f"{actor.actor_id}@step"),
            worker=worker,
            actor=actor,
            gpu_ids=actor.gpu_ids,
        )
        unit = UserCode(
            self._step_body,
            (actor,),
            context=context,
            label=f"{actor.meta.class_name} pid={worker.pid}, ip={worker.node}",
            random_slot=actor.random_slot,
        )
        unit.thread_key = actor  # every step runs the one event loop thread of the actor (coop's RLock)
        ex = Exec(unit=unit, context=context, worker=worker, actor=actor)
        worker.execs.append(ex)
        self.c.run_exec(ex, "start", None)

    def _step_body(self, actor: ActorInstance) -> None:
        while actor.resolutions:
            future, waiter = actor.resolutions.pop(0)
            if not future.done():
                future.set_result(self.value_for(waiter, waiter.objects[0]))
        loop = actor.loop
        if loop is not None:
            loop.run_ready()

    def _step_ended(self, ex: Exec, outcome: Outcome) -> None:
        actor = ex.actor
        assert actor is not None
        actor.step_running = False
        if isinstance(outcome, Raised):
            raise RuntimeError(f"the event loop of async actor {actor.actor_id} failed:\n{outcome.traceback}")
        loop = actor.loop
        if loop is None:
            return
        if actor.resolutions or loop.has_ready():
            self.schedule_step(actor)
            return
        due = loop.next_timer_s()
        if due is not None and (actor.timer_at is None or due < actor.timer_at):
            actor.timer_at = due
            self.c.later(max(0.0, due - self.c.now()), self._timer_step, actor, due)

    def _timer_step(self, actor: ActorInstance, due: float) -> None:
        if actor.timer_at != due:
            return
        actor.timer_at = None
        self.schedule_step(actor)

    def _close_loop(self, loop: VirtualLoop) -> None:
        if not loop.is_closed():
            for task in _all_tasks(loop):
                task._log_destroy_pending = False  # its process died: nothing is left to run it
                task.cancel()
            loop._ready.clear()  # type: ignore[attr-defined]
            loop.close()

    def close_loops(self) -> None:
        for loop in self._loops:
            self._close_loop(loop)
        self._loops.clear()

    def report_actor_dead(self, command: C.ReportActorDead) -> None:
        actor = command.actor
        c = self.c
        c.emit(None, "actor.dead", actor=actor, cause=command.failure.kind.value)
        spec = self.actor_specs.get(actor)
        node = c.router.actors.node_of(actor)
        self._actor_record(actor, "DEAD", node, None, c.router.actors.restarts(actor))
        if spec is not None and spec.name is not None:
            c._plane_write(lambda: c.plane.release_actor_name(spec.namespace, spec.name, actor))
        self.drop_payload(ids.actor_creation_task(actor))
        self.out_of_scope.pop(actor, None)

    def _actor_record(self, actor: ActorID, state: str, node: NodeID | None, worker: WorkerID | None, restarts: int) -> None:
        from detray.controlplane import ActorRecord

        spec = self.actor_specs.get(actor)
        record = ActorRecord(
            actor_id=actor,
            state=state,
            node=node,
            worker=worker,
            name=None if spec is None else spec.name,
            namespace="" if spec is None else spec.namespace,
            restarts=restarts,
        )
        self.c._plane_write(lambda: self.c.plane.put_actor(record))

    # -- actor handles in scope ----------------------------------------------------------------------------

    def actor_handles_changed(self, changes: list[tuple[ActorID, int]]) -> None:
        counts = self.handle_counts
        for actor, delta in changes:
            counts[actor] = counts.get(actor, 0) + delta
            if counts[actor] <= 0:
                self.out_of_scope[actor] = None
                self._maybe_terminate(actor)

    def _call_opened(self, actor: ActorID) -> None:
        self.calls_open[actor] = self.calls_open.get(actor, 0) + 1

    def _call_closed(self, actor: ActorID) -> None:
        left = self.calls_open.get(actor, 0) - 1
        if left > 0:
            self.calls_open[actor] = left
            return
        self.calls_open.pop(actor, None)
        if actor in self.out_of_scope:
            self._maybe_terminate(actor)

    def _maybe_terminate(self, actor: ActorID) -> None:
        """A non-detached actor with no handle and no call in flight exits (Ray's rule)."""
        if self.handle_counts.get(actor, 0) > 0:
            self.out_of_scope.pop(actor, None)
            return
        if self.calls_open.get(actor, 0) > 0:
            return
        spec = self.actor_specs.get(actor)
        state = self.c.router.actors.state(actor)
        if spec is None or spec.detached or state is None or state.name == "DEAD":
            self.out_of_scope.pop(actor, None)
            return
        self.out_of_scope.pop(actor, None)
        self.handle_counts.pop(actor, None)
        self.c.emit(None, "actor.out_of_scope", actor=actor)
        self.c.feed(E.ActorKillRequested(now=self.c.now(), stimulus_id=self.c.sid("scope"), actor=actor, no_restart=True))

    # -- payloads and reference holds -----------------------------------------------------------------

    def add_payload(self, task: TaskID, payload: Payload, parent: UnitContext) -> None:
        self.payloads[task] = payload
        if payload.held_refs:
            self.hold_refs(payload.held_refs)
        if payload.held_actors:
            self.hold_actors(payload.held_actors)
        run = parent.run
        if run is not None and run.payload is not None:
            children = run.payload.children
            if children is None:
                children = run.payload.children = []
            children.append(task)

    def inline_bytes(self, task: TaskID) -> int:
        payload = self.payloads.get(task)
        if payload is None or not (payload.args or payload.kwargs):
            return 0
        total = 0
        for kind, item in payload.args:
            if kind == "v":
                total += item.size_bytes
        for _name, (kind, item) in payload.kwargs:
            if kind == "v":
                total += item.size_bytes
        return total

    def maybe_drop_payload(self, task: TaskID) -> None:
        """Drop a normal task's payload once it can never run again (no lineage kept)."""
        if task in self.payloads and not self.c.router.tasks.has_lineage(task):
            state = self.c.router.tasks.state(task)
            if state is None or state.name in ("FINISHED", "FAILED", "CANCELLED"):
                self.drop_payload(task)

    def drop_payload(self, task: TaskID) -> None:
        payload = self.payloads.pop(task, None)
        if payload is None:
            return
        if payload.held_refs:
            self.release_refs(payload.held_refs)
        if payload.held_actors:
            self.actor_handles_changed([(actor, -1) for actor in sorted(payload.held_actors)])

    def object_freed(self, obj: ObjectID) -> None:
        if not ids.is_put(obj):
            self.maybe_drop_payload(ids.creating_task(obj))

    def hold_refs(self, objects: Iterable[ObjectID]) -> None:
        self._ref_events(objects, E.RefsAdded)

    def release_refs(self, objects: Iterable[ObjectID]) -> None:
        self._ref_events(objects, E.RefsRemoved)

    def _ref_events(self, objects: Iterable[ObjectID], cls: Any) -> None:
        owner_of = self.c.owner_of
        by_owner: dict[WorkerID, list[ObjectID]] = {}
        for obj in objects:
            owner = owner_of.get(obj)
            if owner is not None:
                by_owner.setdefault(owner, []).append(obj)
        for owner in sorted(by_owner):
            self.c.feed(cls(now=self.c.now(), stimulus_id="holds", owner=owner, objects=tuple(sorted(by_owner[owner]))))

    def release_contained(self, value: StoredValue) -> None:
        if value.contained_refs:
            self.release_refs(value.contained_refs)
        if value.contained_actors:
            self.actor_handles_changed([(actor, -1) for actor in sorted(value.contained_actors)])

    def hold_actors(self, actors: Iterable[ActorID]) -> None:
        counts = self.handle_counts
        for actor in actors:
            counts[actor] = counts.get(actor, 0) + 1


# -- bodies (run as user code) ---------------------------------------------------------------------


def _normal_body(executor: Executor, run: Run) -> list[Any]:
    payload = run.payload
    assert payload is not None and payload.function is not None
    args, kwargs = executor.resolve_args(payload)
    result = payload.function.function(*args, **kwargs)
    return executor.pack_returns(run, result)


def _creation_body(executor: Executor, run: Run) -> Any:
    payload = run.payload
    assert payload is not None and payload.function is not None
    args, kwargs = executor.resolve_args(payload)
    return payload.function.function(*args, **kwargs)


def _method_body(executor: Executor, run: Run) -> list[Any]:
    payload = run.payload
    assert payload is not None and payload.method is not None
    actor = run.worker.actor
    assert actor is not None
    args, kwargs = executor.resolve_args(payload)
    try:
        bound = getattr(actor.instance, payload.method)
    except AttributeError as missing:
        bound = builtin_method(actor.instance, payload.method, missing)
    result = bound(*args, **kwargs)
    return executor.pack_returns(run, result)


def _cancelled_error() -> type[BaseException]:
    import asyncio

    return asyncio.CancelledError


def _all_tasks(loop: VirtualLoop) -> list[Any]:
    import asyncio

    return [task for task in asyncio.all_tasks(loop) if not task.done()]
