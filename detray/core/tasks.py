"""The task manager: the owner side of tasks, lineage and reference counts.

Owns: every task's lifecycle from ``TaskSubmitted`` to its final outcome
(normal tasks and actor tasks), each task's retry budget and attempt number,
the lineage (specs of finished tasks kept while their outputs may have to be
rebuilt), the decision to rebuild a lost object or fail it, the owner's
reference counts (when an object may be freed), what fails when an owner
dies, and the resolution of an actor constructor's arguments.

Must not: place tasks or touch resources (the schedulers), track copies,
sizes or waiters of objects (the directory), run actors, order their queues
or count their restarts (the actor manager), read a clock, draw random
numbers, do I/O, or recurse through a cascade.

Theory of operation
-------------------
One entry point, ``handle(event) -> list[Command]``, dispatching on
``type(event)``. A task is born ``WAITING_FOR_ARGS``: ``RequestObjects``
(waiter ``"task:<id>"``) asks the directory to say when its top-level
arguments exist; the answer comes back as ``ArgumentsReady``. "Ready" is an
instant, not a state: the moment every argument exists the attempt is
``SCHEDULED`` (``ScheduleTask`` at the submitter's node for a normal task,
``SubmitActorTask`` for an actor task), then ``RUNNING`` (``TaskStarted``),
then ``FINISHED`` / ``FAILED`` / ``CANCELLED``. Calls from one owner to one
in-order actor (synchronous, ``max_concurrency == 1``, or not known here) are
submitted in arrival order (= ``caller_seq`` order): a call whose arguments
are ready waits, still ``WAITING_FOR_ARGS``, for the earlier calls to be
submitted, as Ray's actor task submitter does. Retries are not ordered.

Attempts count from 1 and every retry or reconstruction is a new attempt of
the same task id with the same return ids, so ``attempt - 1`` is the retry
budget spent (``spec.max_retries``, ``-1`` without bound). Normal tasks are
retried when their worker dies (``WORKER_CRASHED``) or the node that runs or
queues the attempt dies (``NODE_DIED``; the queueing node is the submitter's
until ``TaskArrived`` says the attempt moved), and on application errors
when ``retry_exceptions`` is ``True`` or names one of
``TaskFailed.error_types``. Actor tasks are retried only through
``ActorTaskAborted`` (the actor manager owns actor deaths) when the actor is
restarting and the budget allows. A cancelled task is never retried; a
running normal task cancelled with ``force`` (its worker is killed) ends
``CANCELLED`` with ``WORKER_CRASHED``, as Ray's ``get`` raises
``WorkerCrashedError`` for it (a queued one ends with ``TASK_CANCELLED``). An
event naming another attempt, an ended task or a dead node is dropped and
counted in ``stats``.

Final failures: ``FailObject`` goes out for each return id that nobody else
will fill. For ``TASK_ERROR`` (and a running task interrupted by
cancellation) the driver stores the error value as the return objects
(``TaskFailed.return_sizes``) and the directory records them from that
event, so the task manager emits ``FailObject`` only for return ids missing
from ``return_sizes``. Every other kind (``WORKER_CRASHED``, ``NODE_DIED``,
``ACTOR_DIED``, ``TASK_UNSCHEDULABLE``, ``TASK_CANCELLED`` of a queued task,
``OWNER_DIED``, an argument's failure) has no value: all return ids fail.

Lineage: a ``FINISHED`` task keeps its record while one of its return ids is
*in scope*: referenced by its owner (``refs > 0``) or an argument of another
kept record (``holds > 0``: pending tasks, finished tasks kept as lineage,
live actors' constructors). When the last one leaves scope the record is
released, releasing its own arguments in turn (a work-list loop, never
recursion). Failed and cancelled tasks keep no lineage. ``ObjectLost``
(the directory's ``ReportLost``) rebuilds lazily: a put, an actor-task
output, a released lineage or a spent budget fail the object with
``OBJECT_LOST`` (the message says which); otherwise the creating task goes
back to ``WAITING_FOR_ARGS`` as a new attempt, re-resolving its arguments
(a lost argument comes back through the directory as its own
``ObjectLost``: the recursion runs through the router, not through this
class). One attempt per task is in flight at a time: a second loss report
for another output of a task being rebuilt only joins the rebuild.

Reference counts: ``RefsAdded``/``RefsRemoved`` count the owner's handles;
pending tasks (and live actors, for their constructor) hold their arguments
(``users``). An object is freed (``FreeObject``) when both reach zero and
it is not still being created. The API must count a return id's handle
(``RefsAdded``) before its task can finish, i.e. with the submission.

Owners: ``OwnerDied`` (or ``WorkerDied`` of a worker that owns something, or
``NodeDied`` of the node such a worker lives on: ``ids.node_of_worker``)
cancels the owner's pending tasks, releases its lineage and fails every
object it owns with ``OWNER_DIED``. Objects of dead owners are never freed
here: their failure markers stay in the directory for borrowers to read.

Recursive cancellation (children of a cancelled task) is a driver concern:
this machine does not know which task submitted which; the driver sends one
``CancelRequested`` per child it knows of.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from detray.core import commands as cmd
from detray.core import events as ev
from detray.core.errors import ErrorKind, Failure, InvalidTransition, failure
from detray.core.ids import (
    ActorID,
    NodeID,
    ObjectID,
    TaskID,
    WorkerID,
    creating_task,
    is_put,
    node_of_worker,
    returning_task,
)
from detray.core.records import builder
from detray.core.specs import INFINITE, ActorSpec, TaskKind, TaskSpec


# Records built on the hot path: ``records.builder`` (positional, in the order named).
_build_request = builder(cmd.RequestObjects, "stimulus_id", "waiter", "node", "objects")
_build_schedule = builder(cmd.ScheduleTask, "stimulus_id", "spec", "attempt", "node")
_build_free = builder(cmd.FreeObject, "stimulus_id", "obj")

WAITER_PREFIX = "task:"
"""Waiter names of the task manager's ``RequestObjects``: ``f"task:{task_id}"``."""

STORY_LINES_MAX = 50_000
OUTCOMES_MAX = 200_000
"""Final outcomes remembered after a record is released (late events, queries)."""
DEAD_OWNERS_MAX = 100_000
RELEASED_ACTORS_MAX = 100_000


class TaskState(enum.Enum):
    """A task's state at its owner (declared in lifecycle order)."""

    WAITING_FOR_ARGS = "waiting_for_args"
    SCHEDULED = "scheduled"
    """``ScheduleTask`` (normal) or ``SubmitActorTask`` (actor task) emitted."""
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


_W = TaskState.WAITING_FOR_ARGS
_S = TaskState.SCHEDULED
_R = TaskState.RUNNING
_FINISHED = TaskState.FINISHED
_FAILED = TaskState.FAILED
_CANCELLED = TaskState.CANCELLED

_NORMAL = TaskKind.NORMAL
_ACTOR_TASK = TaskKind.ACTOR_TASK
_ACTOR_CREATION = TaskKind.ACTOR_CREATION
# (module constants: reading an Enum member off its class costs a descriptor call in 3.11)

ACTIVE_STATES = frozenset({_W, _S, _R})
"""An attempt (or its argument resolution) is in flight."""
_ACTIVE = (_W, _S, _R)
"""``ACTIVE_STATES`` for the hot path: a tuple compares members by identity in C."""
FINAL_STATES = frozenset({_FAILED, _CANCELLED})
"""No way out: the record is released at once (no lineage)."""

TRANSITIONS: dict[tuple[TaskState, TaskState], str] = {
    (_W, _S): "all arguments exist (ArgumentsReady); ScheduleTask / SubmitActorTask / CreateActor",
    (_W, _FAILED): "an argument failed (ArgumentsReady)",
    (_W, _CANCELLED): "CancelRequested, or the owner died",
    (_S, _R): "TaskStarted",
    (_S, _S): "retry: the queueing node died, or the actor restarts",
    (_S, _FINISHED): "TaskFinished before TaskStarted was seen",
    (_S, _FAILED): "TaskUnschedulable, actor died, node died with retries spent, TaskFailed",
    (_S, _CANCELLED): "CancelRequested (WithdrawTask), or the owner died",
    (_R, _S): "retry: worker or node died, retryable error, actor restarting",
    (_R, _FINISHED): "TaskFinished",
    (_R, _FAILED): "TaskFailed, or worker/node/actor died with retries spent",
    (_R, _CANCELLED): "interrupted after CancelRequested, or the owner died",
    (_FINISHED, _W): "an output was lost (ObjectLost): reconstruction attempt",
}

_LEGAL = frozenset((old.value, new.value) for old, new in TRANSITIONS)
"""``TRANSITIONS`` by state value: pairs of strings hash in C (an Enum member's hash is
Python code)."""

