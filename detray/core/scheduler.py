"""The per-node scheduler: local resources, the local queue, the worker pool, placement.

Owns: one node's resource ledger (CPU, GPU with instance ids, custom; fixed
point, see ``resources``), the attempts that reached this node and are not
done here yet, this node's workers (starting, idle, leased to a task,
dedicated to an actor), and a view of the other live nodes (totals as they
joined, availability as the control plane reports it). It decides, for each
attempt, run here / forward (spillback) / keep pending, through a pluggable
``SchedulingPolicy`` (``policy.DefaultPolicy`` by default).

Must not: own a task's lifecycle or retries (the task manager does; this
machine forgets an attempt once it is forwarded, finished, failed, withdrawn,
lost with its worker, or reported unschedulable), move objects (the directory
does, answering ``FetchArguments`` with ``ArgumentsFetched``), interrupt
running code, read a clock or draw randomness.

Theory of operation. One entry point, ``handle(event) -> list[Command]``.

1. ``TaskArrived``: the policy places the attempt. Here: ``FetchArguments``
   (state FETCHING; straight to QUEUED when it has no arguments). Elsewhere:
   ``ForwardTask`` with ``hops + 1``, and the target's availability in the
   view is reduced until its next report. Nowhere feasible: INFEASIBLE with
   one ``Warn``; re-placed when a node joins. Hard affinity to a dead,
   unknown or infeasible node: ``ReportUnschedulable``.
2. Queued attempts wait in FIFO queues per scheduling class (same placement,
   resources, strategy and hops). Dispatch walks the classes oldest head
   first; while a head fits it takes its resources (WAITING_FOR_WORKER),
   then idle workers (lowest worker id first) are handed out in FIFO order
   (RUNNING, ``StartTask`` with concrete GPU ids). Missing workers are
   started, never more starting at once than attempts waiting for one.
3. ``TaskFinished`` / ``TaskFailed`` release and idle the worker; an actor
   creation's worker instead stays with the actor, holding
   ``spec.resources`` (placement needed ``spec.placement``) until
   ``WorkerDied``; a failed creation releases and ``KillWorker``s it.
4. ``WorkerBlocked`` lends the worker's CPUs back (never its GPUs);
   ``WorkerUnblocked`` takes back what is free (a shortfall is counted in
   ``stats["unblock_cpu_short"]``; the worker then runs on fewer CPUs).
5. When another node reports room (or joins), queued attempts that cannot
   run here now and were never forwarded are asked again (``spill_only``),
   newest first per class, so the local FIFO order holds for the rest.
6. Arguments stay local from the fetch until the attempt leaves: the
   directory holds the copies an answered fetch made local (never evicting or
   spilling them), and every attempt that sent ``FetchArguments`` sends
   ``ReleaseArguments`` when it leaves this node (finished, failed,
   withdrawn, forwarded, lost with its worker; a node death drops
   everything anyway). If a held copy goes all the same (a fault),
   ``ArgumentsMissing`` puts a QUEUED or WAITING_FOR_WORKER attempt back to
   FETCHING (its resources released) and fetches again; a RUNNING attempt
   has read its arguments and ignores it.
7. ``ArgumentsFetched`` with a failure: the attempt can never run here;
   the scheduler drops it and emits ``ReportUnschedulable`` carrying the
   argument's failure (its kind unchanged, e.g. ``OBJECT_LOST``), so the
   task manager fails the attempt even if nothing else tells it. If the
   directory path told it first, that report is a stale event there. The
   directory forgot that fetch with its answer: no ``ReleaseArguments``.
8. Late and duplicate events (old attempts, other workers, dead
   incarnations) are dropped and counted in ``stats``. ``NodeDied`` of this
   node's incarnation ends this scheduler (drivers build a new one for the
   next incarnation); every later event is counted and dropped.

Worker ids: ``ids.worker_id(node, counter)`` with counters starting at
``incarnation * WORKER_COUNTER_STRIDE`` by default, so a late ``WorkerDied``
of the previous incarnation never names a worker of this one.
"""

from __future__ import annotations

import bisect
import enum
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from detray.core import commands as C
from detray.core import events as E
from detray.core.errors import InvalidTransition
from detray.core.ids import ActorID, NodeID, ObjectID, TaskID, WorkerID, node_of_worker, worker_id
from detray.core.policy import (
    HYBRID_REASON,
    LOCAL as _LOCAL_PLACEMENT,
    DefaultPolicy,
    Placement,
    PlacementKind,
    PlacementRequest,
    SchedulingPolicy,
)
from detray.core.records import builder
from detray.core.view import ClusterView, NodeView, ResourceTable
from detray.core.resources import CPU, GPU, UNIT, Allocation, NodeResources, Units, add, as_floats, fits
from detray.core.specs import DefaultStrategy, SchedulingStrategy, TaskKind, TaskSpec


# Records built on the hot path: ``records.builder`` (positional, in the order named).
_build_fetch = builder(C.FetchArguments, "stimulus_id", "task", "attempt", "node", "objects")
_build_forward = builder(C.ForwardTask, "stimulus_id", "spec", "attempt", "from_node", "to_node", "hops")
_build_start = builder(C.StartTask, "stimulus_id", "spec", "attempt", "node", "worker", "gpu_ids")
_build_release = builder(C.ReleaseArguments, "stimulus_id", "task", "attempt", "node")
_build_placement_request = builder(PlacementRequest, "spec", "hops", "arg_bytes_by_node", "spill_only")

STORY_LINES_MAX = 20_000
DONE_ATTEMPTS_MAX = 100_000
"""Attempts remembered after they left, to recognise duplicate arrivals."""
WORKER_COUNTER_STRIDE = 100_000
"""Worker counters of incarnation ``n`` start at ``n * WORKER_COUNTER_STRIDE``."""
WARN_INFEASIBLE = "infeasible_task"

Key = tuple[TaskID, int]
"""An attempt: (task id, attempt number)."""
_ClassKey = tuple[
    tuple[tuple[str, int], ...], tuple[tuple[str, int], ...], SchedulingStrategy | str, int
]
"""(placement, resources, strategy, hops): the strategy is given by its name when it is a
``DefaultStrategy`` (equal keys for equal strategies, and a string hashes in C where a
dataclass hashes in Python, on every queue lookup)."""


class TaskState(enum.Enum):
    """An attempt's state on this node. Terminal states are forgotten at once."""

    NEW = "new"
    INFEASIBLE = "infeasible"
    FETCHING = "fetching"
    QUEUED = "queued"
    WAITING_FOR_WORKER = "waiting_for_worker"
    RUNNING = "running"
    FORWARDED = "forwarded"
    FINISHED = "finished"
    FAILED = "failed"
    ARGS_FAILED = "args_failed"
    UNSCHEDULABLE = "unschedulable"
    WITHDRAWN = "withdrawn"
    LOST = "lost"


