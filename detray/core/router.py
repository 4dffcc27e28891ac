"""The router: one cluster's state machines composed behind one ``handle``.

Owns: which machine consumes which event, and the conversion of *internal*
commands (addressed to another machine) into that machine's events. A
cascade (a lost object invalidating its dependents, a node death failing
tasks that then free objects...) runs as a work-list loop to a fixed point,
with a cap that crashes loudly rather than truncating.

Must not: decide anything itself. Every decision is a machine's; the router
only delivers. It adds the scheduler's locality hint (argument bytes per
node, read from the directory) when it delivers a task to a scheduler.

Theory of operation: ``handle(event)`` puts the event on a FIFO work list;
each event is offered to its consumers in a fixed order (task manager,
actor manager, directory, schedulers by node id); each command returned is
either converted into events appended to the work list, or collected as an
external command for the driver. Delivery order is therefore a pure function
of the event sequence, which keeps runs reproducible.

Drivers that split the machines across processes (the real runtime on many
nodes) use the same conversions with their own transport; the simulator and
the single-node runtime use this class directly.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Callable
from functools import partial

from detray.core import commands as C
from detray.core import directory as D
from detray.core import events as E
from detray.core.actors import ActorManager
from detray.core.directory import ObjectDirectory
from detray.core.ids import NodeID, node_of_worker
from detray.core.policy import SchedulingPolicy
from detray.core.records import builder
from detray.core.scheduler import Scheduler
from detray.core.specs import TaskKind
from detray.core.tasks import WAITER_PREFIX as TASK_WAITER_PREFIX
from detray.core.tasks import TaskManager, TaskState
from detray.core.view import SPREAD_THRESHOLD, ResourceTable

_FINISHED = TaskState.FINISHED
_FAILED = TaskState.FAILED
_CANCELLED = TaskState.CANCELLED
_NORMAL = TaskKind.NORMAL

# Records built on the hot path: ``records.builder`` (positional, in the order named).
_build_arrival = builder(E.TaskArrived, "now", "stimulus_id", "spec", "attempt", "node", "arg_bytes_by_node", "hops")
_build_ready = builder(E.ArgumentsReady, "now", "stimulus_id", "waiter", "ready", "failed")
_build_freed = builder(E.ObjectFreed, "now", "stimulus_id", "obj")
_build_report = builder(E.NodeResourcesReported, "now", "stimulus_id", "node", "incarnation", "available")

CASCADE_STEPS_MAX = 1_000_000
"""A cascade longer than this is a bug (a routing loop), not a big cluster."""
_WORK_COMPACT_AT = 4096
"""Delivered events of a cascade dropped from its work list in batches of this many."""



def _threshold_of(policy_factory: Callable[[], SchedulingPolicy] | None) -> float:
    """The spread threshold the shared table indexes by (the policies' own, if they have one)."""
    if policy_factory is None:
        return SPREAD_THRESHOLD
    threshold = getattr(policy_factory(), "spread_threshold", SPREAD_THRESHOLD)
    return float(threshold) if isinstance(threshold, (int, float)) else SPREAD_THRESHOLD


class CascadeLimitExceeded(AssertionError):
    """A cascade did not reach a fixed point within the cap: a routing loop."""


_Machine = TaskManager | ActorManager | ObjectDirectory | Scheduler
_Deliver = Callable[["Router", E.Event], list[C.Command]]
_Convert = Callable[["Router", C.Command, float], "list[E.Event] | None"]


class Router:
    """The task manager, actor manager, object directory and per-node schedulers of one cluster.

    ``handle(event)`` returns only the external commands (for the driver);
    internal ones are delivered here, in FIFO order, to a fixed point.
    Queries go straight to the machines (``router.tasks.state(t)``...).
    """

    def __init__(
        self,
        *,
        policy_factory: Callable[[], SchedulingPolicy] | None = None,
        cascade_steps_max: int = CASCADE_STEPS_MAX,
        report_on_release: bool = True,
    ) -> None:
        self.tasks = TaskManager()
        self.actors = ActorManager()
        self.directory = ObjectDirectory()
        self.schedulers: dict[NodeID, Scheduler] = {}
        """Schedulers of the live nodes, in node-id order."""
        self.table = ResourceTable(threshold=_threshold_of(policy_factory))
        """The resource view all schedulers share (membership and reports applied once)."""
        self.touched: dict[NodeID, Scheduler] = {}
        """Schedulers that handled an event since a checker last cleared this (a
        scheduler's own invariants can only break while it handles one)."""
        self._watchers: list[NodeID] = []
        """Nodes whose scheduler waits for the view to change (sorted): only they hear of
        joins and reports, so a report costs what it changes, not one call per node."""
        self._watching: set[NodeID] = set()
        """``_watchers`` as a set (a membership test without a search)."""
        self.incarnations: dict[NodeID, int] = {}
        """Latest incarnation seen of every node, live or dead."""
        self.stats: Counter[str] = Counter()
        self._parked: list[E.TaskArrived] = []
        """Attempts that found no live node at all; delivered when one joins."""
        self._policy_factory = policy_factory
        self.report_on_release = report_on_release
        """A node whose task ends with nothing queued there reports its room at once."""
        assert cascade_steps_max >= 1, "the event handed in is the first step"
        self._cascade_steps_max = cascade_steps_max
        self._delivery: dict[type[E.Event], Callable[[E.Event], list[C.Command]]] = {
            kind: _bind(self, deliver) for kind, deliver in _DELIVERY.items()
        }
        """``_DELIVERY`` bound to this router: an event for one machine goes straight to
        that machine's ``handle`` (one call less per event on the hot path)."""

    # -- the one entry point ----------------------------------------------------

    def handle(self, event: E.Event) -> list[C.Command]:
        """Deliver ``event`` and every event it causes; return the external commands."""
        deliver = self._delivery.get(event.__class__)
        if deliver is None:
            raise TypeError(f"the router does not route {type(event).__name__}")
        out = deliver(event)
        conversion = _CONVERSION
        for command in out:
            if command.__class__ in conversion:
                return self._cascade(event, out)
        return out  # the common case: every command is external (the machines' lists are fresh)

    def _cascade(self, event: E.Event, commands: list[C.Command]) -> list[C.Command]:
        """``handle`` once ``event`` was delivered (its first step) and caused ``commands``,
        some internal: deliver what they become, in FIFO order, to a fixed point."""
        external: list[C.Command] = []
        # The events caused, in FIFO order, ``done`` of them delivered.
        work: list[E.Event] = []
        done = 0
        steps = 1
        steps_max = self._cascade_steps_max
        now = event.now
        delivery = self._delivery
        conversion = _CONVERSION
        while True:
            for command in commands:
                kind = command.__class__
                convert = conversion.get(kind)
                if convert is None:
                    external.append(command)
                    continue
                converted = convert(self, command, now)
                if converted is None:
                    external.append(command)
                    continue
                work += converted
                if kind in _ALSO_EXTERNAL:
                    external.append(command)
            if done == len(work):
                return external
            current = work[done]
            done += 1
            if done == _WORK_COMPACT_AT:  # a long cascade: let delivered events go
                del work[:done]
                done = 0
            steps += 1
            if steps > steps_max:
                raise CascadeLimitExceeded(
                    f"cascade from {type(event).__name__} ({event.stimulus_id}) exceeded "
                    f"{self._cascade_steps_max} steps"
                )
            deliver = delivery.get(current.__class__)
            if deliver is None:
                raise TypeError(f"the router does not route {type(current).__name__}")
            commands = deliver(current)

    # -- helpers for drivers ------------------------------------------------------

    def arrival(self, forward: C.ForwardTask, *, now: float) -> E.TaskArrived:
        """The ``TaskArrived`` a driver delivers when a ``ForwardTask`` reaches its node
        (with a fresh locality hint)."""
        args = forward.spec.args
        arg_bytes_by_node = self.directory.bytes_by_node(args) if args else ()
        return _build_arrival(
            now, forward.stimulus_id, forward.spec, forward.attempt, forward.to_node, arg_bytes_by_node, forward.hops
        )

    def is_live(self, node: NodeID) -> bool:
        return node in self.schedulers

    # -- delivery -------------------------------------------------------------------

    def _machines(self, event: E.Event, *machines: _Machine) -> list[C.Command]:
        out: list[C.Command] = []
        for machine in machines:
            out.extend(machine.handle(event))
            if machine.__class__ is Scheduler:
                self._watch(machine)
                self.touched[machine.node] = machine
        return out

    def _at_scheduler(self, scheduler: Scheduler, event: E.Event) -> list[C.Command]:
        """``event`` to one scheduler (``_machines`` with one scheduler, on the hot path)."""
        out = scheduler.handle(event)
        node = scheduler.node
        self.touched[node] = scheduler
        # ``_watch``, inlined for its common outcome: nothing changes.
        if scheduler.waits_for_view():
            if node in self._watching and self.schedulers.get(node) is scheduler:
                return out
        elif node not in self._watching:
            return out
        self._watch(scheduler)
        return out

    def _watch(self, scheduler: Scheduler) -> None:
        """Keep ``_watchers`` (and ``_watching``) exact after ``scheduler`` handled an event."""
        watchers = self._watchers
        waits = scheduler.waits_for_view()
        if not waits and not watchers:
            return  # nobody waits, before or after
        node = scheduler.node
        at = bisect_left(watchers, node)
        listed = at < len(watchers) and watchers[at] == node
        if waits and self.schedulers.get(node) is scheduler:
            if not listed:
                watchers.insert(at, node)
                self._watching.add(node)
        elif listed:
            del watchers[at]
            self._watching.discard(node)

    def _to_watchers(self, event: E.Event, but: NodeID) -> list[C.Command]:
        """``event`` (a view change) to every waiting scheduler but ``but``'s, by node id."""
        watching = [self.schedulers[n] for n in self._watchers if n != but]
        return self._machines(event, *watching) if watching else []

    def _to_tasks(self, event: E.Event) -> list[C.Command]:
        return self.tasks.handle(event)

    def _to_actors(self, event: E.Event) -> list[C.Command]:
        return self.actors.handle(event)

    def _to_directory(self, event: E.Event) -> list[C.Command]:
        return self.directory.handle(event)

    def _to_tasks_and_actors(self, event: E.Event) -> list[C.Command]:
        return self._machines(event, self.tasks, self.actors)

    def _node_scheduler(self, event: E.Event) -> list[Scheduler]:
        scheduler = self.schedulers.get(getattr(event, "node"))
        if scheduler is None:
            self.stats[f"{type(event).__name__}_at_dead_node"] += 1
            return []
        return [scheduler]

    def _to_node_scheduler(self, event: E.Event) -> list[C.Command]:
        scheduler = self.schedulers.get(getattr(event, "node"))
        if scheduler is None:
            self.stats[f"{type(event).__name__}_at_dead_node"] += 1
            return []
        return self._at_scheduler(scheduler, event)

    def _to_worker_owners(self, event: E.Event) -> list[C.Command]:
        # WorkerDied: the node's scheduler, the task manager, the actor manager.
        return self._machines(event, *self._node_scheduler(event), self.tasks, self.actors)

    def _to_task_outcome(self, event: E.Event) -> list[C.Command]:
        # TaskStarted/Finished/Failed: release on the node, settle the task (TaskStarted: all).
        assert isinstance(event, (E.TaskStarted, E.TaskFinished, E.TaskFailed))
        scheduler = self.schedulers.get(event.node)
        if scheduler is None:
            self.stats[f"{type(event).__name__}_at_dead_node"] += 1
            out = self.tasks.handle(event)
        else:
            out = self._at_scheduler(scheduler, event)
            out += self.tasks.handle(event)
        out += self.actors.handle(event)
        return out

    def _to_task_result(self, event: E.Event) -> list[C.Command]:
        # TaskFinished/Failed: as TaskStarted, then record the returns -- only those of the
        # result the owner accepted.
        assert isinstance(event, (E.TaskFinished, E.TaskFailed))
        out = self._to_task_outcome(event)
        if event.return_sizes:
            if self._result_accepted(event):
                out += self.directory.handle(event)
            else:
                # A stale result, or an error the owner retries: its stored values
                # must not become the objects' values (nor leak in the store).
                self.stats["result_returns_discarded"] += 1
                out.extend(
                    C.DeleteCopy(stimulus_id=event.stimulus_id, obj=obj, node=event.node, reason="result not accepted")
                    for obj, _size in event.return_sizes
                )
        if self._watchers and self.report_on_release:
            self._report_release(event, out)
        return out

    def _report_release(self, event: E.TaskFinished | E.TaskFailed, out: list[C.Command]) -> None:
        """A task ended on a node with nothing waiting there: the node's room is told at
        once to the scheduler of the task's owner, if work waits there (Ray: the owner
        gets its lease back and reuses it for its next queued task), instead of at the
        next periodic report. Only the owner's node hears it: offering the room to every
        waiting scheduler made queued work hop from node to node."""
        node = event.node
        scheduler = self.schedulers.get(node)
        if scheduler is None or scheduler.queue_length():
            return
        owner = self.tasks.owner_of(event.task)
        if owner is None:
            return
        owner_node = node_of_worker(owner)
        if owner_node == node or owner_node not in self._watching:
            return  # (a node is watched exactly while its live scheduler waits for the view)
        owner_scheduler = self.schedulers[owner_node]
        available = scheduler.available()
        if self.table.report(node, scheduler.incarnation, available) != "ok":
            return
        report = _build_report(event.now, event.stimulus_id, node, scheduler.incarnation, available)
        self.stats["reports_on_release"] += 1
        out += self._at_scheduler(owner_scheduler, report)

    def _result_accepted(self, event: E.TaskFinished | E.TaskFailed) -> bool:
        """True when the task manager settled the task with this very attempt."""
        state = self.tasks.settled_with(event.task, event.attempt)
        if event.__class__ is E.TaskFinished:
            return state is _FINISHED
        return state is _FAILED or state is _CANCELLED

    def _to_arrival(self, event: E.Event) -> list[C.Command]:
        assert isinstance(event, E.TaskArrived)
        out = self.tasks.handle(event)
        if event.spec.kind is not _NORMAL:  # the actor manager follows creation tasks only
            out.extend(self.actors.handle(event))
        scheduler = self.schedulers.get(event.node)
        if scheduler is not None:
            out.extend(self._at_scheduler(scheduler, event))
        else:
            self.stats["task_arrived_at_dead_node"] += 1
        return out

    def _to_withdrawal(self, event: E.Event) -> list[C.Command]:
        return self._machines(event, *self._node_scheduler(event), self.actors)

    def _to_timer(self, event: E.Event) -> list[C.Command]:
        assert isinstance(event, E.TimerFired)
        if event.timer.startswith(D.PULL_RETRY_TIMER_PREFIX):
            return self.directory.handle(event)
        raise ValueError(f"no machine owns timer {event.timer!r}")

    def _resources_reported(self, event: E.Event) -> list[C.Command]:
        assert isinstance(event, E.NodeResourcesReported)
        if self.table.report(event.node, event.incarnation, event.available) != "ok":
            self.stats["stale_resources_report"] += 1
            return []
        # A report can only newly let work spill into the reporting node: offer it to the
        # waiting schedulers in id order while it has room, not to every one of them.
        out: list[C.Command] = []
        table = self.table
        for node in list(self._watchers):
            if not table.has_room(event.node):
                break
            scheduler = self.schedulers.get(node)
            if node != event.node and scheduler is not None:
                out.extend(self._at_scheduler(scheduler, event))
        return out

    def _node_joined(self, event: E.Event) -> list[C.Command]:
        assert isinstance(event, E.NodeJoined)
        known = self.incarnations.get(event.node)
        if known is not None and event.incarnation <= known:
            self.stats["stale_node_joined"] += 1
            return []
        self.incarnations[event.node] = event.incarnation
        policy = self._policy_factory() if self._policy_factory is not None else None
        verdict = self.table.join(event.node, event.incarnation, event.resources)
        assert verdict == "ok", (event, verdict)
        joined = Scheduler(event.node, policy=policy, table=self.table)
        previous = self.schedulers.get(event.node)
        last = next(reversed(self.schedulers), None)
        self.schedulers[event.node] = joined
        if previous is None and last is not None and event.node < last:
            # Keep node-id order; nodes usually join in id order, and then it holds as is.
            self.schedulers = dict(sorted(self.schedulers.items()))
        out = self._machines(event, self.tasks, self.actors, self.directory, joined)
        out.extend(self._to_watchers(event, event.node))
        if self._parked:
            parked, self._parked = self._parked, []
            for arrival in parked:
                out.extend(self._to_arrival(_replace_node(arrival, event.node, event.now)))
        return out

    def _node_died(self, event: E.Event) -> list[C.Command]:
        assert isinstance(event, E.NodeDied)
        if self.incarnations.get(event.node) != event.incarnation or event.node not in self.schedulers:
            self.stats["stale_node_died"] += 1
            return []
        dead = self.schedulers.pop(event.node)
        self.table.remove(event.node, event.incarnation)
        return self._machines(event, self.tasks, self.actors, self.directory, dead)

    # -- conversion of internal commands ----------------------------------------------

    def _schedule(self, command: C.Command, now: float) -> list[E.Event]:
        assert isinstance(command, C.ScheduleTask)
        args = command.spec.args
        arg_bytes_by_node = self.directory.bytes_by_node(args) if args else ()
        arrival = _build_arrival(
            now, command.stimulus_id, command.spec, command.attempt, command.node, arg_bytes_by_node, 0
        )
        if not self.schedulers and command.node not in self.incarnations:
            self._parked.append(arrival)
            self.stats["task_parked_no_node"] += 1
            return []
        return [arrival]

    def _wake(self, command: C.Command, now: float) -> list[E.Event] | None:
        assert isinstance(command, C.WakeWaiter)
        if command.waiter.startswith(TASK_WAITER_PREFIX):
            ready = _build_ready(now, command.stimulus_id, command.waiter, command.ready, command.failed)
            return [ready]
        if command.waiter.startswith(D.FETCH_WAITER_PREFIX):
            fetched = D.arguments_fetched(command, now)
            return [] if fetched is None else [fetched]
        return None  # a get/wait of user code: the driver wakes it


def _replace_node(arrival: E.TaskArrived, node: NodeID, now: float) -> E.TaskArrived:
    return E.TaskArrived(
        now=now,
        stimulus_id=arrival.stimulus_id,
        spec=arrival.spec,
        attempt=arrival.attempt,
        node=node,
        arg_bytes_by_node=arrival.arg_bytes_by_node,
        hops=arrival.hops,
    )


# Conversions of internal commands: (router, command, now) -> the events it becomes.
# Each is one plain function (no wrapper), as they run for almost every command.


def _withdrawn(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.WithdrawTask)
    return [E.TaskWithdrawn(now=now, stimulus_id=c.stimulus_id, task=c.task, attempt=c.attempt, node=c.node)]


def _fetch(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.FetchArguments)
    return [D.fetch_request(c, now)]


def _release(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.ReleaseArguments)
    return [D.argument_release(c, now)]


def _missing(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.ReportArgumentsMissing)
    return [D.arguments_missing(c, now)]


def _exists(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.RequestObjects)
    return [D.existence_request(c, now)]


def _unschedulable(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.ReportUnschedulable)
    return [
        E.TaskUnschedulable(now=now, stimulus_id=c.stimulus_id, task=c.task, attempt=c.attempt, failure=c.failure)
    ]


def _lost(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.ReportLost)
    return [E.ObjectLost(now=now, stimulus_id=c.stimulus_id, obj=c.obj)]


def _failed(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.FailObject)
    return [E.ObjectFailed(now=now, stimulus_id=c.stimulus_id, obj=c.obj, failure=c.failure)]


def _freed(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.FreeObject)
    freed = _build_freed(now, c.stimulus_id, c.obj)
    return [freed]


def _actor_args(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.CreateActor)
    return [E.ActorArgumentsReady(now=now, stimulus_id=c.stimulus_id, spec=c.spec)]


def _actor_task(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.SubmitActorTask)
    return [E.ActorTaskReady(now=now, stimulus_id=c.stimulus_id, spec=c.spec, attempt=c.attempt)]


def _aborted(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.AbortActorTask)
    return [
        E.ActorTaskAborted(
            now=now,
            stimulus_id=c.stimulus_id,
            task=c.task,
            attempt=c.attempt,
            actor=c.actor,
            actor_restarting=c.actor_restarting,
            failure=c.failure,
        )
    ]


def _forget(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.ForgetWaiter)
    return [E.WaiterCancelled(now=now, stimulus_id=c.stimulus_id, waiter=c.waiter)]


def _actor_dead(router: Router, c: C.Command, now: float) -> list[E.Event]:
    assert isinstance(c, C.ReportActorDead)
    return [E.ActorTerminated(now=now, stimulus_id=c.stimulus_id, actor=c.actor)]


def _bind(router: Router, deliver: _Deliver) -> Callable[[E.Event], list[C.Command]]:
    """``deliver`` for ``router``: a machine's own ``handle`` when that is all it does."""
    if deliver is Router._to_tasks:
        return router.tasks.handle
    if deliver is Router._to_actors:
        return router.actors.handle
    if deliver is Router._to_directory:
        return router.directory.handle
    return partial(deliver, router)


_DELIVERY: dict[type[E.Event], _Deliver] = {
    E.NodeJoined: Router._node_joined,
    E.NodeDied: Router._node_died,
    E.NodeResourcesReported: Router._resources_reported,
    E.WorkerStarted: Router._to_node_scheduler,
    E.WorkerBlocked: Router._to_node_scheduler,
    E.WorkerUnblocked: Router._to_node_scheduler,
    E.WorkerDied: Router._to_worker_owners,
    E.TaskSubmitted: Router._to_tasks,
    E.TaskArrived: Router._to_arrival,
    E.ArgumentsFetched: Router._to_node_scheduler,
    E.ArgumentsMissing: Router._to_node_scheduler,
    E.TaskStarted: Router._to_task_outcome,
    E.TaskFinished: Router._to_task_result,
    E.TaskFailed: Router._to_task_result,
    E.TaskWithdrawn: Router._to_withdrawal,
    E.TaskUnschedulable: Router._to_tasks_and_actors,
    E.CancelRequested: Router._to_tasks,
    E.ObjectPut: Router._to_directory,
    E.ObjectCopied: Router._to_directory,
    E.ObjectPullFailed: Router._to_directory,
    E.ObjectRestored: Router._to_directory,
    E.CopiesEvicted: Router._to_directory,
    E.ObjectsRequested: Router._to_directory,
    E.WaiterCancelled: Router._to_directory,
    E.ObjectFailed: Router._to_directory,
    E.ObjectFreed: Router._to_directory,
    E.ObjectLost: Router._to_tasks,
    E.RefsAdded: Router._to_tasks,
    E.RefsRemoved: Router._to_tasks,
    E.OwnerDied: Router._to_tasks_and_actors,
    E.ActorCreated: Router._to_tasks_and_actors,
    E.ActorKillRequested: Router._to_actors,
    E.ActorTaskAborted: Router._to_tasks,
    E.ActorTerminated: Router._to_tasks,
    E.ArgumentsReady: Router._to_tasks,
    E.ActorArgumentsReady: Router._to_actors,
    E.ActorTaskReady: Router._to_actors,
    E.TimerFired: Router._to_timer,
}

_CONVERSION: dict[type[C.Command], _Convert] = {
    C.ScheduleTask: Router._schedule,
    C.WithdrawTask: _withdrawn,
    C.FetchArguments: _fetch,
    C.ReleaseArguments: _release,
    C.ReportArgumentsMissing: _missing,
    C.RequestObjects: _exists,
    C.WakeWaiter: Router._wake,
    C.ReportUnschedulable: _unschedulable,
    C.ReportLost: _lost,
    C.FailObject: _failed,
    C.FreeObject: _freed,
    C.CreateActor: _actor_args,
    C.SubmitActorTask: _actor_task,
    C.AbortActorTask: _aborted,
    C.ReportActorDead: _actor_dead,
    C.ForgetWaiter: _forget,
}

_ALSO_EXTERNAL: frozenset[type[C.Command]] = frozenset({C.ReportActorDead})
"""Converted for a machine and also passed to the driver (the actor table)."""