OWN_FAILURE_KINDS = frozenset(
    {
        ErrorKind.TASK_ERROR,
        ErrorKind.WORKER_CRASHED,
        ErrorKind.NODE_DIED,
        ErrorKind.ACTOR_DIED,
        ErrorKind.ACTOR_UNSCHEDULABLE,
        ErrorKind.TASK_UNSCHEDULABLE,
    }
)
"""Kinds a ``FAILED`` task decides itself; otherwise it carries an argument's failure
(or what the scheduler reported as unschedulable, e.g. an argument lost at fetch)."""
CANCELLED_FAILURE_KINDS = frozenset({ErrorKind.TASK_CANCELLED, ErrorKind.OWNER_DIED, ErrorKind.WORKER_CRASHED})
"""Kinds a ``CANCELLED`` task carries; ``WORKER_CRASHED`` only after a cancel with ``force``
killed the worker that ran it."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What is remembered of a task after its record is released."""

    state: TaskState
    attempt: int
    failure: Failure | None
    """Why it failed or was cancelled; ``OWNER_DIED`` also for a finished task whose
    lineage died with its owner."""
    owner: WorkerID
    cancel_force: bool = False


_build_outcome = builder(Outcome, "state", "attempt", "failure", "owner", "cancel_force")


class _Task:
    __slots__ = (
        "key",
        "spec",
        "args",
        "submit_node",
        "state",
        "attempt",
        "node",
        "worker",
        "hops",
        "args_ready",
        "call_queue",
        "cancel_requested",
        "cancel_force",
        "reconstructing",
        "lost",
        "scope",
    )

    def __init__(self, spec: TaskSpec, args: tuple[ObjectID, ...], submit_node: NodeID) -> None:
        self.key: TaskID = spec.task_id
        self.spec = spec
        self.args = args
        """``spec.args`` without repeats: one hold and one use per task."""
        self.submit_node = submit_node
        self.state = _W
        self.attempt = 1
        self.node: NodeID | None = None
        """Where the attempt is queued (normal tasks) or runs."""
        self.worker: WorkerID | None = None
        self.hops = -1
        """Highest ``TaskArrived.hops`` seen for the attempt (older forwards are stale)."""
        self.args_ready = False
        self.call_queue: tuple[WorkerID, ActorID] | None = None
        """Set while an actor call waits to be submitted in caller order."""
        self.cancel_requested = False
        self.cancel_force = False
        self.reconstructing = False
        self.lost: dict[ObjectID, None] = {}
        """Outputs reported lost during the current reconstruction."""
        self.scope = 0
        """How many of the return ids are in scope (have an object record)."""


class _Actor:
    __slots__ = ("key", "spec", "args", "node", "state")

    def __init__(self, spec: ActorSpec, args: tuple[ObjectID, ...], node: NodeID) -> None:
        self.key: ActorID = spec.actor_id
        self.spec = spec
        self.args = args
        self.node = node
        self.state = _W
        """``WAITING_FOR_ARGS`` then ``SCHEDULED`` once ``CreateActor`` is out."""


class _Object:
    __slots__ = ("owner", "refs", "users", "holds")

    def __init__(self, owner: WorkerID | None) -> None:
        self.owner = owner
        self.refs = 0
        """The owner's handles (RefsAdded - RefsRemoved)."""
        self.users = 0
        """Pending tasks and live actor constructors that need the value."""
        self.holds = 0
        """Kept records (pending, lineage, live actors) that list it as an argument."""


class _Owner:
    __slots__ = ("node", "tasks", "objects", "actors")

    def __init__(self, node: NodeID) -> None:
        self.node = node
        self.tasks: dict[TaskID, None] = {}
        self.objects: dict[ObjectID, None] = {}
        self.actors: dict[ActorID, None] = {}


_Handler = Callable[[Any, list[cmd.Command]], None]