S = TaskState
INITIAL_STATE = TaskState.NEW
TRANSITIONS: dict[tuple[TaskState, TaskState], str] = {
    (S.NEW, S.FETCHING): "placed here; arguments to fetch",
    (S.NEW, S.QUEUED): "placed here; no arguments",
    (S.NEW, S.FORWARDED): "another node is better (spillback)",
    (S.NEW, S.INFEASIBLE): "no live node can ever fit it (warned once)",
    (S.NEW, S.UNSCHEDULABLE): "hard affinity to a dead, unknown or infeasible node",
    (S.INFEASIBLE, S.FETCHING): "a node joined; placed here",
    (S.INFEASIBLE, S.QUEUED): "a node joined; placed here, no arguments",
    (S.INFEASIBLE, S.FORWARDED): "a node joined; forwarded to it",
    (S.INFEASIBLE, S.UNSCHEDULABLE): "re-placement found it can never run",
    (S.INFEASIBLE, S.WITHDRAWN): "owner withdrew it",
    (S.INFEASIBLE, S.LOST): "this node died",
    (S.FETCHING, S.QUEUED): "arguments local",
    (S.FETCHING, S.ARGS_FAILED): "an argument can never be fetched",
    (S.FETCHING, S.WITHDRAWN): "owner withdrew it",
    (S.FETCHING, S.LOST): "this node died",
    (S.QUEUED, S.WAITING_FOR_WORKER): "resources allocated",
    (S.QUEUED, S.FETCHING): "a held argument copy is gone: fetch again",
    (S.QUEUED, S.FORWARDED): "spilled: another node has room now",
    (S.QUEUED, S.WITHDRAWN): "owner withdrew it",
    (S.QUEUED, S.LOST): "this node died",
    (S.WAITING_FOR_WORKER, S.RUNNING): "worker assigned (StartTask)",
    (S.WAITING_FOR_WORKER, S.WITHDRAWN): "owner withdrew it",
    (S.WAITING_FOR_WORKER, S.LOST): "this node died",
    (S.WAITING_FOR_WORKER, S.FETCHING): "a held argument copy is gone: fetch again",
    (S.RUNNING, S.FINISHED): "task finished",
    (S.RUNNING, S.FAILED): "task failed",
    (S.RUNNING, S.LOST): "worker or node died",
}
_LEGAL = frozenset((a.value, b.value) for a, b in TRANSITIONS)
"""TRANSITIONS by state value: string pairs hash fast (an Enum member's hash is Python code)."""
LIVE_STATES = frozenset(
    {S.INFEASIBLE, S.FETCHING, S.QUEUED, S.WAITING_FOR_WORKER, S.RUNNING}
)


class WorkerState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    LEASED = "leased"
    ACTOR = "actor"
    DRAINING = "draining"
    DEAD = "dead"


W = WorkerState
WORKER_TRANSITIONS: dict[tuple[WorkerState, WorkerState], str] = {
    (W.STARTING, W.IDLE): "WorkerStarted",
    (W.STARTING, W.DEAD): "died while starting",
    (W.IDLE, W.LEASED): "an attempt was assigned",
    (W.IDLE, W.DEAD): "worker died",
    (W.LEASED, W.IDLE): "attempt finished or failed",
    (W.LEASED, W.ACTOR): "actor creation finished: dedicated to the actor",
    (W.LEASED, W.DRAINING): "actor creation failed: KillWorker",
    (W.LEASED, W.DEAD): "worker died (its attempt is lost)",
    (W.ACTOR, W.DEAD): "actor's worker died",
    (W.DRAINING, W.DEAD): "worker died",
}


class SchedulerState(enum.Enum):
    UNJOINED = "unjoined"
    ALIVE = "alive"
    DEAD = "dead"


_WORKER_LEGAL = frozenset((a.value, b.value) for a, b in WORKER_TRANSITIONS)
SCHEDULER_TRANSITIONS: dict[tuple[SchedulerState, SchedulerState], str] = {
    (SchedulerState.UNJOINED, SchedulerState.ALIVE): "own NodeJoined",
    (SchedulerState.UNJOINED, SchedulerState.DEAD): "own NodeDied before joining",
    (SchedulerState.ALIVE, SchedulerState.DEAD): "own NodeDied, or a newer incarnation joined",
}


# Members as module constants: reading an Enum member off its class costs a descriptor
# call in 3.11, and the hot path compares states dozens of times per task.
_NEW = S.NEW
_INFEASIBLE = S.INFEASIBLE
_FETCHING = S.FETCHING
_QUEUED = S.QUEUED
_WAITING_FOR_WORKER = S.WAITING_FOR_WORKER
_RUNNING = S.RUNNING
_FORWARDED = S.FORWARDED
_FINISHED = S.FINISHED
_FAILED = S.FAILED
_ARGS_FAILED = S.ARGS_FAILED
_UNSCHEDULABLE = S.UNSCHEDULABLE
_WITHDRAWN = S.WITHDRAWN
_LOST = S.LOST
_W_STARTING = W.STARTING
_W_IDLE = W.IDLE
_W_LEASED = W.LEASED
_W_ACTOR = W.ACTOR
_W_DRAINING = W.DRAINING
_W_DEAD = W.DEAD
_UNJOINED = SchedulerState.UNJOINED
_ALIVE = SchedulerState.ALIVE
_DEAD = SchedulerState.DEAD
_ACTOR_TASK = TaskKind.ACTOR_TASK
_ACTOR_CREATION = TaskKind.ACTOR_CREATION
_LOCAL = PlacementKind.LOCAL
_FORWARD = PlacementKind.FORWARD
_SOLE_SPILL_REASON = f"spill: {HYBRID_REASON}"
_QUEUED_NAME = S.QUEUED.name
_W_IDLE_NAME = W.IDLE.name
_WAITING_FOR_WORKER_NAME = S.WAITING_FOR_WORKER.name
_INFEASIBLE_PLACEMENT = PlacementKind.INFEASIBLE
_UNSCHEDULABLE_PLACEMENT = PlacementKind.UNSCHEDULABLE


@dataclass(slots=True, eq=False)
class _Attempt:
    spec: TaskSpec
    attempt: int
    seq: int
    hops: int
    arg_bytes: tuple[tuple[NodeID, int], ...]
    cls: _ClassKey
    key: Key
    """``(spec.task_id, attempt)``: the attempt's key in every index."""
    state: TaskState = TaskState.NEW
    allocation: Allocation | None = None
    worker: WorkerID | None = None
    warned: bool = False
    fetch_sent: bool = False
    """``FetchArguments`` went out and the directory still waits or holds for it:
    ``ReleaseArguments`` goes out when the attempt leaves (not after a failed fetch,
    whose waiter the directory forgot with its answer)."""
    spill_request: PlacementRequest | None = None
    """The spill-only ``PlacementRequest`` of this attempt, built on first use (the same
    question is asked each time the view changes while it is queued)."""


@dataclass(slots=True, eq=False)
class _Worker:
    worker: WorkerID
    counter: int
    state: WorkerState
    task: Key | None = None
    actor: ActorID | None = None
    actor_allocation: Allocation | None = None
    blocked: bool = False
    lent_cpu: int = 0


_MEMBERSHIP: frozenset[type[E.Event]] = frozenset(
    {E.NodeJoined, E.NodeDied, E.NodeResourcesReported}
)