class TaskManager:
    """The owner side: task lifecycle, retries, lineage and reference counts."""

    def __init__(
        self,
        *,
        story_lines_max: int = STORY_LINES_MAX,
        outcomes_max: int = OUTCOMES_MAX,
        dead_owners_max: int = DEAD_OWNERS_MAX,
    ) -> None:
        self.stats: collections.Counter[str] = collections.Counter()
        self._outcomes_max = outcomes_max
        self._dead_owners_max = dead_owners_max
        self._tasks: dict[TaskID, _Task] = {}
        self._actors: dict[ActorID, _Actor] = {}
        self._actor_by_creation: dict[TaskID, ActorID] = {}
        self._released_actors: collections.OrderedDict[ActorID, None] = collections.OrderedDict()
        self._objects: dict[ObjectID, _Object] = {}
        self._owners: dict[WorkerID, _Owner] = {}
        self._owners_by_node: dict[NodeID, dict[WorkerID, None]] = {}
        self._dead_owners: collections.OrderedDict[WorkerID, None] = collections.OrderedDict()
        self._by_node: dict[NodeID, dict[TaskID, None]] = {}
        self._by_worker: dict[WorkerID, dict[TaskID, None]] = {}
        self._call_queues: dict[tuple[WorkerID, ActorID], collections.OrderedDict[TaskID, None]] = {}
        self._live_incarnation: dict[NodeID, int] = {}
        self._dead_incarnation: dict[NodeID, int] = {}
        # Bounded memories and FIFOs drop or take their oldest entry over and over:
        # OrderedDicts, since a plain dict's next(iter()) walks every entry deleted
        # from its front (quadratic at scale).
        self._outcomes: collections.OrderedDict[TaskID, Outcome] = collections.OrderedDict()
        self._story: collections.deque[tuple[object, ...]] = collections.deque(maxlen=story_lines_max)
        """Flat entries (key, stimulus_id, from_state, to_state, template, *args): the text is
        ``template % args`` (``template`` as is without args), formatted only when read; the
        states by name, None for a plain log line (strings: the garbage collector stops
        tracking old entries). One flat tuple per entry: a nested args tuple would be one
        more object for each young garbage collection to visit."""
        self._handlers: dict[type[ev.Event], _Handler] = {
            ev.TaskSubmitted: self._on_task_submitted,
            ev.ArgumentsReady: self._on_arguments_ready,
            ev.TaskArrived: self._on_task_arrived,
            ev.TaskStarted: self._on_task_started,
            ev.TaskFinished: self._on_task_finished,
            ev.TaskFailed: self._on_task_failed,
            ev.TaskUnschedulable: self._on_task_unschedulable,
            ev.CancelRequested: self._on_cancel_requested,
            ev.WorkerDied: self._on_worker_died,
            ev.NodeJoined: self._on_node_joined,
            ev.NodeDied: self._on_node_died,
            ev.ObjectLost: self._on_object_lost,
            ev.RefsAdded: self._on_refs_added,
            ev.RefsRemoved: self._on_refs_removed,
            ev.OwnerDied: self._on_owner_died,
            ev.ActorCreated: self._on_actor_created,
            ev.ActorTaskAborted: self._on_actor_task_aborted,
            ev.ActorTerminated: self._on_actor_terminated,
        }

    # --- the one entry point ------------------------------------------------------------

    def handle(self, event: ev.Event) -> list[cmd.Command]:
        """Apply ``event``; return the commands it causes (each with its ``stimulus_id``)."""
        handler = self._handlers.get(event.__class__)
        if handler is None:
            raise TypeError(f"TaskManager does not handle {type(event).__name__}")
        out: list[cmd.Command] = []
        handler(event, out)
        return out

    @property
    def handled_events(self) -> tuple[type[ev.Event], ...]:
        return tuple(self._handlers)

    # --- queries ----------------------------------------------------------------------------

    def state(self, task: TaskID) -> TaskState | None:
        """The task's state, from its record or its remembered outcome (None if unknown)."""
        rec = self._tasks.get(task)
        if rec is not None:
            return rec.state
        outcome = self._outcomes.get(task)
        return None if outcome is None else outcome.state

    def attempt(self, task: TaskID) -> int | None:
        rec = self._tasks.get(task)
        if rec is not None:
            return rec.attempt
        outcome = self._outcomes.get(task)
        return None if outcome is None else outcome.attempt

    def settled_with(self, task: TaskID, attempt: int) -> TaskState | None:
        """The task's state when ``attempt`` is its latest attempt, else None (one lookup
        for the router's "was this result the one accepted?")."""
        rec = self._tasks.get(task)
        if rec is not None:
            return rec.state if rec.attempt == attempt else None
        outcome = self._outcomes.get(task)
        return outcome.state if outcome is not None and outcome.attempt == attempt else None

    def failure(self, task: TaskID) -> Failure | None:
        """Why a ``FAILED``/``CANCELLED`` task ended (None otherwise)."""
        outcome = self._outcomes.get(task)
        return None if outcome is None else outcome.failure

    def pending_reason(self, task: TaskID) -> str | None:
        """Why a task in flight is not done yet; None when it is not in flight."""
        rec = self._tasks.get(task)
        if rec is None or rec.state not in _ACTIVE:
            return None
        rebuild = " (reconstruction)" if rec.reconstructing else ""
        if rec.state is _W:
            if rec.args_ready:
                return f"waiting for earlier calls of {rec.spec.owner} to {rec.spec.actor_id} to be submitted"
            return f"waiting for arguments {', '.join(rec.args)}{rebuild}"
        if rec.state is _S:
            if rec.spec.kind is _ACTOR_TASK:
                return f"attempt {rec.attempt} queued at actor {rec.spec.actor_id}{rebuild}"
            return f"attempt {rec.attempt} scheduled at {rec.node}{rebuild}"
        cancel = " (cancel requested)" if rec.cancel_requested else ""
        return f"attempt {rec.attempt} running on {rec.worker}{rebuild}{cancel}"

    def refcount(self, obj: ObjectID) -> int:
        """References that keep ``obj``'s value: owner handles plus pending users."""
        ob = self._objects.get(obj)
        return 0 if ob is None else ob.refs + ob.users

    def has_lineage(self, task: TaskID) -> bool:
        """True while the task's record (spec and retry budget) is kept."""
        return task in self._tasks

    def owner_of(self, task: TaskID) -> WorkerID | None:
        """The worker that submitted ``task`` (None once its record is gone)."""
        rec = self._tasks.get(task)
        return None if rec is None else rec.spec.owner

    def rebuildable(self, obj: ObjectID) -> bool:
        """True when ``obj`` could be rebuilt from lineage now: a return of a normal task
        whose record is kept (puts and actor-task outputs never are)."""
        if is_put(obj):
            return False
        rec = self._tasks.get(creating_task(obj))
        return rec is not None and rec.spec.kind is TaskKind.NORMAL

    def attempts_in_flight(self) -> list[tuple[TaskID, TaskState, NodeID | None]]:
        """Every task in flight as (task, state, node), in submission order.

        ``node`` is where the attempt is queued or runs (None while waiting for
        arguments, and for an actor call queued at its actor). Actor
        constructors still waiting for their arguments are listed under their
        creation task id.
        """
        found: list[tuple[TaskID, TaskState, NodeID | None]] = [
            (tid, rec.state, rec.node) for tid, rec in self._tasks.items() if rec.state in _ACTIVE
        ]
        for a in self._actors.values():
            if a.state is _W:
                found.append((a.spec.creation.task_id, _W, None))
        return found

    def missing_arguments(self, task: TaskID) -> tuple[ObjectID, ...]:
        """Arguments a waiting task (or actor constructor) still waits for: all of
        them until the directory answers (it answers for all at once)."""
        rec = self._tasks.get(task)
        if rec is not None:
            return rec.args if rec.state is _W and not rec.args_ready else ()
        actor = self._actor_by_creation.get(task)
        if actor is not None and self._actors[actor].state is _W:
            return self._actors[actor].args
        return ()

    def in_scope(self, obj: ObjectID) -> bool:
        """True while the owner keeps ``obj``'s value: a handle, a pending user, or its
        creating attempt still in flight. False once ``FreeObject`` is due (lineage
        alone does not keep a value: it can be rebuilt)."""
        ob = self._objects.get(obj)
        if ob is not None and (ob.refs or ob.users):
            return True
        if is_put(obj):
            return False
        creator = self._tasks.get(creating_task(obj))
        return creator is not None and creator.state in _ACTIVE and obj in creator.spec.return_ids

    def owner_dead(self, obj: ObjectID) -> bool:
        """True when ``obj``'s owner is known to have died (its failure marker stays)."""
        ob = self._objects.get(obj)
        owner = ob.owner if ob is not None and ob.owner is not None else self._known_owner(obj)
        return owner is not None and owner in self._dead_owners

    def story(self, key: str) -> list[str]:
        """Recent history lines of a task, object, actor, owner or node id."""
        return [_story_line(entry) for entry in self._story if entry[0] == key]

    # --- tasks: submission and arguments ------------------------------------------------------

    def _on_task_submitted(self, e: ev.TaskSubmitted, out: list[cmd.Command]) -> None:
        spec = e.spec
        tid = spec.task_id
        sid = e.stimulus_id
        if tid in self._tasks or tid in self._outcomes:
            self._drop(tid, sid, "duplicate_task_submitted", "duplicate TaskSubmitted dropped")
            return
        kind = spec.kind
        if kind is _ACTOR_CREATION:
            self._drop(tid, sid, "creation_task_submitted", "actor creation arrives as ActorCreated; dropped")
            return
        owner = spec.owner
        if owner in self._dead_owners:
            self._drop(tid, sid, "task_of_dead_owner", "submitted by dead owner %s; dropped", owner)
            return
        args = spec.args
        if args:
            args = tuple(dict.fromkeys(args))
        rec = _Task(spec, args, e.node)
        self._tasks[tid] = rec
        own = self._owners.get(owner)
        if own is None:
            own = self._owner_record(owner)
        own.tasks[tid] = None
        objects = self._objects
        for obj in spec.return_ids:
            if obj in objects:  # the API counted a handle before submitting
                rec.scope += 1
        if args:
            self._hold(args)
            self._pin(args)
        self._story.append((tid, sid, None, None, "submitted from %s with %s args", e.node, len(args)))
        if kind is _ACTOR_TASK and spec.actor_id is not None and self._ordered_calls(spec.actor_id):
            key = (spec.owner, spec.actor_id)
            queue = self._call_queues.get(key)
            if queue is None:
                queue = self._call_queues[key] = collections.OrderedDict()
            queue[tid] = None
            rec.call_queue = key
        if args or rec.call_queue is not None:
            self._await_args(rec, sid, out)
        else:  # ``_await_args`` then ``_args_resolved``, fused: nothing to wait for
            rec.args_ready = True
            self._schedule(rec, sid, out)

    def _await_args(self, rec: _Task, sid: str, out: list[cmd.Command]) -> None:
        rec.args_ready = False
        if rec.args:
            request = _build_request(sid, WAITER_PREFIX + rec.key, rec.submit_node, rec.args)
            out.append(request)
        else:
            self._args_resolved(rec, sid, out)

    def _args_resolved(self, rec: _Task, sid: str, out: list[cmd.Command]) -> None:
        rec.args_ready = True
        if rec.call_queue is not None:
            self._release_calls(rec.call_queue, sid, out)
        else:
            self._schedule(rec, sid, out)

    def _on_arguments_ready(self, e: ev.ArgumentsReady, out: list[cmd.Command]) -> None:
        sid = e.stimulus_id
        if not e.waiter.startswith(WAITER_PREFIX):
            self.stats["arguments_ready_foreign_waiter"] += 1
            return
        tid = TaskID(e.waiter[len(WAITER_PREFIX) :])
        rec = self._tasks.get(tid)
        if rec is None:
            actor = self._actor_by_creation.get(tid)
            if actor is not None:
                self._constructor_arguments_ready(self._actors[actor], e, out)
                return
            self._drop(tid, sid, "stale_arguments_ready", "ArgumentsReady for an ended task dropped")
            return
        if rec.state is not _W or rec.args_ready:
            self._drop(tid, sid, "stale_arguments_ready", f"ArgumentsReady in {rec.state.name} dropped")
            return
        if e.failed:
            arg, cause = _first_failure(rec.args, e.failed)
            self._log(tid, sid, f"argument {arg} failed: {cause.kind.value}")
            self._conclude(rec, _FAILED, cause, sid, out)
            return
        self._args_resolved(rec, sid, out)

    def _schedule(self, rec: _Task, sid: str, out: list[cmd.Command]) -> None:
        self._move1(rec, _S, sid, "attempt %s submitted", rec.attempt)
        self._submit_attempt(rec, sid, out)

    def _submit_attempt(self, rec: _Task, sid: str, out: list[cmd.Command]) -> None:
        if rec.spec.kind is _ACTOR_TASK:
            out.append(cmd.SubmitActorTask(stimulus_id=sid, spec=rec.spec, attempt=rec.attempt))
            return
        rec.hops = -1
        self._place(rec, rec.submit_node, None)
        schedule = _build_schedule(sid, rec.spec, rec.attempt, rec.submit_node)
        out.append(schedule)

    def _ordered_calls(self, actor: ActorID) -> bool:
        """Ray submits calls to a synchronous single-threaded actor in caller order."""
        a = self._actors.get(actor)
        return a is None or (not a.spec.is_async and a.spec.max_concurrency == 1)

    def _release_calls(self, key: tuple[WorkerID, ActorID], sid: str, out: list[cmd.Command]) -> None:
        """Submit the calls at the head of a caller's queue whose arguments are ready."""
        queue = self._call_queues.get(key)
        if queue is None or key[0] in self._dead_owners:
            return
        while queue:
            tid = next(iter(queue))
            rec = self._tasks[tid]
            if not rec.args_ready:
                break
            del queue[tid]
            rec.call_queue = None
            self._schedule(rec, sid, out)
        if not queue:
            del self._call_queues[key]

    def _leave_call_queue(self, rec: _Task) -> tuple[WorkerID, ActorID] | None:
        key = rec.call_queue
        if key is None:
            return None
        queue = self._call_queues[key]
        del queue[rec.key]
        if not queue:
            del self._call_queues[key]
        rec.call_queue = None
        return key

    # --- tasks: attempts --------------------------------------------------------------------

    def _current(self, task: TaskID, attempt: int, sid: str, stale_key: str, what: str) -> _Task | None:
        """The record if ``attempt`` is the task's attempt in flight; else count it stale.
        (The hot handlers test the first case inline and call this for the second.)"""
        rec = self._tasks.get(task)
        if rec is None or rec.attempt != attempt or (rec.state is not _S and rec.state is not _R):
            if rec is None and task in self._actor_by_creation:
                self.stats["ignored_creation_attempt"] += 1  # the actor manager's business
                return None
            self._drop(task, sid, stale_key, "%s of attempt %s dropped (stale)", what, attempt)
            return None
        return rec

    def _on_task_arrived(self, e: ev.TaskArrived, out: list[cmd.Command]) -> None:
        sid = e.stimulus_id
        rec = self._tasks.get(e.spec.task_id)
        if rec is None or rec.attempt != e.attempt or (rec.state is not _S and rec.state is not _R):
            self._current(e.spec.task_id, e.attempt, sid, "stale_task_arrived", "TaskArrived")  # counts it
            return
        if rec.state is not _S or rec.spec.kind is not _NORMAL or e.hops <= rec.hops:
            self._drop(rec.key, sid, "stale_task_arrived", "TaskArrived (hops %s) in %s dropped", e.hops, rec.state.name)
            return
        rec.hops = e.hops
        if self._dead_incarnation and self._node_is_dead(e.node):
            self.stats["task_arrived_at_dead_node"] += 1
            self._attempt_lost(rec, ErrorKind.NODE_DIED, sid, out, f"it was queued at {e.node}, which died", e.node)
            return
        if rec.node != e.node:
            self._place(rec, e.node, None)
            moved = (rec.key, sid, None, None, "attempt %s moved to %s", rec.attempt, e.node)
            self._story.append(moved)  # ``_log``

    def _on_task_started(self, e: ev.TaskStarted, out: list[cmd.Command]) -> None:
        sid = e.stimulus_id
        rec = self._tasks.get(e.task)
        if rec is not None and rec.attempt == e.attempt and rec.state is _S:
            # The common case, decided as below without a second lookup.
            if not (self._dead_incarnation and self._node_is_dead(e.node)):
                self._place(rec, e.node, e.worker)
                self._move2(rec, _R, sid, "attempt %s running on %s", rec.attempt, e.worker)
                return
        if rec is None:
            outcome = self._outcomes.get(e.task)
            if outcome is not None and outcome.state is _CANCELLED and outcome.attempt == e.attempt:
                # The withdrawal lost the race with the start: stop the code.
                self.stats["task_started_after_cancel"] += 1
                self._log(e.task, sid, f"attempt {e.attempt} started after cancel: interrupt")
                out.append(
                    cmd.InterruptTask(
                        stimulus_id=sid, task=e.task, attempt=e.attempt, worker=e.worker, force=outcome.cancel_force
                    )
                )
                return
        rec = self._current(e.task, e.attempt, sid, "stale_task_started", "TaskStarted")
        if rec is None:
            return
        if rec.state is not _S:
            self._drop(rec.key, sid, "stale_task_started", "duplicate TaskStarted dropped")
            return
        if self._node_is_dead(e.node):
            self._drop(rec.key, sid, "task_started_on_dead_node", f"TaskStarted on dead {e.node}")
            if rec.spec.kind is _NORMAL:
                self._attempt_lost(rec, ErrorKind.NODE_DIED, sid, out, f"it started on {e.node}, which died", e.node)
            return
        self._place(rec, e.node, e.worker)
        self._move2(rec, _R, sid, "attempt %s running on %s", rec.attempt, e.worker)

    def _result_matches(self, rec: _Task, node: NodeID, worker: WorkerID, sid: str, what: str) -> bool:
        if rec.state is _R and worker != rec.worker:
            self._drop(rec.key, sid, "stale_" + what, "%s from %s, not %s: dropped", what, worker, rec.worker)
            return False
        if self._dead_incarnation and self._node_is_dead(node):
            self._drop(rec.key, sid, what + "_on_dead_node", "%s from dead %s dropped", what, node)
            return False
        return True

    def _on_task_finished(self, e: ev.TaskFinished, out: list[cmd.Command]) -> None:
        sid = e.stimulus_id
        rec = self._tasks.get(e.task)
        if rec is None or rec.attempt != e.attempt or (rec.state is not _R and rec.state is not _S):
            self._current(e.task, e.attempt, sid, "stale_task_finished", "TaskFinished")  # counts it
            return
        if ((rec.state is _R and e.worker != rec.worker) or self._dead_incarnation) and not self._result_matches(
            rec, e.node, e.worker, sid, "task_finished"
        ):  # (the call only when it may say no)
            if rec.state is _S and rec.spec.kind is _NORMAL and self._node_is_dead(e.node):
                # We never knew where it ran: its outputs died with that node.
                self._attempt_lost(rec, ErrorKind.NODE_DIED, sid, out, f"it ran on {e.node}, which died", e.node)
            return
        if rec.cancel_requested:
            self.stats["cancel_too_late"] += 1
            rec.cancel_requested = False
            rec.cancel_force = False
        self._unplace(rec)
        self._move2(rec, _FINISHED, sid, "attempt %s finished on %s", rec.attempt, e.worker)
        if rec.reconstructing or rec.lost:
            rec.reconstructing = False
            rec.lost.clear()
        rec.cancel_force = False
        if rec.args:
            self._unpin(rec.args, sid, out)
        objects = self._objects
        for obj in rec.spec.return_ids:
            ob = objects.get(obj)
            if ob is None or not (ob.refs or ob.users):  # else nothing to free (``_maybe_free``)
                self._maybe_free(obj, sid, out)
        if rec.scope == 0:
            self._drain([rec], sid)

    def _on_task_failed(self, e: ev.TaskFailed, out: list[cmd.Command]) -> None:
        sid = e.stimulus_id
        rec = self._current(e.task, e.attempt, sid, "stale_task_failed", "TaskFailed")
        if rec is None:
            return
        if not self._result_matches(rec, e.node, e.worker, sid, "task_failed"):
            if rec.state is _S and rec.spec.kind is _NORMAL and self._node_is_dead(e.node):
                self._attempt_lost(rec, ErrorKind.NODE_DIED, sid, out, f"it ran on {e.node}, which died", e.node)
            return
        stored = frozenset(obj for obj, _ in e.return_sizes)
        if rec.cancel_requested or e.cancelled:
            cause = self._task_failure(rec, ErrorKind.TASK_CANCELLED, "was cancelled while running")
            self._conclude(rec, _CANCELLED, cause, sid, out, stored=stored)
            return
        error = e.error_types[0] if e.error_types else "an exception"
        if _retryable(rec.spec, e.error_types) and self._may_retry(rec):
            self.stats["retries_task_error"] += 1
            self._retry(rec, sid, out, f"attempt {rec.attempt} raised {error}")
            return
        cause = self._task_failure(
            rec, ErrorKind.TASK_ERROR, f"raised {error}", error_type=error, **self._budget(rec)
        )
        self._conclude(rec, _FAILED, cause, sid, out, stored=stored)

    def _on_task_unschedulable(self, e: ev.TaskUnschedulable, out: list[cmd.Command]) -> None:
        rec = self._current(e.task, e.attempt, e.stimulus_id, "stale_task_unschedulable", "TaskUnschedulable")
        if rec is None:
            return
        if rec.state is not _S:
            self._drop(rec.key, e.stimulus_id, "stale_task_unschedulable", "TaskUnschedulable while running")
            return
        self._conclude(rec, _FAILED, e.failure, e.stimulus_id, out)

    def _on_cancel_requested(self, e: ev.CancelRequested, out: list[cmd.Command]) -> None:
        sid = e.stimulus_id
        rec = self._tasks.get(e.task)
        if rec is None or rec.state not in _ACTIVE:
            self._drop(e.task, sid, "cancel_ignored", "CancelRequested of a task not in flight ignored")
            return
        if rec.reconstructing:
            # Ray: cancelling a task that already finished has no effect.
            self._drop(e.task, sid, "cancel_ignored", "CancelRequested during reconstruction ignored")
            return
        if rec.state is _R:
            if rec.cancel_requested:
                self._drop(e.task, sid, "duplicate_cancel", "duplicate CancelRequested ignored")
                return
            rec.cancel_requested = True
            # Ray refuses force for actor tasks; a sync actor's call cannot be interrupted anyway.
            rec.cancel_force = e.force and rec.spec.kind is _NORMAL
            assert rec.worker is not None, f"running {rec.key} has no worker"
            self._log(rec.key, sid, f"cancel requested: interrupt {rec.worker} (force={rec.cancel_force})")
            out.append(
                cmd.InterruptTask(
                    stimulus_id=sid, task=rec.key, attempt=rec.attempt, worker=rec.worker, force=rec.cancel_force
                )
            )
            return
        self._withdraw(rec, sid, out, force=False)
        cause = self._task_failure(rec, ErrorKind.TASK_CANCELLED, "was cancelled before it ran")
        self._conclude(rec, _CANCELLED, cause, sid, out, cancel_force=e.force)

    def _withdraw(self, rec: _Task, sid: str, out: list[cmd.Command], *, force: bool) -> None:
        """Stop whatever the task's current step has asked of other machines."""
        if rec.state is _W:
            if rec.args and not rec.args_ready:
                out.append(cmd.ForgetWaiter(stimulus_id=sid, waiter=WAITER_PREFIX + rec.key))
        elif rec.state is _S:
            node = rec.node if rec.node is not None else rec.submit_node
            out.append(cmd.WithdrawTask(stimulus_id=sid, task=rec.key, attempt=rec.attempt, node=node))
        elif rec.spec.kind is _NORMAL and rec.worker is not None and rec.node is not None:
            if not self._node_is_dead(rec.node):
                out.append(
                    cmd.InterruptTask(stimulus_id=sid, task=rec.key, attempt=rec.attempt, worker=rec.worker, force=force)
                )

    # --- deaths -------------------------------------------------------------------------------

    def _on_worker_died(self, e: ev.WorkerDied, out: list[cmd.Command]) -> None:
        sid = e.stimulus_id
        if e.worker in self._owners:
            self._owner_died(e.worker, sid, out, f"its worker {e.worker} died")
        running = self._by_worker.get(e.worker)
        if running is None:
            self.stats["worker_died_without_task"] += 1
            return
        for tid in list(running):
            rec = self._tasks.get(tid)
            if rec is not None and rec.worker == e.worker:
                self._attempt_lost(rec, ErrorKind.WORKER_CRASHED, sid, out, f"its worker {e.worker} died", e.node)

    def _on_node_joined(self, e: ev.NodeJoined, out: list[cmd.Command]) -> None:
        node = e.node
        live = self._live_incarnation.get(node)
        dead = self._dead_incarnation.get(node)
        if (live is not None and e.incarnation <= live) or (dead is not None and e.incarnation <= dead):
            self._drop(node, e.stimulus_id, "stale_node_joined", f"NodeJoined incarnation {e.incarnation} dropped")
            return
        if live is not None and (dead is None or dead < live):
            # A newer incarnation proves the previous one is gone.
            self._node_lost(node, live, e.stimulus_id, out, "a newer incarnation joined")
        self._live_incarnation[node] = e.incarnation
        self._log(node, e.stimulus_id, f"incarnation {e.incarnation} joined")

    def _on_node_died(self, e: ev.NodeDied, out: list[cmd.Command]) -> None:
        node = e.node
        live = self._live_incarnation.get(node)
        dead = self._dead_incarnation.get(node)
        if (dead is not None and e.incarnation <= dead) or (live is not None and e.incarnation < live):
            self._drop(node, e.stimulus_id, "stale_node_died", f"NodeDied incarnation {e.incarnation} dropped")
            return
        self._node_lost(node, e.incarnation, e.stimulus_id, out, "NodeDied")

    def _node_lost(self, node: NodeID, incarnation: int, sid: str, out: list[cmd.Command], why: str) -> None:
        self._dead_incarnation[node] = incarnation
        self._log(node, sid, f"incarnation {incarnation} died ({why})")
        owners = self._owners_by_node.get(node)
        if owners:
            for owner in sorted(owners):
                self._owner_died(owner, sid, out, f"its node {node} died")
        queued_or_running = self._by_node.get(node)
        if not queued_or_running:
            return
        for tid in list(queued_or_running):
            rec = self._tasks.get(tid)
            if rec is not None and rec.node == node and rec.state in (_S, _R):
                self._attempt_lost(rec, ErrorKind.NODE_DIED, sid, out, f"its node {node} died", node)

    def _attempt_lost(
        self, rec: _Task, kind: ErrorKind, sid: str, out: list[cmd.Command], why: str, node: NodeID
    ) -> None:
        """A normal task's attempt died with its worker or node: retry it or fail it."""
        assert rec.spec.kind is _NORMAL, f"{rec.key}: actor tasks are aborted by the actor manager"
        if rec.cancel_requested and rec.cancel_force:
            # Ray: ``get`` of a running task cancelled with force raises ``WorkerCrashedError``.
            why = f"was cancelled with force=True: its worker was killed ({why})"
            cause = self._task_failure(rec, ErrorKind.WORKER_CRASHED, why, node=node, worker=rec.worker)
            self._conclude(rec, _CANCELLED, cause, sid, out)
        elif rec.cancel_requested:
            cause = self._task_failure(rec, ErrorKind.TASK_CANCELLED, f"was cancelled ({why})")
            self._conclude(rec, _CANCELLED, cause, sid, out)
        elif self._may_retry(rec) and not self._node_is_dead(rec.submit_node):
            self.stats["retries_" + kind.value] += 1
            self._retry(rec, sid, out, f"attempt {rec.attempt} lost: {why}")
        else:
            details = self._budget(rec)
            if rec.worker is not None:
                details["worker"] = rec.worker
            cause = self._task_failure(rec, kind, f"failed: {why} (attempt {rec.attempt})", node=node, **details)
            self._conclude(rec, _FAILED, cause, sid, out)

    def _retry(self, rec: _Task, sid: str, out: list[cmd.Command], why: str) -> None:
        self._unplace(rec)
        rec.attempt += 1
        self._move(rec, _S, sid, "retry as attempt %s: %s", rec.attempt, why)
        self._submit_attempt(rec, sid, out)

    def _may_retry(self, rec: _Task) -> bool:
        budget = rec.spec.max_retries
        return budget == INFINITE or rec.attempt <= budget

    def _budget(self, rec: _Task) -> dict[str, object]:
        return {"attempts": rec.attempt, "max_retries": rec.spec.max_retries}

    def _task_failure(self, rec: _Task, kind: ErrorKind, why: str, **details: object) -> Failure:
        spec = rec.spec
        return failure(kind, f"task {spec.name} ({spec.task_id}) {why}", task=spec.task_id, **details)

    def _conclude(
        self,
        rec: _Task,
        state: TaskState,
        cause: Failure,
        sid: str,
        out: list[cmd.Command],
        *,
        stored: frozenset[ObjectID] = frozenset(),
        targets: Iterable[ObjectID] | None = None,
        cancel_force: bool = False,
    ) -> None:
        """The task failed for good: fail its outputs, release what it held, forget it."""
        self._unplace(rec)
        queue = self._leave_call_queue(rec)
        self._move(rec, state, sid, "%s: %s", cause.kind.value, cause.message)
        returns = rec.spec.return_ids
        if targets is None:
            targets = [o for o in returns if o in rec.lost] if rec.reconstructing else returns
        for obj in targets:
            if obj not in stored:
                out.append(cmd.FailObject(stimulus_id=sid, obj=obj, failure=cause))
                self._log(obj, sid, f"failed: {cause.kind.value}")
        self._remember(rec.key, Outcome(state, rec.attempt, cause, rec.spec.owner, cancel_force))
        self._unpin(rec.args, sid, out)
        work: list[_Task] = []
        self._remove_record(rec, work)
        self._drain(work, sid)
        if rec.spec.owner not in self._dead_owners:
            for obj in returns:
                self._maybe_free(obj, sid, out)
        if queue is not None:
            self._release_calls(queue, sid, out)

    # --- actors ---------------------------------------------------------------------------

    def _on_actor_created(self, e: ev.ActorCreated, out: list[cmd.Command]) -> None:
        spec = e.spec
        sid = e.stimulus_id
        actor = spec.actor_id
        if actor in self._actors or actor in self._released_actors:
            self._drop(actor, sid, "duplicate_actor_created", "duplicate ActorCreated dropped")
            return
        owner = spec.creation.owner
        if owner in self._dead_owners:
            self._drop(actor, sid, "actor_of_dead_owner", f"created by dead owner {owner}; dropped")
            return
        a = _Actor(spec, tuple(dict.fromkeys(spec.creation.args)), e.node)
        self._actors[actor] = a
        self._actor_by_creation[spec.creation.task_id] = actor
        self._owner_record(owner).actors[actor] = None
        self._hold(a.args)
        self._pin(a.args)
        self._log(actor, sid, f"created by {owner}: {len(a.args)} constructor args")
        if a.args:
            waiter = WAITER_PREFIX + spec.creation.task_id
            out.append(cmd.RequestObjects(stimulus_id=sid, waiter=waiter, node=e.node, objects=a.args))
        else:
            self._create_actor(a, sid, out)

    def _constructor_arguments_ready(self, a: _Actor, e: ev.ArgumentsReady, out: list[cmd.Command]) -> None:
        if a.state is not _W:
            self._drop(a.key, e.stimulus_id, "stale_arguments_ready", "duplicate constructor ArgumentsReady")
            return
        if e.failed:
            # The creation attempt fails through the scheduler's fetch of that argument,
            # which reports it unschedulable with the argument's failure.
            arg, cause = _first_failure(a.args, e.failed)
            self.stats["actor_argument_failed"] += 1
            self._log(a.key, e.stimulus_id, f"constructor argument {arg} failed: {cause.kind.value}")
        self._create_actor(a, e.stimulus_id, out)

    def _create_actor(self, a: _Actor, sid: str, out: list[cmd.Command]) -> None:
        self._move(a, _S, sid, "constructor arguments exist: CreateActor")
        out.append(cmd.CreateActor(stimulus_id=sid, spec=a.spec))

    def _on_actor_terminated(self, e: ev.ActorTerminated, out: list[cmd.Command]) -> None:
        a = self._actors.get(e.actor)
        if a is None:
            self._drop(e.actor, e.stimulus_id, "stale_actor_terminated", "ActorTerminated of an unknown actor")
            return
        self._release_actor(a, e.stimulus_id, out, "it terminated")

    def _release_actor(self, a: _Actor, sid: str, out: list[cmd.Command], why: str) -> None:
        """The actor will never run its constructor again: drop its arguments."""
        if a.state is _W:
            if a.args:
                out.append(cmd.ForgetWaiter(stimulus_id=sid, waiter=WAITER_PREFIX + a.spec.creation.task_id))
            self._move(a, _CANCELLED, sid, f"released before creation: {why}")
        actor = a.key
        del self._actors[actor]
        del self._actor_by_creation[a.spec.creation.task_id]
        self._released_actors[actor] = None
        if len(self._released_actors) > RELEASED_ACTORS_MAX:
            self._released_actors.popitem(last=False)
        owner = a.spec.creation.owner
        own = self._owners.get(owner)
        if own is not None:
            del own.actors[actor]
            self._maybe_drop_owner(owner, own)
        self._log(actor, sid, f"constructor arguments released: {why}")
        self._unpin(a.args, sid, out)
        work: list[_Task] = []
        for obj in a.args:
            self._release_hold(obj, work)
        self._drain(work, sid)

    def _on_actor_task_aborted(self, e: ev.ActorTaskAborted, out: list[cmd.Command]) -> None:
        sid = e.stimulus_id
        rec = self._current(e.task, e.attempt, sid, "stale_actor_task_aborted", "ActorTaskAborted")
        if rec is not None and rec.spec.kind is not _ACTOR_TASK:
            self._drop(rec.key, sid, "stale_actor_task_aborted", "ActorTaskAborted of a normal task")
            rec = None
        if rec is not None:
            if rec.cancel_requested:
                cause = self._task_failure(rec, ErrorKind.TASK_CANCELLED, f"was cancelled ({e.failure.message})")
                self._conclude(rec, _CANCELLED, cause, sid, out)
            elif e.actor_restarting and self._may_retry(rec):
                self.stats["retries_actor_restarting"] += 1
                self._retry(rec, sid, out, f"actor {e.actor} restarting")
            else:
                self._conclude(rec, _FAILED, e.failure, sid, out)
        if not e.actor_restarting:
            a = self._actors.get(e.actor)
            if a is not None:
                self._release_actor(a, sid, out, "it died")

    # --- lineage: lost objects ------------------------------------------------------------

    def _on_object_lost(self, e: ev.ObjectLost, out: list[cmd.Command]) -> None:
        obj = e.obj
        sid = e.stimulus_id
        if is_put(obj):
            self._lost_for_good(obj, sid, out, "it was created by put, which has no lineage")
            return
        tid = creating_task(obj)
        rec = self._tasks.get(tid)
        if rec is None:
            outcome = self._outcomes.get(tid)
            if outcome is None:
                self._lost_for_good(obj, sid, out, f"its creating task {tid} is unknown to its owner")
            elif outcome.failure is not None and outcome.failure.kind is ErrorKind.OWNER_DIED:
                self._log(obj, sid, "lost; its owner died")
                out.append(cmd.FailObject(stimulus_id=sid, obj=obj, failure=outcome.failure))
            elif outcome.state is _FINISHED:
                self._lost_for_good(obj, sid, out, f"the lineage of its creating task {tid} was released")
            else:
                kind = outcome.failure.kind.value if outcome.failure else outcome.state.value
                self._lost_for_good(obj, sid, out, f"its creating task {tid} ended {kind}")
            return
        if obj not in rec.spec.return_ids:
            self.stats["lost_not_a_return"] += 1
            self._lost_for_good(obj, sid, out, f"it is not a return value of {tid}")
            return
        if rec.spec.kind is _ACTOR_TASK:
            self._lost_for_good(obj, sid, out, f"it is the output of actor task {tid}, which is not re-executed")
            return
        if rec.state in _ACTIVE:
            if rec.reconstructing:
                self.stats["lost_while_rebuilding"] += 1
                rec.lost[obj] = None
                self._log(obj, sid, f"lost again; {tid} attempt {rec.attempt} is already rebuilding it")
            else:
                self.stats["lost_before_created"] += 1
                self._log(obj, sid, f"reported lost before {tid} finished: ignored")
            return
        if not self._may_retry(rec):
            self._lost_for_good(
                obj,
                sid,
                out,
                f"its creating task {tid} spent its retries ({rec.attempt} attempts, "
                f"max_retries={rec.spec.max_retries})",
            )
            return
        rec.attempt += 1
        rec.reconstructing = True
        rec.lost[obj] = None
        self.stats["reconstructions"] += 1
        self._log(obj, sid, f"lost: rebuilding with {tid} attempt {rec.attempt}")
        self._move(rec, _W, sid, f"reconstruction of {obj} as attempt {rec.attempt}")
        self._pin(rec.args)
        self._await_args(rec, sid, out)

    def _lost_for_good(self, obj: ObjectID, sid: str, out: list[cmd.Command], why: str) -> None:
        self.stats["objects_lost"] += 1
        self._log(obj, sid, f"lost for good: {why}")
        cause = failure(ErrorKind.OBJECT_LOST, f"object {obj} was lost and cannot be rebuilt: {why}", obj=obj)
        out.append(cmd.FailObject(stimulus_id=sid, obj=obj, failure=cause))

    # --- reference counts and owners ------------------------------------------------------

    def _on_refs_added(self, e: ev.RefsAdded, out: list[cmd.Command]) -> None:
        owner = e.owner
        if owner in self._dead_owners:
            self.stats["refs_of_dead_owner"] += 1
            return
        objects = self._objects
        for obj in e.objects:
            ob = objects.get(obj)
            if ob is None:
                ob = self._new_object(obj, owner)
            elif ob.owner is not None and ob.owner in self._dead_owners:
                self.stats["refs_of_dead_owner"] += 1
                continue
            elif ob.owner is None:
                ob.owner = owner
                self._owner_record(owner).objects[obj] = None
            elif ob.owner != owner:
                self.stats["refs_owner_mismatch"] += 1
            ob.refs += 1

    def _on_refs_removed(self, e: ev.RefsRemoved, out: list[cmd.Command]) -> None:
        if e.owner in self._dead_owners:
            self.stats["refs_of_dead_owner"] += 1
            return
        sid = e.stimulus_id
        work: list[_Task] = []
        objects = self._objects
        for obj in e.objects:
            ob = objects.get(obj)
            if ob is None or ob.refs == 0:
                self.stats["refs_removed_unknown"] += 1
                continue
            ob.refs -= 1
            if ob.refs == 0 and (ob.users == 0 or ob.holds == 0):
                creator = self._creator(obj)  # one lookup for both (neither changes it)
                if ob.users == 0:
                    self._free_unused(obj, ob.owner, creator, sid, out)
                if ob.holds == 0:
                    self._forget(obj, ob, creator, work)
        if work:
            self._drain(work, sid)

    def _on_owner_died(self, e: ev.OwnerDied, out: list[cmd.Command]) -> None:
        if not self._owner_died(e.owner, e.stimulus_id, out, "OwnerDied"):
            self._drop(e.owner, e.stimulus_id, "stale_owner_died", "duplicate OwnerDied")

    def _owner_died(self, owner: WorkerID, sid: str, out: list[cmd.Command], why: str) -> bool:
        """Cancel the owner's pending tasks, release its lineage, fail what it owns."""
        if owner in self._dead_owners:
            return False
        self._dead_owners[owner] = None
        if len(self._dead_owners) > self._dead_owners_max:
            self._dead_owners.popitem(last=False)
        self._log(owner, sid, f"owner died ({why})")
        own = self._owners.pop(owner, None)
        if own is None:
            return True
        same_node = self._owners_by_node[own.node]
        del same_node[owner]
        if not same_node:
            del self._owners_by_node[own.node]
        cause = failure(ErrorKind.OWNER_DIED, f"the owner {owner} died ({why})", owner=owner)
        announced: set[ObjectID] = set()
        for tid in list(own.tasks):
            rec = self._tasks.get(tid)
            if rec is None:
                continue  # released as lineage while an earlier task of this owner ended
            returns = rec.spec.return_ids
            if rec.state in _ACTIVE:
                self._withdraw(rec, sid, out, force=True)
                force = rec.spec.kind is _NORMAL
                self._conclude(rec, _CANCELLED, cause, sid, out, targets=returns, cancel_force=force)
            else:
                for obj in returns:
                    out.append(cmd.FailObject(stimulus_id=sid, obj=obj, failure=cause))
                self._remember(tid, Outcome(_FINISHED, rec.attempt, cause, owner))
                self._log(tid, sid, "lineage released: its owner died")
                work: list[_Task] = []
                self._remove_record(rec, work)
                self._drain(work, sid)
            announced.update(returns)
        for obj in list(own.objects):
            if obj not in announced:
                out.append(cmd.FailObject(stimulus_id=sid, obj=obj, failure=cause))
            self._log(obj, sid, "failed: its owner died")
            ob = self._objects.get(obj)
            if ob is not None and ob.refs:
                ob.refs = 0
                if ob.holds == 0:
                    work = []
                    self._forget_object(obj, ob, work)
                    self._drain(work, sid)
        for actor in list(own.actors):
            a = self._actors.get(actor)
            if a is not None and not a.spec.detached:
                self._release_actor(a, sid, out, "its owner died")
        return True

    # --- bookkeeping: placement, objects, lineage -----------------------------------------

    def _place(self, rec: _Task, node: NodeID, worker: WorkerID | None) -> None:
        if rec.spec.kind is not _NORMAL:  # not indexed
            rec.node = node
            rec.worker = worker
            return
        key = rec.key
        old = rec.node
        if old == node and rec.worker is None:
            # Started where it was queued: ``_unplace`` then the else branch, fused: the key
            # moves to the end of its node's index (kept, not deleted and made again).
            queued = self._by_node[node]
            del queued[key]
            queued[key] = None
        else:
            if old is not None:
                self._unplace(rec)
            by_node = self._by_node
            at_node = by_node.get(node)
            if at_node is None:
                by_node[node] = {key: None}
            else:
                at_node[key] = None
        rec.node = node
        rec.worker = worker
        if worker is not None:
            by_worker = self._by_worker
            on_worker = by_worker.get(worker)
            if on_worker is None:
                by_worker[worker] = {key: None}
            else:
                on_worker[key] = None

    def _unplace(self, rec: _Task) -> None:
        node = rec.node
        if node is None:
            return
        if rec.spec.kind is _NORMAL:
            key = rec.key
            by_node = self._by_node
            at_node = by_node[node]
            del at_node[key]
            if not at_node:
                del by_node[node]
            worker = rec.worker
            if worker is not None:
                by_worker = self._by_worker
                on_worker = by_worker[worker]
                del on_worker[key]
                if not on_worker:
                    del by_worker[worker]
        rec.node = None
        rec.worker = None

    def _node_is_dead(self, node: NodeID) -> bool:
        dead = self._dead_incarnation.get(node)
        if dead is None:
            return False
        live = self._live_incarnation.get(node)
        return live is None or live <= dead

    def _owner_record(self, owner: WorkerID) -> _Owner:
        own = self._owners.get(owner)
        if own is None:
            node = node_of_worker(owner)
            own = self._owners[owner] = _Owner(node)
            same_node = self._owners_by_node.get(node)
            if same_node is None:
                same_node = self._owners_by_node[node] = {}
            same_node[owner] = None
        return own

    def _maybe_drop_owner(self, owner: WorkerID, own: _Owner) -> None:
        if own.tasks or own.objects or own.actors:
            return
        del self._owners[owner]
        same_node = self._owners_by_node[own.node]
        del same_node[owner]
        if not same_node:
            del self._owners_by_node[own.node]

    def _creator(self, obj: ObjectID) -> _Task | None:
        """The kept record of the task ``obj`` is a return value of (None for a put)."""
        task = returning_task(obj)
        if task is None:
            return None
        creator = self._tasks.get(task)
        return creator if creator is not None and obj in creator.spec.return_ids else None

    def _new_object(self, obj: ObjectID, owner: WorkerID | None) -> _Object:
        """An object enters scope: it counts for its creator's lineage."""
        creator = self._creator(obj)
        if creator is not None:
            creator.scope += 1
        if owner is None:
            owner = self._known_owner(obj)
        ob = self._objects[obj] = _Object(owner)
        if owner is not None and owner not in self._dead_owners:
            self._owner_record(owner).objects[obj] = None
        return ob

    def _known_owner(self, obj: ObjectID) -> WorkerID | None:
        """The owner of a return value, from its creator's record or outcome."""
        tid = returning_task(obj)
        if tid is None:
            return None
        creator = self._tasks.get(tid)
        if creator is not None:
            return creator.spec.owner if obj in creator.spec.return_ids else None
        outcome = self._outcomes.get(tid)
        return None if outcome is None else outcome.owner

    def _forget_object(self, obj: ObjectID, ob: _Object, work: list[_Task]) -> None:
        """An object left scope: its creator may no longer be needed as lineage."""
        self._forget(obj, ob, self._creator(obj), work)

    def _forget(self, obj: ObjectID, ob: _Object, creator: _Task | None, work: list[_Task]) -> None:
        """``_forget_object`` with ``creator = self._creator(obj)`` given."""
        del self._objects[obj]
        owner = ob.owner
        if owner is not None:
            own = self._owners.get(owner)
            if own is not None:
                del own.objects[obj]
                if not (own.tasks or own.objects or own.actors):
                    self._maybe_drop_owner(owner, own)
        if creator is not None:
            creator.scope -= 1
            if creator.scope == 0 and creator.state is _FINISHED:
                work.append(creator)

    def _hold(self, args: tuple[ObjectID, ...]) -> None:
        objects = self._objects
        for obj in args:
            ob = objects.get(obj)
            if ob is None:
                ob = self._new_object(obj, None)
            ob.holds += 1

    def _pin(self, args: tuple[ObjectID, ...]) -> None:
        objects = self._objects
        for obj in args:
            objects[obj].users += 1

    def _unpin(self, args: tuple[ObjectID, ...], sid: str, out: list[cmd.Command]) -> None:
        objects = self._objects
        for obj in args:
            ob = objects[obj]
            ob.users -= 1
            if ob.users == 0 and ob.refs == 0:
                self._maybe_free(obj, sid, out)

    def _release_hold(self, obj: ObjectID, work: list[_Task]) -> None:
        ob = self._objects[obj]
        ob.holds -= 1
        if ob.holds == 0 and ob.refs == 0:
            self._forget_object(obj, ob, work)

    def _maybe_free(self, obj: ObjectID, sid: str, out: list[cmd.Command]) -> None:
        """``FreeObject`` if nothing references ``obj`` and it is not being created."""
        ob = self._objects.get(obj)
        owner: WorkerID | None = None
        if ob is not None:
            if ob.refs or ob.users:
                return
            owner = ob.owner
        self._free_unused(obj, owner, self._creator(obj), sid, out)

    def _free_unused(
        self, obj: ObjectID, owner: WorkerID | None, creator: _Task | None, sid: str, out: list[cmd.Command]
    ) -> None:
        """``_maybe_free`` of an object without references (or record), whose owner as far
        as its record knows and ``creator = self._creator(obj)`` are given."""
        if creator is not None and creator.state in _ACTIVE:
            return  # freed when the attempt ends
        if owner is None:
            owner = self._known_owner(obj)
        if owner is not None and owner in self._dead_owners:
            return
        self.stats["objects_freed"] += 1
        self._story.append((obj, sid, None, None, "freed: no reference left"))  # ``_log``
        free = _build_free(sid, obj)
        out.append(free)

    def _remove_record(self, rec: _Task, work: list[_Task]) -> None:
        """Forget a task record; its arguments lose one hold (maybe their creator's lineage)."""
        del self._tasks[rec.key]
        owner = rec.spec.owner
        own = self._owners.get(owner)
        if own is not None:
            del own.tasks[rec.key]
            self._maybe_drop_owner(owner, own)
        for obj in rec.args:
            self._release_hold(obj, work)

    def _drain(self, work: list[_Task], sid: str) -> None:
        """Release finished records no longer needed as lineage, to a fixed point."""
        steps_max = len(self._tasks) + len(self._objects) + len(work) + 1
        steps = 0
        while work:
            steps += 1
            if steps > steps_max:
                raise AssertionError(f"lineage release cascade exceeded {steps_max} steps")
            rec = work.pop()
            if self._tasks.get(rec.key) is not rec or rec.state is not _FINISHED or rec.scope:
                continue
            self._remember(rec.key, _build_outcome(_FINISHED, rec.attempt, None, rec.spec.owner, False))
            self._log(rec.key, sid, "lineage released: no output in scope")
            self._remove_record(rec, work)

    # --- small helpers --------------------------------------------------------------------

    def _move(self, rec: _Task | _Actor, new: TaskState, sid: str, why: str, *args: object) -> None:
        """Change state (checked against ``TRANSITIONS``); the story says ``why % args``."""
        old = rec.state
        if (old._value_, new._value_) not in _LEGAL:
            raise InvalidTransition(
                f"{rec.key}: {old.name} -> {new.name} is not a legal move ({_text(why, args)})",
                self.story(rec.key),
            )
        rec.state = new
        self._story.append((rec.key, sid, old._name_, new._name_, why) + args)

    # ``_move`` with a fixed number of arguments for the hot moves: the entry is built as
    # one tuple (no ``*args`` tuple to pack, no concatenation); ``_move`` raises.
    def _move1(self, rec: _Task | _Actor, new: TaskState, sid: str, why: str, arg: object) -> None:
        old = rec.state
        if (old._value_, new._value_) not in _LEGAL:
            self._move(rec, new, sid, why, arg)  # raises
        rec.state = new
        self._story.append((rec.key, sid, old._name_, new._name_, why, arg))

    def _move2(self, rec: _Task | _Actor, new: TaskState, sid: str, why: str, arg: object, arg2: object) -> None:
        old = rec.state
        if (old._value_, new._value_) not in _LEGAL:
            self._move(rec, new, sid, why, arg, arg2)  # raises
        rec.state = new
        self._story.append((rec.key, sid, old._name_, new._name_, why, arg, arg2))

    def _log(self, key: str, sid: str, text: str, *args: object) -> None:
        self._story.append((key, sid, None, None, text) + args)

    def _drop(self, key: str, sid: str, stat: str, text: str, *args: object) -> None:
        self.stats[stat] += 1
        self._story.append((key, sid, None, None, text) + args)

    def _remember(self, task: TaskID, outcome: Outcome) -> None:
        outcomes = self._outcomes
        outcomes[task] = outcome
        if len(outcomes) > self._outcomes_max:
            outcomes.popitem(last=False)

    # --- invariants -----------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Cross-check every index against the records; AssertionError names the first break."""
        holds: collections.Counter[ObjectID] = collections.Counter()
        users: collections.Counter[ObjectID] = collections.Counter()
        for tid, rec in self._tasks.items():
            self._check_task(tid, rec)
            holds.update(rec.args)
            if rec.state in _ACTIVE:
                users.update(rec.args)
        for actor, a in self._actors.items():
            assert a.key == actor, f"actor record {actor} is keyed as {a.key}"
            assert a.state in (_W, _S), f"actor {actor} kept in {a.state.name}"
            assert self._actor_by_creation.get(a.spec.creation.task_id) == actor, f"{actor}: creation index"
            owner = a.spec.creation.owner
            if owner in self._dead_owners:
                assert a.spec.detached, f"non-detached actor {actor} outlived its dead owner {owner}"
            else:
                assert actor in self._owners[owner].actors, f"{actor} missing from owner {owner}'s actors"
            holds.update(a.args)
            users.update(a.args)
        assert len(self._actor_by_creation) == len(self._actors), "creation index has extra entries"
        for obj, ob in self._objects.items():
            assert ob.refs >= 0, f"{obj}: refs {ob.refs} < 0"
            assert ob.holds == holds[obj], f"{obj}: holds {ob.holds} but {holds[obj]} records list it"
            assert ob.users == users[obj], f"{obj}: users {ob.users} but {users[obj]} pending users"
            assert ob.refs > 0 or ob.holds > 0, f"{obj}: kept with no reference and no hold"
            if ob.owner is not None and ob.owner in self._owners:
                assert obj in self._owners[ob.owner].objects, f"{obj} missing from owner {ob.owner}'s objects"
            elif ob.owner is not None:
                # Its owner died: the owner's handles stopped counting; other tasks may still hold it.
                assert ob.refs == 0, f"{obj}: {ob.refs} refs of dead owner {ob.owner}"
        missing = [obj for obj in holds if obj not in self._objects]
        assert not missing, f"held objects without a record: {sorted(missing)}"
        self._check_indexes()

    def _check_task(self, tid: TaskID, rec: _Task) -> None:
        spec = rec.spec
        assert rec.key == tid == spec.task_id, f"task record {tid} is keyed as {rec.key}"
        assert rec.state not in FINAL_STATES, f"{tid}: {rec.state.name} record kept (no lineage for failures)"
        assert spec.kind is not TaskKind.ACTOR_CREATION, f"{tid}: creation task tracked as a task"
        assert tid not in self._outcomes, f"{tid}: has both a record and an outcome"
        assert rec.attempt >= 1, f"{tid}: attempt {rec.attempt}"
        budget = spec.max_retries
        assert budget == INFINITE or rec.attempt - 1 <= max(budget, 0), (
            f"{tid}: attempt {rec.attempt} exceeds max_retries={budget}"
        )
        scope = sum(1 for o in spec.return_ids if o in self._objects)
        assert rec.scope == scope, f"{tid}: scope {rec.scope} but {scope} outputs in scope"
        if rec.state is _FINISHED:
            assert rec.scope > 0, f"{tid}: finished with no output in scope, lineage not released"
            assert not rec.reconstructing and not rec.lost, f"{tid}: finished but reconstructing"
            assert rec.node is None and rec.worker is None, f"{tid}: finished but placed"
            assert not rec.cancel_requested, f"{tid}: finished with a pending cancel"
        if rec.lost:
            assert rec.reconstructing, f"{tid}: lost outputs {list(rec.lost)} outside a reconstruction"
            extra = [o for o in rec.lost if o not in spec.return_ids]
            assert not extra, f"{tid}: lost outputs {extra} are not its returns"
        if rec.reconstructing:
            assert rec.state in _ACTIVE and rec.lost, f"{tid}: reconstructing in {rec.state.name}"
            assert spec.kind is _NORMAL, f"{tid}: actor task outputs are never rebuilt"
        if rec.state is _W:
            assert rec.node is None and rec.worker is None, f"{tid}: waiting for args but placed"
            assert not rec.args_ready or rec.call_queue is not None, (
                f"{tid}: arguments ready but neither scheduled nor queued behind earlier calls"
            )
        else:
            assert rec.call_queue is None, f"{tid}: in a call queue while {rec.state.name}"
        if rec.cancel_requested:
            assert rec.state is _R, f"{tid}: cancel requested while {rec.state.name}"
        normal = spec.kind is _NORMAL
        if rec.state is _S:
            assert rec.worker is None, f"{tid}: scheduled but on worker {rec.worker}"
            assert (rec.node is not None) is normal, f"{tid}: scheduled at {rec.node} ({spec.kind.value})"
        if rec.state is _R:
            assert rec.node is not None and rec.worker is not None, f"{tid}: running but not placed"
        if normal and rec.node is not None:
            assert tid in self._by_node.get(rec.node, {}), f"{tid}: missing from node index {rec.node}"
            if rec.worker is not None:
                assert tid in self._by_worker.get(rec.worker, {}), f"{tid}: missing from worker index"
        assert spec.owner not in self._dead_owners, f"{tid}: owner {spec.owner} is dead"
        assert tid in self._owners[spec.owner].tasks, f"{tid}: missing from owner {spec.owner}'s tasks"
        if rec.call_queue is not None:
            assert tid in self._call_queues.get(rec.call_queue, {}), f"{tid}: missing from its call queue"

    def _check_indexes(self) -> None:
        for node, tids in self._by_node.items():
            assert tids, f"empty node index entry {node}"
            for tid in tids:
                rec = self._tasks.get(tid)
                assert rec is not None and rec.node == node, f"node index {node} lists {tid} placed elsewhere"
                assert rec.state in (_S, _R) and rec.spec.kind is _NORMAL, f"node index: {tid}"
        for worker, tids in self._by_worker.items():
            assert tids, f"empty worker index entry {worker}"
            for tid in tids:
                rec = self._tasks.get(tid)
                assert rec is not None and rec.worker == worker, f"worker index {worker} lists {tid}"
                assert rec.state is _R, f"worker index lists {tid} in {rec.state.name}"
        for key, queue in self._call_queues.items():
            assert queue, f"empty call queue {key}"
            for tid in queue:
                rec = self._tasks.get(tid)
                assert rec is not None and rec.call_queue == key, f"call queue {key} lists {tid}"
                assert rec.state is _W, f"call queue {key} lists {tid} in {rec.state.name}"
        for owner, own in self._owners.items():
            assert owner not in self._dead_owners, f"dead owner {owner} still has a record"
            assert own.tasks or own.objects or own.actors, f"empty owner record {owner}"
            assert own.node == node_of_worker(owner), f"owner {owner} indexed at {own.node}"
            assert owner in self._owners_by_node.get(own.node, {}), f"owner {owner} missing from node index"
            for tid in own.tasks:
                assert tid in self._tasks and self._tasks[tid].spec.owner == owner, f"{owner} lists task {tid}"
            for obj in own.objects:
                ob = self._objects.get(obj)
                assert ob is not None and ob.owner == owner, f"{owner} lists object {obj}"
            for actor in own.actors:
                assert actor in self._actors, f"{owner} lists released actor {actor}"
        for node, owners in self._owners_by_node.items():
            assert owners, f"empty owners-by-node entry {node}"
            for owner in owners:
                assert owner in self._owners and self._owners[owner].node == node, f"{node} lists owner {owner}"
        assert len(self._outcomes) <= self._outcomes_max, "outcomes unbounded"
        assert len(self._dead_owners) <= self._dead_owners_max, "dead owners unbounded"
        assert len(self._released_actors) <= RELEASED_ACTORS_MAX, "released actors unbounded"


def _first_failure(
    args: tuple[ObjectID, ...], failed: tuple[tuple[ObjectID, Failure], ...]
) -> tuple[ObjectID, Failure]:
    """The failure of the first failed argument in argument order (deterministic)."""
    by_obj = dict(failed)
    for arg in args:
        cause = by_obj.get(arg)
        if cause is not None:
            return arg, cause
    return failed[0]


def _retryable(spec: TaskSpec, error_types: tuple[str, ...]) -> bool:
    allowed = spec.retry_exceptions
    if allowed is True:
        return True
    if allowed is False:
        return False
    return any(name in allowed for name in error_types)


def will_retry(spec: TaskSpec, attempt: int, error_types: tuple[str, ...]) -> bool:
    """Whether an attempt that raised ``error_types`` will be retried (the task manager's
    rule): drivers use it to store the error as the result only when it is final."""
    budget = spec.max_retries
    return _retryable(spec, error_types) and (budget == INFINITE or attempt <= budget)


def _text(template: str, args: tuple[object, ...]) -> str:
    """A story line: ``template % args``, or ``template`` as is without ``args``."""
    return template % args if args else template


def _story_line(entry: tuple[object, ...]) -> str:
    """A story entry as read: ``sid: text``, or ``sid: OLD -> NEW: text`` for a move."""
    sid, old, new, template = entry[1:5]
    assert isinstance(template, str)
    text = _text(template, entry[5:])
    if old is None or new is None:
        return f"{sid}: {text}"
    return f"{sid}: {old} -> {new}: {text}"