class Scheduler:
    """One node's scheduler. Build it with the node id; it becomes ALIVE on its
    own ``NodeJoined`` (or at once when ``resources`` and ``incarnation`` are given)."""

    def __init__(
        self,
        node: NodeID,
        *,
        policy: SchedulingPolicy | None = None,
        incarnation: int | None = None,
        resources: Mapping[str, int] | None = None,
        object_store_bytes: int = 0,
        spill_enabled: bool = True,
        first_worker_counter: int | None = None,
        story_lines_max: int = STORY_LINES_MAX,
        done_attempts_max: int = DONE_ATTEMPTS_MAX,
        table: ResourceTable | None = None,
    ) -> None:
        self.node = node
        self.policy: SchedulingPolicy = policy if policy is not None else DefaultPolicy()
        self.stats: Counter[str] = Counter()
        self.state = _UNJOINED
        self.incarnation = -1
        self.object_store_bytes = object_store_bytes
        self.spill_enabled = spill_enabled
        self._first_worker_counter = first_worker_counter
        self._ledger = NodeResources.of({})
        self._demand: Units = {}
        self._private_table = table is None
        """Alone, this scheduler keeps the view of the others itself; under a router the
        router applies membership and reports to the shared table once, then tells the
        schedulers that wait for a change (see ``waits_for_view``)."""
        self._view = ClusterView(node, ResourceTable() if table is None else table, self._ledger, self._demand)
        self._tasks: dict[Key, _Attempt] = {}
        self._attempts: dict[TaskID, int] = {}
        """Each task's latest attempt live here; its older live attempts (rare: a retry arrived
        before the old attempt left) are in ``_older_attempts``, ascending. Ints, not a list
        per task: nothing to allocate for the garbage collector to track."""
        self._older_attempts: dict[TaskID, list[int]] = {}
        self._infeasible: dict[Key, None] = {}
        # FIFOs whose head is taken over and over: OrderedDicts, because a plain dict's
        # next(iter()) walks over every entry deleted from its front (quadratic).
        self._queues: dict[_ClassKey, OrderedDict[Key, None]] = {}
        self._waiting_worker: OrderedDict[Key, None] = OrderedDict()
        self._running = 0
        self._workers: dict[WorkerID, _Worker] = {}
        self._idle: list[tuple[int, WorkerID]] = []
        self._starting = 0
        self._next_counter = 0
        self._seq = 0
        self._done: OrderedDict[Key, tuple[str, int]] = OrderedDict()
        """Attempts that left: their final state here (its value) and the hops they arrived
        with (an attempt spilled away may come back with more hops: a new arrival, not a
        duplicate). Strings and ints only: the garbage collector stops tracking the entries."""
        self._done_max = done_attempts_max
        self._story: deque[tuple[Any, ...]] = deque(maxlen=story_lines_max)
        """Flat entries (key, stimulus_id, state name, attempt, template, *args): a line is
        formatted only when ``story`` reads it (``_story_line``); state name and attempt are
        None but for a move (attempt None for a worker's). One flat tuple per entry: a nested
        args tuple would be one more object for each young garbage collection to visit."""
        self._handlers: dict[type[E.Event], Callable[[Any, list[C.Command]], None]] = {
            E.TaskArrived: self._on_task_arrived,
            E.ArgumentsFetched: self._on_arguments_fetched,
            E.ArgumentsMissing: self._on_arguments_missing,
            E.TaskStarted: self._on_task_started,
            E.TaskFinished: self._on_result,
            E.TaskFailed: self._on_result,
            E.TaskWithdrawn: self._on_task_withdrawn,
            E.WorkerStarted: self._on_worker_started,
            E.WorkerDied: self._on_worker_died,
            E.WorkerBlocked: self._on_worker_blocked,
            E.WorkerUnblocked: self._on_worker_unblocked,
            E.NodeJoined: self._on_node_joined,
            E.NodeDied: self._on_node_died,
            E.NodeResourcesReported: self._on_resources_reported,
        }
        if resources is not None:
            assert incarnation is not None, "give the incarnation with the resources"
            self._join(incarnation, resources, "init")

    # -- the one mutating entry point -------------------------------------------

    def handle(self, event: E.Event) -> list[C.Command]:
        """Apply one event; return the commands it causes (all with its stimulus_id)."""
        kind = event.__class__
        handler = self._handlers.get(kind)
        if handler is None:
            raise TypeError(f"Scheduler does not handle {kind.__name__}")
        out: list[C.Command] = []
        if self.state is _ALIVE or (
            self.state is _UNJOINED and kind in _MEMBERSHIP
        ):
            handler(event, out)
        else:
            self.stats[f"dropped_{self.state.value}_{kind.__name__}"] += 1
        return out

    # -- read-only queries ---------------------------------------------------------

    def available(self) -> Units:
        """A copy of this node's available resources (units)."""
        return dict(self._ledger.available)

    def total(self) -> Units:
        return dict(self._ledger.total)

    def queue_length(self) -> int:
        """Attempts here that are not running yet (infeasible, fetching, queued, waiting)."""
        return len(self._tasks) - self._running

    def running_count(self) -> int:
        return self._running

    def state_of(self, task: TaskID, attempt: int) -> TaskState | None:
        """The live state of an attempt here, or None when it is not (or no longer) here."""
        rec = self._tasks.get((task, attempt))
        return None if rec is None else rec.state

    def attempts(self) -> list[tuple[TaskID, int, TaskState]]:
        """Every attempt live here: (task, attempt, state), sorted."""
        return sorted((task, attempt, rec.state) for (task, attempt), rec in self._tasks.items())

    def arguments_of(self, task: TaskID, attempt: int) -> tuple[ObjectID, ...]:
        """The arguments of an attempt live here (empty when it is not here)."""
        rec = self._tasks.get((task, attempt))
        return () if rec is None else rec.spec.args

    def placement_of(self, task: TaskID, attempt: int) -> Units | None:
        """What an attempt live here needs to be placed (None when it is not here)."""
        rec = self._tasks.get((task, attempt))
        return None if rec is None else dict(rec.spec.placement)

    def worker_of(self, task: TaskID, attempt: int | None = None) -> WorkerID | None:
        """The worker running the attempt (default: the task's latest live attempt)."""
        if attempt is None:
            attempt = self._attempts.get(task)
            if attempt is None:
                return None
        rec = self._tasks.get((task, attempt))
        return None if rec is None else rec.worker

    def workers(self) -> dict[WorkerID, WorkerState]:
        return {w: rec.state for w, rec in sorted(self._workers.items())}

    def holdings(self) -> dict[str, Units]:
        """What each holder holds: ``"task:<id>:<attempt>"`` or ``"actor:<worker>"``."""
        out: dict[str, Units] = {}
        for (task, attempt), rec in self._tasks.items():
            if rec.allocation is not None:
                out[f"task:{task}:{attempt}"] = dict(rec.allocation.units)
        for wid, w in self._workers.items():
            if w.actor_allocation is not None:
                out[f"actor:{wid}"] = dict(w.actor_allocation.units)
        return out

    def gpu_free(self) -> list[int]:
        """Free units on each GPU instance, by GPU id."""
        return list(self._ledger.gpu_free)

    def view(self) -> dict[NodeID, NodeView]:
        """A copy of the view of every live node (this one included), by node id."""
        return self._view.nodes_copy()

    def waits_for_view(self) -> bool:
        """Attempts here wait for the view to change: infeasible ones (for a node that
        fits), or queued ones that could spill to a node with room."""
        return self.state is _ALIVE and bool(self._queues or self._infeasible)

    def infeasible_count(self) -> int:
        """Attempts here that no live node can fit (they wait for one to join)."""
        return len(self._infeasible)

    def story(self, key: str) -> list[str]:
        """Recent history lines of a task id, worker id or node id."""
        return [_story_line(entry) for entry in self._story if entry[0] == key]

    # -- tasks ------------------------------------------------------------------------

    def _on_task_arrived(self, ev: E.TaskArrived, out: list[C.Command]) -> None:
        spec = ev.spec
        key = (spec.task_id, ev.attempt)
        if ev.node != self.node:
            self.stats["misrouted_task_arrived"] += 1
            return
        if spec.kind is _ACTOR_TASK:
            raise InvalidTransition(
                f"actor task {spec.task_id} reached the scheduler of {self.node}: "
                "actor tasks go to the actor manager, which runs them on the actor's worker",
                self.story(spec.task_id),
            )
        left = self._done.get(key)
        if key in self._tasks or (left is not None and ev.hops <= left[1]):
            self.stats["duplicate_task_arrived"] += 1
            return
        if left is not None:
            del self._done[key]  # it comes back, forwarded further
        live = self._attempts.get(spec.task_id)
        if live is not None and live > ev.attempt:
            self.stats["stale_task_arrived"] += 1
            return
        self._seq += 1
        resources = _shape(spec.resources)
        placement = spec.placement_resources
        strategy = spec.strategy
        hops = ev.hops
        cls: _ClassKey = (
            resources if placement is None else _shape(placement),
            resources,
            strategy.name if strategy.__class__ is DefaultStrategy else strategy,
            hops,
        )
        attempt = ev.attempt
        rec = _Attempt(spec, attempt, self._seq, hops, ev.arg_bytes_by_node, cls, key)
        self._tasks[key] = rec
        if live is not None:
            self._older_attempts.setdefault(spec.task_id, []).append(live)
        self._attempts[spec.task_id] = attempt
        sid = ev.stimulus_id
        self._story.append((spec.task_id, sid, None, None, "attempt %s arrived (hops %s)", attempt, hops))  # ``_log``
        decision = self._decide(rec)
        if decision.kind is _LOCAL and self._starts_at_once(rec):
            self._start_at_once(rec, sid, out)
            return
        self._carry_out(rec, decision, sid, out)
        if rec.state is _QUEUED and len(self._queues[cls]) == 1:  # ``_heads_its_class``
            self._dispatch(sid, out)

    def _on_arguments_fetched(self, ev: E.ArgumentsFetched, out: list[C.Command]) -> None:
        rec = self._tasks.get((ev.task, ev.attempt))
        if rec is None or ev.node != self.node:
            self.stats["stale_arguments_fetched"] += 1
            return
        if rec.state is not _FETCHING:
            self.stats["duplicate_arguments_fetched"] += 1
            return
        sid = ev.stimulus_id
        if ev.failure is not None:
            _subtract(self._demand, rec.spec.placement)
            rec.fetch_sent = False  # the directory forgot the waiter with this answer
            self._set(rec, _ARGS_FAILED, sid, "argument failed: %s", ev.failure.kind.value)
            self._retire(rec, sid, out)
            out.append(
                C.ReportUnschedulable(
                    stimulus_id=sid, task=ev.task, attempt=ev.attempt, failure=ev.failure
                )
            )
            return
        self._set(rec, _QUEUED, sid, "arguments local")
        self._enqueue(rec)
        if self._heads_its_class(rec):
            self._dispatch(sid, out)

    def _on_arguments_missing(self, ev: E.ArgumentsMissing, out: list[C.Command]) -> None:
        rec = self._tasks.get((ev.task, ev.attempt))
        if rec is None or ev.node != self.node or not rec.fetch_sent:
            self.stats["stale_arguments_missing"] += 1
            return
        sid = ev.stimulus_id
        state = rec.state
        if state is _RUNNING:
            # The worker has read its arguments; the other copies stay held until it ends.
            self.stats["arguments_missing_while_running"] += 1
            self._log(ev.task, sid, "#%s: argument copy gone while running (ignored)", ev.attempt)
            return
        if state is _FETCHING:
            self.stats["arguments_missing_while_fetching"] += 1
            return
        # QUEUED or WAITING_FOR_WORKER: it may not start before its arguments are back.
        self._unqueue(rec)
        add(self._demand, rec.spec.placement)
        self._set(rec, _FETCHING, sid, "argument copy gone (%s): fetching again", ", ".join(ev.objects))
        self.stats["refetches"] += 1
        self._fetch(rec, sid, out)
        self._dispatch(sid, out)

    def _on_task_started(self, ev: E.TaskStarted, out: list[C.Command]) -> None:
        rec = self._tasks.get((ev.task, ev.attempt))
        if rec is None or rec.state is not _RUNNING or rec.worker != ev.worker:
            if self._is_actor_worker(ev.worker):
                self.stats["actor_task_event_ignored"] += 1
            else:
                self.stats["stale_task_started"] += 1
            return
        self.stats["task_started"] += 1
        self._story.append(
            (ev.task, ev.stimulus_id, None, None, "attempt %s started on %s", ev.attempt, ev.worker)
        )  # ``_log``

    def _on_result(self, ev: E.TaskFinished | E.TaskFailed, out: list[C.Command]) -> None:
        """``TaskFinished`` or ``TaskFailed``."""
        ok = ev.__class__ is E.TaskFinished
        wid = ev.worker
        sid = ev.stimulus_id
        rec = self._tasks.get((ev.task, ev.attempt))
        if rec is None or rec.state is not _RUNNING or rec.worker != wid or ev.node != self.node:
            if rec is None and self._is_actor_worker(wid):
                self.stats["actor_task_event_ignored"] += 1
            else:
                self.stats["stale_task_finished" if ok else "stale_task_failed"] += 1
            return
        worker = self._workers[wid]
        allocation = rec.allocation
        assert allocation is not None
        rec.allocation = None
        worker.blocked = False
        worker.lent_cpu = 0
        worker.task = None
        rec.worker = None
        self._running -= 1
        creation = rec.spec.kind is _ACTOR_CREATION
        if not creation and worker.state is _W_LEASED:
            # The common case, with ``_set`` and ``_make_idle`` inline (both moves are legal).
            story = self._story
            new = _FINISHED if ok else _FAILED
            rec.state = new
            template = "finished on %s" if ok else "failed on %s"
            story.append((rec.spec.task_id, sid, new._name_, rec.attempt, template, wid))
            self._ledger.release(allocation)
            worker.state = _W_IDLE
            story.append((wid, sid, _W_IDLE_NAME, None, "idle"))
            bisect.insort(self._idle, (worker.counter, wid))
            self._retire(rec, sid, out)
            if self._queues or self._waiting_worker:  # (else ``_dispatch`` has nothing to do)
                self._dispatch(sid, out)
            return
        self._set(rec, _FINISHED if ok else _FAILED, sid, "finished on %s" if ok else "failed on %s", wid)
        if creation and ok:
            worker.actor = rec.spec.actor_id
            worker.actor_allocation = allocation
            self._set_worker(worker, _W_ACTOR, sid, "dedicated to actor %s", rec.spec.actor_id)
        else:
            self._ledger.release(allocation)
            if creation:
                self._set_worker(worker, _W_DRAINING, sid, "actor creation failed")
                out.append(C.KillWorker(stimulus_id=sid, worker=wid, node=self.node))
            else:
                self._make_idle(worker, sid)
        self._retire(rec, sid, out)
        self._dispatch(sid, out)

    def _on_task_withdrawn(self, ev: E.TaskWithdrawn, out: list[C.Command]) -> None:
        rec = self._tasks.get((ev.task, ev.attempt))
        if rec is None or ev.node != self.node:
            self.stats["stale_task_withdrawn"] += 1
            return
        sid = ev.stimulus_id
        if rec.state is _RUNNING:
            # The task manager interrupts running code itself (InterruptTask).
            self.stats["withdraw_running_ignored"] += 1
            self._log(ev.task, sid, "withdrawal of running attempt %s ignored", ev.attempt)
            return
        self._unqueue(rec)
        self._set(rec, _WITHDRAWN, sid, "withdrawn")
        self._retire(rec, sid, out)
        self._dispatch(sid, out)

    # -- workers ------------------------------------------------------------------------

    def _on_worker_started(self, ev: E.WorkerStarted, out: list[C.Command]) -> None:
        worker = self._workers.get(ev.worker)
        if worker is None or ev.node != self.node:
            self.stats["unknown_worker_started"] += 1
            return
        if worker.state is not _W_STARTING:
            self.stats["duplicate_worker_started"] += 1
            return
        self._starting -= 1
        self._make_idle(worker, ev.stimulus_id)
        self._dispatch(ev.stimulus_id, out)

    def _on_worker_died(self, ev: E.WorkerDied, out: list[C.Command]) -> None:
        worker = self._workers.get(ev.worker)
        if worker is None or ev.node != self.node:
            self.stats["unknown_worker_died"] += 1
            return
        sid = ev.stimulus_id
        state = worker.state
        if state is _W_STARTING:
            self._starting -= 1
        elif state is _W_IDLE:
            self._idle.remove((worker.counter, worker.worker))
        elif state is _W_LEASED:
            assert worker.task is not None
            rec = self._tasks[worker.task]
            assert rec.allocation is not None
            self._ledger.release(rec.allocation)
            rec.allocation = None
            rec.worker = None
            self._running -= 1
            self._set(rec, _LOST, sid, "worker %s died", worker.worker)
            self._retire(rec, sid, out)
        elif state is _W_ACTOR:
            assert worker.actor_allocation is not None
            self._ledger.release(worker.actor_allocation)
            worker.actor_allocation = None
        self._set_worker(worker, _W_DEAD, sid, "died")
        del self._workers[worker.worker]
        self._dispatch(sid, out)

    def _on_worker_blocked(self, ev: E.WorkerBlocked, out: list[C.Command]) -> None:
        worker = self._workers.get(ev.worker)
        if worker is None or ev.node != self.node:
            self.stats["unknown_worker_blocked"] += 1
            return
        allocation = self._allocation_of(worker)
        if allocation is None:
            self.stats["worker_blocked_ignored"] += 1
            return
        if worker.blocked:
            self.stats["duplicate_worker_blocked"] += 1
            return
        worker.blocked = True
        worker.lent_cpu = self._ledger.release_part(allocation, CPU)
        self._log(worker.worker, ev.stimulus_id, "blocked: lent %s CPU units", worker.lent_cpu)
        self._dispatch(ev.stimulus_id, out)

    def _on_worker_unblocked(self, ev: E.WorkerUnblocked, out: list[C.Command]) -> None:
        worker = self._workers.get(ev.worker)
        if worker is None or ev.node != self.node:
            self.stats["unknown_worker_unblocked"] += 1
            return
        allocation = self._allocation_of(worker)
        if allocation is None or not worker.blocked:
            self.stats["duplicate_worker_unblocked"] += 1
            return
        taken = self._ledger.reacquire_part(allocation, CPU, worker.lent_cpu)
        if taken < worker.lent_cpu:
            self.stats["unblock_cpu_short"] += 1
        self._log(worker.worker, ev.stimulus_id, "unblocked: took back %s of %s CPU units", taken, worker.lent_cpu)
        worker.blocked = False
        worker.lent_cpu = 0

    # -- membership and the view ------------------------------------------------------------

    def _on_node_joined(self, ev: E.NodeJoined, out: list[C.Command]) -> None:
        sid = ev.stimulus_id
        table = self._view.table
        if ev.incarnation <= table.dead_incarnation(ev.node):
            self.stats["stale_node_joined"] += 1
            return
        if ev.node == self.node:
            if self.state is _UNJOINED:
                self.object_store_bytes = ev.object_store_bytes
                self.spill_enabled = ev.spill_enabled
                self._join(ev.incarnation, ev.resources, sid)
            elif ev.incarnation == self.incarnation:
                self.stats["duplicate_node_joined"] += 1
            elif ev.incarnation < self.incarnation:
                self.stats["stale_node_joined"] += 1
            else:
                self.stats["superseded_by_new_incarnation"] += 1
                self._die(sid, f"incarnation {ev.incarnation} joined")
            return
        if self._private_table:
            verdict = table.join(ev.node, ev.incarnation, ev.resources)
            if verdict != "ok":
                self.stats[f"{verdict}_node_joined"] += 1
                return
        elif table.incarnation_of(ev.node) != ev.incarnation:
            self.stats["stale_node_joined"] += 1
            return
        self._log(ev.node, sid, f"joined (incarnation {ev.incarnation}, {as_floats(ev.resources)})")
        if self.state is _ALIVE:
            self._replace_infeasible(sid, out)
            self._dispatch(sid, out)
            self._spill(sid, out)

    def _on_node_died(self, ev: E.NodeDied, out: list[C.Command]) -> None:
        sid = ev.stimulus_id
        table = self._view.table
        if ev.node == self.node:
            if ev.incarnation == self.incarnation or (
                self.state is _UNJOINED
            ):
                table.remove(ev.node, ev.incarnation)
                self._die(sid, f"incarnation {ev.incarnation} died")
            else:
                self.stats["stale_node_died"] += 1
            return
        if not self._private_table:
            return  # the router removed it from the shared table
        if table.remove(ev.node, ev.incarnation) != "ok":
            self.stats["stale_node_died"] += 1
            return
        self._log(ev.node, sid, "died (incarnation %s)", ev.incarnation)

    def _on_resources_reported(self, ev: E.NodeResourcesReported, out: list[C.Command]) -> None:
        if ev.node == self.node:
            self.stats["own_report_ignored"] += 1
            return
        if self._private_table:
            if self._view.table.report(ev.node, ev.incarnation, ev.available) != "ok":
                self.stats["stale_resources_report"] += 1
                return
        elif self._view.table.incarnation_of(ev.node) != ev.incarnation:
            self.stats["stale_resources_report"] += 1
            return
        if self.state is _ALIVE:
            self._spill(ev.stimulus_id, out)

    def _join(self, incarnation: int, resources: Mapping[str, int], sid: str) -> None:
        self.incarnation = incarnation
        self._ledger = NodeResources.of(resources)
        self._view.reset_local(self._ledger)
        self._view.table.join(self.node, incarnation, resources)
        counter = self._first_worker_counter
        self._next_counter = incarnation * WORKER_COUNTER_STRIDE if counter is None else counter
        self._set_life(_ALIVE)
        self._log(self.node, sid, f"joined (incarnation {incarnation}, {as_floats(resources)})")

    def _die(self, sid: str, why: str) -> None:
        """This node is gone: forget every attempt and worker (the task manager retries)."""
        for rec in list(self._tasks.values()):
            self._set(rec, _LOST, sid, "node died: %s", why)
        self._tasks.clear()
        self._attempts.clear()
        self._older_attempts.clear()
        self._infeasible.clear()
        self._queues.clear()
        self._waiting_worker.clear()
        self._demand.clear()
        self._running = 0
        self._workers.clear()
        self._idle.clear()
        self._starting = 0
        self._ledger = NodeResources.of(self._ledger.total)
        self._view.reset_local(self._ledger)
        self._set_life(_DEAD)
        self._log(self.node, sid, "scheduler finished: %s", why)

    # -- placement ----------------------------------------------------------------------------

    def _place(self, rec: _Attempt, sid: str, out: list[C.Command]) -> None:
        """Ask the policy about a NEW or INFEASIBLE attempt and carry out the answer."""
        self._carry_out(rec, self._decide(rec), sid, out)

    def _decide(self, rec: _Attempt) -> Placement:
        """The policy's answer for a NEW or INFEASIBLE attempt (not spill-only): LOCAL
        without asking when the policy is exactly ``DefaultPolicy`` (a subclass may place
        otherwise) and its ``places_here`` says so."""
        policy = self.policy
        view = self._view
        if type(policy) is DefaultPolicy and policy.places_here(rec.spec, rec.hops, view):
            return _LOCAL_PLACEMENT
        return policy.place(_build_placement_request(rec.spec, rec.hops, rec.arg_bytes, False), view)

    def _carry_out(self, rec: _Attempt, decision: Placement, sid: str, out: list[C.Command]) -> None:
        """Carry out the policy's answer for a NEW or INFEASIBLE attempt."""
        spec = rec.spec
        kind = decision.kind
        if kind is _FORWARD and decision.node == self.node:
            kind = _LOCAL
        if kind is _LOCAL:
            add(self._demand, spec.placement)
            if spec.args:
                self._set(rec, _FETCHING, sid, "placed here; fetching arguments")
                self._fetch(rec, sid, out)
            else:
                self._set(rec, _QUEUED, sid, "placed here")
                queue = self._queues.get(rec.cls)  # ``_enqueue``
                if queue is None:
                    queue = self._queues[rec.cls] = OrderedDict()
                queue[rec.key] = None
        elif kind is _FORWARD:
            self._forward(rec, decision.node, decision.reason, sid, out)
        elif kind is _INFEASIBLE_PLACEMENT:
            if rec.state is not _INFEASIBLE:
                self._set(rec, _INFEASIBLE, sid, "infeasible: waiting for a node that fits")
                self._infeasible[rec.key] = None
            if not rec.warned:
                rec.warned = True
                self.stats["infeasible_warned"] += 1
                out.append(
                    C.Warn(
                        stimulus_id=sid,
                        code=WARN_INFEASIBLE,
                        message=(
                            f"{spec.name} needs {as_floats(spec.placement)}, which no node in the "
                            "cluster can provide; it stays pending until a node that fits joins"
                        ),
                        subject=spec.task_id,
                    )
                )
        elif kind is _UNSCHEDULABLE_PLACEMENT:
            assert decision.failure is not None, decision
            self._set(rec, _UNSCHEDULABLE, sid, "unschedulable: %s", decision.failure.message)
            self._retire(rec, sid, out)
            out.append(
                C.ReportUnschedulable(
                    stimulus_id=sid, task=spec.task_id, attempt=rec.attempt, failure=decision.failure
                )
            )
        else:
            raise AssertionError(f"policy answered {decision} to a placement that is not spill-only")

    def _starts_at_once(self, rec: _Attempt) -> bool:
        """A NEW attempt placed here (LOCAL) that ``_carry_out`` then ``_dispatch`` would
        start at once: it has nothing to fetch, nothing else is queued or waits for a
        worker here, a worker is idle and its resources are free. (The fused path's
        case; read-only.)"""
        spec = rec.spec
        if spec.args or self._queues or self._waiting_worker or not self._idle:
            return False
        ledger = self._ledger
        placement = spec.placement_resources
        return ledger.can_allocate(spec.resources) and (placement is None or ledger.can_allocate(placement))

    def _start_at_once(self, rec: _Attempt, sid: str, out: list[C.Command]) -> None:
        """``_carry_out`` of LOCAL and ``_dispatch`` fused for a ``_starts_at_once``
        attempt: the same moves (QUEUED, WAITING_FOR_WORKER, RUNNING), story lines and
        ``StartTask``, without the class queue, the placement demand and the waiting
        index (each would be entered and left again at once)."""
        task = rec.spec.task_id
        attempt = rec.attempt
        story = self._story
        story.append((task, sid, _QUEUED_NAME, attempt, "placed here"))  # ``_set``
        rec.allocation = self._ledger.allocate(rec.spec.resources)
        rec.state = _WAITING_FOR_WORKER
        story.append((task, sid, _WAITING_FOR_WORKER_NAME, attempt, "resources allocated"))  # ``_set``
        _, wid = self._idle.pop(0)
        self._start(rec, self._workers[wid], sid, out)

    def _fetch(self, rec: _Attempt, sid: str, out: list[C.Command]) -> None:
        rec.fetch_sent = True
        spec = rec.spec
        fetch = _build_fetch(sid, spec.task_id, rec.attempt, self.node, spec.args)
        out.append(fetch)

    def _forward(
        self, rec: _Attempt, to_node: NodeID | None, reason: str, sid: str, out: list[C.Command]
    ) -> None:
        assert to_node is not None and to_node in self._view.table.nodes, (to_node, reason)
        spec = rec.spec
        self._view.table.reserve(to_node, spec.placement)
        self._set2(rec, _FORWARDED, sid, "forwarded to %s (%s)", to_node, reason)
        self._retire(rec, sid, out)
        self.stats["forwarded"] += 1
        forward = _build_forward(sid, spec, rec.attempt, self.node, to_node, rec.hops + 1)
        out.append(forward)

    def _replace_infeasible(self, sid: str, out: list[C.Command]) -> None:
        for key in list(self._infeasible):
            rec = self._tasks[key]
            del self._infeasible[key]
            self._place(rec, sid, out)
            if rec.state is _INFEASIBLE:
                self._infeasible[key] = None

    def _spill(self, sid: str, out: list[C.Command]) -> None:
        """Offer queued attempts that cannot run here now to nodes with room now.

        Per class, newest first; the first STAY ends the class (its attempts
        ask for the same thing with the same strategy and hops).
        """
        policy = self.policy
        view = self._view
        tasks = self._tasks
        for cls in list(self._queues):
            queue = self._queues[cls]
            moved: list[Key] = []
            # Fast path: the policy names the one node every attempt of the class without
            # argument bytes goes to while it fits there (``sole_spill_target``): such an
            # attempt skips ``place``, with the same answer (fits: FORWARD, else STAY).
            sole: NodeView | None = None
            to_node: NodeID | None
            if type(policy) is DefaultPolicy:  # exactly: a subclass may place otherwise
                head = tasks[next(iter(queue))]
                target = policy.sole_spill_target(head.spec, head.hops, view)
                if target is not None:
                    sole = view.table.nodes[target]
            for key in reversed(queue):  # lazily: most often the newest attempt stays
                rec = tasks[key]
                if sole is not None and not rec.arg_bytes:
                    if not fits(rec.spec.placement, sole.available):
                        break  # STAY
                    to_node, reason = sole.node, _SOLE_SPILL_REASON
                else:
                    request = rec.spill_request
                    if request is None:
                        request = rec.spill_request = _build_placement_request(rec.spec, rec.hops, rec.arg_bytes, True)
                    decision = policy.place(request, view)
                    if decision.kind is not _FORWARD or decision.node == self.node:
                        break
                    to_node, reason = decision.node, f"spill: {decision.reason}"
                moved.append(key)
                _subtract(self._demand, rec.spec.placement)
                self.stats["spilled"] += 1
                self._forward(rec, to_node, reason, sid, out)
            for key in moved:
                del queue[key]
            if not queue:
                del self._queues[cls]

    # -- local dispatch --------------------------------------------------------------------------

    def _enqueue(self, rec: _Attempt) -> None:
        queue = self._queues.get(rec.cls)
        if queue is None:
            queue = self._queues[rec.cls] = OrderedDict()
        queue[rec.key] = None

    def _heads_its_class(self, rec: _Attempt) -> bool:
        """A QUEUED attempt is the head of its class queue. Every event leaves dispatch at
        its fixed point (no queue head fits), so an attempt queued behind another head
        changes nothing ``_dispatch`` would do: it is skipped then."""
        return len(self._queues[rec.cls]) == 1

    def _unqueue(self, rec: _Attempt) -> None:
        """Take a pending (not running) attempt out of whatever holds it."""
        key = rec.key
        state = rec.state
        if state is _INFEASIBLE:
            del self._infeasible[key]
        elif state is _FETCHING:
            _subtract(self._demand, rec.spec.placement)
        elif state is _QUEUED:
            queue = self._queues[rec.cls]
            del queue[key]
            if not queue:
                del self._queues[rec.cls]
            _subtract(self._demand, rec.spec.placement)
        elif state is _WAITING_FOR_WORKER:
            del self._waiting_worker[key]
            assert rec.allocation is not None
            self._ledger.release(rec.allocation)
            rec.allocation = None
        else:
            raise InvalidTransition(f"cannot unqueue {key} in {state}", self.story(rec.spec.task_id))

    def _dispatch(self, sid: str, out: list[C.Command]) -> None:
        """Allocate to queued attempts that fit, hand out idle workers, start missing ones."""
        queues = self._queues
        waiting = self._waiting_worker
        tasks = self._tasks
        if queues:
            ledger = self._ledger
            classes = list(queues.items())
            if len(classes) > 1:
                classes.sort(key=lambda item: tasks[next(iter(item[1]))].seq)
            for cls, queue in classes:
                while queue:
                    key = next(iter(queue))
                    rec = tasks[key]
                    spec = rec.spec
                    resources = spec.resources
                    placement = spec.placement_resources
                    if placement is None:
                        if not ledger.can_allocate(resources):
                            break
                        placement = resources
                    elif not ledger.can_allocate(placement) or not ledger.can_allocate(resources):
                        break
                    del queue[key]
                    _subtract(self._demand, placement)
                    rec.allocation = ledger.allocate(resources)
                    self._set(rec, _WAITING_FOR_WORKER, sid, "resources allocated")
                    waiting[key] = None
                if not queue:
                    del queues[cls]
        if not waiting:
            return
        idle = self._idle
        while waiting and idle:
            key = next(iter(waiting))
            del waiting[key]
            _, wid = idle.pop(0)
            self._start(tasks[key], self._workers[wid], sid, out)
        missing = len(waiting) - self._starting
        for _ in range(missing):
            counter = self._next_counter
            self._next_counter += 1
            wid = worker_id(self.node, counter)
            self._workers[wid] = _Worker(wid, counter, _W_STARTING)
            self._starting += 1
            self._log(wid, sid, "starting")
            out.append(C.StartWorker(stimulus_id=sid, node=self.node, worker=wid))

    def _start(self, rec: _Attempt, worker: _Worker, sid: str, out: list[C.Command]) -> None:
        assert rec.allocation is not None
        wid = worker.worker
        worker.task = rec.key
        rec.worker = wid
        self._set_worker2(worker, _W_LEASED, sid, "runs %s attempt %s", rec.spec.task_id, rec.attempt)
        self._set1(rec, _RUNNING, sid, "started on %s", wid)
        self._running += 1
        start = _build_start(sid, rec.spec, rec.attempt, self.node, wid, rec.allocation.gpu_ids)
        out.append(start)

    def _make_idle(self, worker: _Worker, sid: str) -> None:
        self._set_worker(worker, _W_IDLE, sid, "idle")
        bisect.insort(self._idle, (worker.counter, worker.worker))

    # -- helpers ------------------------------------------------------------------------------------

    def _allocation_of(self, worker: _Worker) -> Allocation | None:
        if worker.state is _W_LEASED:
            assert worker.task is not None
            return self._tasks[worker.task].allocation
        if worker.state is _W_ACTOR:
            return worker.actor_allocation
        return None

    def _is_actor_worker(self, wid: WorkerID) -> bool:
        worker = self._workers.get(wid)
        return worker is not None and worker.state is _W_ACTOR

    def _retire(self, rec: _Attempt, sid: str, out: list[C.Command]) -> None:
        """Forget an attempt that reached a terminal state here; let its fetch go."""
        task = rec.spec.task_id
        key = rec.key
        if rec.fetch_sent:
            rec.fetch_sent = False
            release = _build_release(sid, task, rec.attempt, self.node)
            out.append(release)
        del self._tasks[key]
        if task in self._older_attempts:
            self._forget_attempt(task, rec.attempt)
        else:  # its only live attempt here (the common case)
            del self._attempts[task]
        done = self._done
        done[key] = (rec.state._value_, rec.hops)
        if len(done) > self._done_max:
            done.popitem(last=False)

    def _forget_attempt(self, task: TaskID, attempt: int) -> None:
        """Take ``attempt`` out of the live attempts of a task with more than one live here."""
        older = self._older_attempts[task]
        if self._attempts[task] == attempt:
            self._attempts[task] = older.pop()
        else:
            older.remove(attempt)
        if not older:
            del self._older_attempts[task]

    def _set(self, rec: _Attempt, new: TaskState, sid: str, template: str, *args: Any) -> None:
        """Move an attempt; its story line is ``template % args`` (formatted when read)."""
        if (rec.state._value_, new._value_) not in _LEGAL:
            raise InvalidTransition(
                f"attempt {rec.spec.task_id}#{rec.attempt}: {rec.state.name} -> {new.name} "
                f"({_text(template, args)})",
                self.story(rec.spec.task_id),
            )
        rec.state = new
        self._story.append((rec.spec.task_id, sid, new._name_, rec.attempt, template) + args)

    # ``_set``/``_set_worker`` with a fixed number of arguments for the hot moves: the entry
    # is built as one tuple (no ``*args`` tuple to pack, no concatenation); ``_set`` raises.
    def _set1(self, rec: _Attempt, new: TaskState, sid: str, template: str, arg: Any) -> None:
        if (rec.state._value_, new._value_) not in _LEGAL:
            self._set(rec, new, sid, template, arg)  # raises
        rec.state = new
        self._story.append((rec.spec.task_id, sid, new._name_, rec.attempt, template, arg))

    def _set2(self, rec: _Attempt, new: TaskState, sid: str, template: str, arg: Any, arg2: Any) -> None:
        if (rec.state._value_, new._value_) not in _LEGAL:
            self._set(rec, new, sid, template, arg, arg2)  # raises
        rec.state = new
        self._story.append((rec.spec.task_id, sid, new._name_, rec.attempt, template, arg, arg2))

    def _set_worker(self, worker: _Worker, new: WorkerState, sid: str, template: str, *args: Any) -> None:
        if (worker.state._value_, new._value_) not in _WORKER_LEGAL:
            raise InvalidTransition(
                f"worker {worker.worker}: {worker.state.name} -> {new.name} ({_text(template, args)})",
                self.story(worker.worker),
            )
        worker.state = new
        self._story.append((worker.worker, sid, new._name_, None, template) + args)

    def _set_worker2(
        self, worker: _Worker, new: WorkerState, sid: str, template: str, arg: Any, arg2: Any
    ) -> None:
        """``_set_worker`` with two arguments (see ``_set1``)."""
        if (worker.state._value_, new._value_) not in _WORKER_LEGAL:
            self._set_worker(worker, new, sid, template, arg, arg2)  # raises
        worker.state = new
        self._story.append((worker.worker, sid, new._name_, None, template, arg, arg2))

    def _set_life(self, new: SchedulerState) -> None:
        if (self.state, new) not in SCHEDULER_TRANSITIONS:
            raise InvalidTransition(
                f"scheduler {self.node}: {self.state.name} -> {new.name}", self.story(self.node)
            )
        self.state = new

    def _log(self, key: str, sid: str, template: str, *args: Any) -> None:
        """A story line ``template % args`` (formatted when read; no ``args``: as is)."""
        self._story.append((key, sid, None, None, template) + args)

    # -- invariants --------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Cross-check every index; raise AssertionError naming what is wrong."""
        self._check_ledger()
        self._check_tasks()
        self._check_workers()
        self._check_view()
        if self.state is not _ALIVE:
            assert not self._tasks and not self._workers, f"{self.state}: holds attempts or workers"
            assert self._ledger.available == self._ledger.total, "dead scheduler holds resources"

    def _allocations(self) -> list[tuple[str, Allocation]]:
        held: list[tuple[str, Allocation]] = []
        for key, rec in self._tasks.items():
            if rec.allocation is not None:
                held.append((f"attempt {key}", rec.allocation))
        for wid, worker in self._workers.items():
            if worker.actor_allocation is not None:
                held.append((f"actor worker {wid}", worker.actor_allocation))
        return held

    def _check_ledger(self) -> None:
        ledger = self._ledger
        held = self._allocations()
        used: Units = {}
        for _, allocation in held:
            add(used, allocation.units)
        names = sorted(set(ledger.total) | set(ledger.available) | set(used))
        for name in names:
            total = ledger.total.get(name, 0)
            available = ledger.available.get(name, 0)
            assert 0 <= available <= total, f"{name}: available {available} outside [0, {total}]"
            assert total - available == used.get(name, 0), (
                f"{name}: total {total} - available {available} != held {used.get(name, 0)}"
            )
        gpus = ledger.total.get(GPU, 0) // UNIT
        assert len(ledger.gpu_free) == gpus, f"{len(ledger.gpu_free)} GPU instances for {gpus} GPUs"
        on_gpu = [0] * gpus
        for holder, allocation in held:
            assert len(allocation.gpu_ids) == len(allocation.gpu_units), holder
            assert sum(allocation.gpu_units) == allocation.units.get(GPU, 0), (
                f"{holder}: GPU units {allocation.units.get(GPU, 0)} != instances {allocation.gpu_units}"
            )
            assert len(set(allocation.gpu_ids)) == len(allocation.gpu_ids), f"{holder}: repeated GPU id"
            for gpu, taken in zip(allocation.gpu_ids, allocation.gpu_units):
                assert 0 <= gpu < gpus and taken > 0, f"{holder}: GPU {gpu} x {taken}"
                on_gpu[gpu] += taken
        for gpu, free in enumerate(ledger.gpu_free):
            assert 0 <= free <= UNIT, f"GPU {gpu}: free {free} outside [0, {UNIT}]"
            assert UNIT - free == on_gpu[gpu], f"GPU {gpu}: free {free} but holders take {on_gpu[gpu]}"

    def _check_tasks(self) -> None:
        by_state: Counter[TaskState] = Counter()
        attempts: dict[TaskID, list[int]] = {}
        demand: Units = {}
        for key, rec in self._tasks.items():
            state = rec.state
            by_state[state] += 1
            assert key == (rec.spec.task_id, rec.attempt), (key, rec.spec.task_id, rec.attempt)
            assert state in LIVE_STATES, f"{key}: terminal state {state} still held"
            assert key not in self._done, f"{key}: both live and done"
            attempts.setdefault(key[0], []).append(key[1])
            assert (key in self._infeasible) == (state is _INFEASIBLE), f"{key}: infeasible index"
            queue = self._queues.get(rec.cls)
            assert (queue is not None and key in queue) == (state is _QUEUED), f"{key}: queue index"
            assert (key in self._waiting_worker) == (state is _WAITING_FOR_WORKER), f"{key}: waiting index"
            holds = state in (_WAITING_FOR_WORKER, _RUNNING)
            assert (rec.allocation is not None) == holds, f"{key} in {state}: allocation {rec.allocation}"
            if state in (_FETCHING, _QUEUED):
                add(demand, rec.spec.placement)
            if state is _RUNNING:
                assert rec.worker is not None, f"{key}: running without a worker"
                worker = self._workers.get(rec.worker)
                assert worker is not None and worker.state is _W_LEASED and worker.task == key, (
                    f"{key}: worker {rec.worker} does not run it"
                )
            else:
                assert rec.worker is None, f"{key} in {state} has worker {rec.worker}"
            if state is _INFEASIBLE:
                assert not rec.fetch_sent, f"{key}: infeasible yet fetching"
            else:
                assert rec.fetch_sent == bool(rec.spec.args), (
                    f"{key} in {state}: fetch sent {rec.fetch_sent} for {len(rec.spec.args)} args"
                )
        assert by_state[_RUNNING] == self._running, f"running {by_state[_RUNNING]} != {self._running}"
        assert len(self._infeasible) == by_state[_INFEASIBLE], "infeasible index size"
        assert len(self._waiting_worker) == by_state[_WAITING_FOR_WORKER], "waiting index size"
        assert sum(len(q) for q in self._queues.values()) == by_state[_QUEUED], "queue index size"
        assert all(self._queues.values()), "an empty class queue was kept"
        for cls, queue in self._queues.items():
            for key in queue:
                assert self._tasks[key].cls == cls, f"{key} queued under another class"
        indexed = {t: self._older_attempts.get(t, []) + [a] for t, a in self._attempts.items()}
        assert {t: sorted(a) for t, a in attempts.items()} == indexed, "attempts index"
        assert all(a == sorted(a) for a in indexed.values()), "attempts index order"
        assert self._older_attempts.keys() <= self._attempts.keys(), "older attempts without a latest"
        assert all(self._older_attempts.values()), "an empty older-attempts list was kept"
        assert _nonzero(demand) == _nonzero(self._demand), f"demand {self._demand} != {demand}"
        assert len(self._done) <= self._done_max, "done memory over its bound"
        # Dispatch reached its fixed point.
        for cls, queue in self._queues.items():
            spec = self._tasks[next(iter(queue))].spec
            fits_now = self._ledger.can_allocate(spec.placement) and (
                spec.placement_resources is None or self._ledger.can_allocate(spec.resources)
            )
            assert not fits_now, f"class {cls}: head {spec.task_id} fits but was not dispatched"
        assert not (self._waiting_worker and self._idle), "an idle worker and a waiting attempt"
        assert self._starting >= len(self._waiting_worker), (
            f"{len(self._waiting_worker)} attempts wait for {self._starting} starting workers"
        )

    def _check_workers(self) -> None:
        idle: list[tuple[int, WorkerID]] = []
        starting = 0
        for wid, worker in self._workers.items():
            assert wid == worker.worker and wid == worker_id(self.node, worker.counter), wid
            assert node_of_worker(wid) == self.node, wid
            state = worker.state
            assert state is not _W_DEAD, f"{wid}: dead worker kept"
            if state is _W_IDLE:
                idle.append((worker.counter, wid))
            if state is _W_STARTING:
                starting += 1
            assert (worker.task is not None) == (state is _W_LEASED), f"{wid} in {state}: task {worker.task}"
            if state is _W_LEASED:
                assert worker.task is not None and worker.task in self._tasks, f"{wid}: task gone"
                assert self._tasks[worker.task].worker == wid, f"{wid}: task runs elsewhere"
            assert (worker.actor_allocation is not None) == (state is _W_ACTOR), (
                f"{wid} in {state}: actor allocation {worker.actor_allocation}"
            )
            if worker.blocked:
                assert state in (_W_LEASED, _W_ACTOR), f"{wid}: blocked in {state}"
            assert worker.lent_cpu >= 0 and (worker.blocked or worker.lent_cpu == 0), (
                f"{wid}: lent {worker.lent_cpu} while blocked={worker.blocked}"
            )
            assert worker.counter < self._next_counter, f"{wid}: counter from the future"
        assert sorted(idle) == self._idle, f"idle index {self._idle} != {sorted(idle)}"
        assert starting == self._starting, f"starting {self._starting} != {starting}"

    def _check_view(self) -> None:
        view = self._view
        assert view._ledger is self._ledger, "the local view is not the ledger"
        if self._private_table:
            view.table.check()
        if self.state is _ALIVE:
            assert view.table.incarnation_of(self.node) == self.incarnation, (
                f"{self.node}: the table does not have this incarnation"
            )


def _text(template: str, args: tuple[Any, ...]) -> str:
    """``template % args``, or ``template`` as is without ``args``."""
    return template % args if args else template


def _story_line(entry: tuple[Any, ...]) -> str:
    """The text of a story entry: ``sid: text``, ``sid: STATE: text`` for a worker's move,
    ``sid: #attempt STATE: text`` for an attempt's move."""
    sid, state, attempt = entry[1:4]
    text = _text(entry[4], entry[5:])
    if state is None:
        return f"{sid}: {text}"
    if attempt is None:
        return f"{sid}: {state}: {text}"
    return f"{sid}: #{attempt} {state}: {text}"


def _subtract(into: Units, amounts: Mapping[str, int]) -> None:
    for name, amount in amounts.items():
        left = into.get(name, 0) - amount
        if left:
            into[name] = left
        else:
            into.pop(name, None)


def _nonzero(units: Mapping[str, int]) -> dict[str, int]:
    return {name: amount for name, amount in sorted(units.items()) if amount}


def _shape(units: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    """A resource map as a sorted tuple (part of a scheduling class key)."""
    if len(units) < 2:
        return tuple(units.items())
    return tuple(sorted(units.items()))
