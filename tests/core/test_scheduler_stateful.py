"""The scheduler against a small model, driven by Hypothesis through random event sequences.

The model learns only from what a driver would see (the commands) and from
the events it sends; after every step it checks:

- resources are conserved exactly: available + what every holder holds ==
  total, never negative, never above total; each running attempt and each
  actor holds exactly what the model expects (CPU lent while blocked, GPUs
  never); GPU instances are never over-committed and match ``gpu_free``;
- no attempt is lost: every attempt that arrived is pending here, running on
  the worker the model saw it start on, or was forwarded, finished, failed,
  withdrawn, lost with its worker, or reported unschedulable;
- arguments stay fetched while the attempt is here: every attempt that asked
  for its arguments releases them exactly once, when it leaves (not after a
  failed fetch), and one whose held copy went missing before it started
  fetches again and does not start until they are back;
- workers are where the model put them; starting workers never outnumber the
  attempts waiting for one when new ones are started;
- decisions are sound: a forward goes to a live node that fits, an attempt
  that already hopped is not forwarded again while it fits here, an
  infeasible attempt fits no live node, a hard affinity is reported
  unschedulable only when its node is dead, unknown or too small;
- ``check_invariants`` holds; and at the end, the same events replayed on a
  fresh scheduler give the same commands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from detray.core import commands as C
from detray.core import events as E
from detray.core.errors import ErrorKind, failure
from detray.core.ids import (
    NodeID,
    ObjectID,
    TaskID,
    WorkerID,
    actor_id,
    driver_task_id,
    job_id,
    node_id,
    put_object_id,
    task_id,
    worker_id,
)
from detray.core.resources import CPU, GPU, UNIT, Units, fits, units_of
from detray.core.policy import DefaultPolicy
from detray.core.scheduler import Scheduler, TaskState, WorkerState
from detray.core.specs import (
    DEFAULT_STRATEGY,
    NodeAffinityStrategy,
    SchedulingStrategy,
    SpreadStrategy,
    TaskKind,
    TaskSpec,
)

LOCAL = node_id(0)
OTHERS = (node_id(1), node_id(2), node_id(3))
JOB = job_id(1)
DRIVER = driver_task_id(JOB)
OWNER = WorkerID(f"{LOCAL}/driver")
ARGS = tuple(put_object_id(DRIVER, i) for i in range(1, 4))
EXAMPLES = int(os.environ.get("DETRAY_LONG_EXAMPLES", 100))

PENDING = {TaskState.INFEASIBLE, TaskState.FETCHING, TaskState.QUEUED, TaskState.WAITING_FOR_WORKER}
WORKER_STATE = {
    "starting": WorkerState.STARTING,
    "idle": WorkerState.IDLE,
    "busy": WorkerState.LEASED,
    "actor": WorkerState.ACTOR,
    "draining": WorkerState.DRAINING,
}
TERMINAL = {"forwarded", "finished", "failed", "withdrawn", "lost", "unschedulable", "args_failed"}

Key = tuple[TaskID, int]


@dataclass
class Attempt:
    spec: TaskSpec
    attempt: int
    hops: int
    status: str = "pending"
    fetch_asked: bool = False
    fetch_answered: bool = False
    releases: int = 0
    worker: WorkerID | None = None
    held: Units = field(default_factory=dict)
    gpus: dict[int, int] = field(default_factory=dict)


@dataclass
class Worker:
    status: str
    task: Key | None = None
    blocked: bool = False
    lent_cpu: int = 0
    held: Units = field(default_factory=dict)
    gpus: dict[int, int] = field(default_factory=dict)


def nonzero(units: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in sorted(units.items()) if v}


resources_st = st.fixed_dictionaries(
    {CPU: st.sampled_from([1, 2, 4]), GPU: st.sampled_from([0, 1, 2])},
    optional={"acc": st.sampled_from([1, 2])},
)


class SchedulerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.scheduler = Scheduler(LOCAL)
        self.events: list[E.Event] = []
        self.outputs: list[list[C.Command]] = []
        self.attempts: dict[Key, Attempt] = {}
        self.latest: dict[TaskID, int] = {}
        self.workers: dict[WorkerID, Worker] = {}
        self.view: dict[NodeID, tuple[int, Units]] = {}
        self.dead_incarnation: dict[NodeID, int] = {}
        self.warned: dict[TaskID, int] = {}
        self.next_index = 0
        self.total: Units = {}

    # -- plumbing -----------------------------------------------------------------------

    def send(self, cls: type[E.Event], **fields: Any) -> list[C.Command]:
        sid = f"s{len(self.events)}"
        event = cls(now=float(len(self.events)), stimulus_id=sid, **fields)
        self.events.append(event)
        out = self.scheduler.handle(event)
        self.outputs.append(out)
        for command in out:
            assert command.stimulus_id == sid, command
        return out

    def absorb(
        self, out: list[C.Command], view_before: dict[NodeID, tuple[int, Units]], *, spill: bool = False
    ) -> None:
        """Update the model from the commands of one event and check each is sound.

        ``spill``: the event can move queued attempts (a report or a join): a forwarded
        attempt may then go on to a node available now, never right back on arrival.
        """
        started_workers = False
        for command in out:
            if isinstance(command, C.StartWorker):
                assert command.node == LOCAL and command.worker not in self.workers, command
                self.workers[command.worker] = Worker("starting")
                started_workers = True
            elif isinstance(command, C.FetchArguments):
                a = self.attempts[(command.task, command.attempt)]
                assert a.status == "pending" and not a.fetch_asked, (a, command)
                assert command.objects == a.spec.args and command.node == LOCAL
                a.fetch_asked = True
            elif isinstance(command, C.ReleaseArguments):
                a = self.attempts[(command.task, command.attempt)]
                assert command.node == LOCAL and a.fetch_asked and a.releases == 0, (a, command)
                a.releases += 1
            elif isinstance(command, C.StartTask):
                self._absorb_start(command)
            elif isinstance(command, C.ForwardTask):
                a = self.attempts[(command.spec.task_id, command.attempt)]
                assert a.status == "pending", (a, command)
                assert command.to_node != LOCAL and command.from_node == LOCAL
                assert command.to_node in view_before, f"forwarded to dead/unknown {command.to_node}"
                assert fits(a.spec.placement, view_before[command.to_node][1]), "forwarded to a node too small"
                assert command.hops == a.hops + 1
                if a.hops >= 1 and fits(a.spec.placement, self.total) and not spill:
                    strategy = a.spec.strategy
                    assert isinstance(strategy, NodeAffinityStrategy), f"ping-pong: {a}"
                    assert strategy.node == command.to_node, f"ping-pong: {a}"
                a.status = "forwarded"
            elif isinstance(command, C.ReportUnschedulable):
                a = self.attempts[(command.task, command.attempt)]
                assert a.status == "pending", (a, command)
                if command.failure.kind in (ErrorKind.TASK_UNSCHEDULABLE, ErrorKind.ACTOR_UNSCHEDULABLE):
                    strategy = a.spec.strategy
                    assert isinstance(strategy, NodeAffinityStrategy) and not strategy.soft, a
                    target = strategy.node
                    total = self.total if target == LOCAL else view_before.get(target, (0, None))[1]
                    assert total is None or not fits(a.spec.placement, total), "node was fine"
                    a.status = "unschedulable"
                else:
                    a.status = "args_failed"
            elif isinstance(command, C.Warn):
                self.warned[TaskID(command.subject)] = self.warned.get(TaskID(command.subject), 0) + 1
            elif isinstance(command, C.KillWorker):
                w = self.workers[command.worker]
                assert w.status == "draining", (command, w)
            else:
                raise AssertionError(f"unexpected command {command}")
        if started_workers:
            waiting = sum(
                1
                for k, a in self.attempts.items()
                if a.status == "pending"
                and self.scheduler.state_of(k[0], k[1]) is TaskState.WAITING_FOR_WORKER
            )
            starting = sum(1 for w in self.workers.values() if w.status == "starting")
            assert starting == waiting, f"{starting} workers starting for {waiting} waiting attempts"

    def _absorb_start(self, command: C.StartTask) -> None:
        key = (command.spec.task_id, command.attempt)
        a = self.attempts[key]
        assert a.status == "pending" and command.node == LOCAL, (a, command)
        assert not a.fetch_asked or a.fetch_answered, "started before its arguments were local"
        w = self.workers[command.worker]
        assert w.status == "idle", (command.worker, w)
        w.status, w.task = "busy", key
        a.status, a.worker = "running", command.worker
        a.held = nonzero(dict(a.spec.resources))
        gpu_units = a.spec.resources.get(GPU, 0)
        if gpu_units == 0:
            assert command.gpu_ids == ()
        elif gpu_units < UNIT:
            assert len(command.gpu_ids) == 1
            a.gpus = {command.gpu_ids[0]: gpu_units}
        else:
            assert len(command.gpu_ids) == gpu_units // UNIT
            assert len(set(command.gpu_ids)) == len(command.gpu_ids)
            a.gpus = {g: UNIT for g in command.gpu_ids}

    def view_snapshot(self) -> dict[NodeID, tuple[int, Units]]:
        return {n: (inc, dict(total)) for n, (inc, total) in self.view.items()}

    # -- setup ---------------------------------------------------------------------------

    @initialize(local=resources_st)
    def join_local(self, local: dict[str, int]) -> None:
        self.total = units_of(local)
        assert self.send(
            E.NodeJoined, node=LOCAL, incarnation=0, resources=self.total, object_store_bytes=1 << 30
        ) == []

    # -- tasks -----------------------------------------------------------------------------

    @initialize(
        others=st.dictionaries(st.sampled_from(OTHERS), resources_st, max_size=len(OTHERS))
    )
    def join_others(self, others: dict[NodeID, dict[str, int]]) -> None:
        for node, total in sorted(others.items()):
            self.node_joined(node, total, 1)

    @rule(
        cpus=st.sampled_from([0, 0.5, 1, 1, 1, 2]),
        gpus=st.sampled_from([0, 0, 0, 0, 0, 0.25, 0.5, 1, 2]),
        acc=st.sampled_from([0, 0, 0, 0, 1]),
        nargs=st.sampled_from([0, 0, 1, 2]),
        strategy=st.sampled_from(
            [DEFAULT_STRATEGY] * 8
            + [SpreadStrategy()] * 3
            + [NodeAffinityStrategy(node=n, soft=soft) for n in (LOCAL, *OTHERS) for soft in (False, True)]
        ),
        actor=st.sampled_from([False, False, False, True]),
        hops=st.sampled_from([0, 0, 0, 1, 2]),
        arg_bytes=st.lists(
            st.tuples(st.sampled_from((LOCAL, *OTHERS)), st.integers(0, 10**7)), max_size=3
        ),
    )
    def arrive(
        self,
        cpus: float,
        gpus: float,
        acc: int,
        nargs: int,
        strategy: SchedulingStrategy,
        actor: bool,
        hops: int,
        arg_bytes: list[tuple[NodeID, int]],
    ) -> None:
        index = self.next_index
        self.next_index += 1
        tid = task_id(JOB, DRIVER, index)
        held = units_of({CPU: cpus, GPU: gpus, "acc": acc})
        if actor:
            spec = TaskSpec(
                task_id=tid, job_id=JOB, owner=OWNER, name=f"A{index}", kind=TaskKind.ACTOR_CREATION,
                args=ARGS[:nargs], resources=held,
                placement_resources=units_of({CPU: max(cpus, 1), GPU: gpus, "acc": acc}),
                strategy=strategy, actor_id=actor_id(tid),
            )
        else:
            spec = TaskSpec(
                task_id=tid, job_id=JOB, owner=OWNER, name=f"f{index}", args=ARGS[:nargs],
                resources=held, strategy=strategy,
            )
        self._arrive(spec, 1, hops, tuple(arg_bytes))

    def _arrive(self, spec: TaskSpec, attempt: int, hops: int, arg_bytes: tuple[tuple[NodeID, int], ...]) -> None:
        key = (spec.task_id, attempt)
        self.attempts[key] = Attempt(spec, attempt, hops)
        self.latest[spec.task_id] = attempt
        before = self.view_snapshot()
        out = self.send(
            E.TaskArrived, spec=spec, attempt=attempt, node=LOCAL, arg_bytes_by_node=arg_bytes, hops=hops
        )
        self.absorb(out, before)

    @precondition(lambda self: any(a.status in TERMINAL for a in self.attempts.values()))
    @rule(data=st.data(), hops=st.sampled_from([0, 1]))
    def retry(self, data: st.DataObject, hops: int) -> None:
        """The task manager sends a new attempt of a task whose attempt left this node."""
        keys = sorted(
            k for k, a in self.attempts.items() if a.status in TERMINAL and self.latest[k[0]] == k[1]
        )
        if not keys:
            return
        task, attempt = data.draw(st.sampled_from(keys))
        self._arrive(self.attempts[(task, attempt)].spec, attempt + 1, hops, ())

    def duplicate_or_stale_arrival(self, data: st.DataObject) -> None:
        if not self.attempts:
            return
        older = data.draw(st.booleans())
        key = data.draw(st.sampled_from(sorted(self.attempts)))
        a = self.attempts[key]
        attempt = a.attempt - 1 if older and a.attempt > 1 else a.attempt
        before = dict(self.scheduler.stats)
        out = self.send(E.TaskArrived, spec=a.spec, attempt=attempt, node=LOCAL)
        assert out == []
        assert sum(self.scheduler.stats.values()) == sum(before.values()) + 1

    @precondition(
        lambda self: any(a.fetch_asked and not a.fetch_answered and a.status == "pending" for a in self.attempts.values())
    )
    @rule(data=st.data(), failed=st.booleans())
    def arguments_fetched(self, data: st.DataObject, failed: bool) -> None:
        keys = sorted(
            k for k, a in self.attempts.items() if a.fetch_asked and not a.fetch_answered and a.status == "pending"
        )
        key = data.draw(st.sampled_from(keys))
        a = self.attempts[key]
        a.fetch_answered = True
        lost = failure(ErrorKind.OBJECT_LOST, "gone", obj=a.spec.args[0]) if failed else None
        out = self.send(E.ArgumentsFetched, task=key[0], attempt=key[1], node=LOCAL, failure=lost)
        reports = [c for c in out if isinstance(c, C.ReportUnschedulable)]
        if failed:
            assert len(reports) == 1 and reports[0].failure == lost
        else:
            assert reports == []
        self.absorb(out, self.view_snapshot())

    def late_arguments_fetched(self, data: st.DataObject) -> None:
        keys = sorted(k for k, a in self.attempts.items() if a.fetch_answered or a.status in TERMINAL)
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        if self.scheduler.state_of(*key) is TaskState.FETCHING:
            return
        assert self.send(E.ArgumentsFetched, task=key[0], attempt=key[1], node=LOCAL) == []

    @precondition(lambda self: any(a.fetch_answered and a.status in ("pending", "running") for a in self.attempts.values()))
    @rule(data=st.data())
    def arguments_missing(self, data: st.DataObject) -> None:
        """A fault took a copy the answered fetch held: fetch again unless running."""
        keys = sorted(k for k, a in self.attempts.items() if a.fetch_answered and a.status in ("pending", "running"))
        key = data.draw(st.sampled_from(keys))
        a = self.attempts[key]
        before = self.scheduler.stats["arguments_missing_while_running"]
        if a.status == "pending":
            a.fetch_asked = a.fetch_answered = False  # the FetchArguments it sends again
        out = self.send(E.ArgumentsMissing, task=key[0], attempt=key[1], node=LOCAL, objects=a.spec.args[:1])
        self.absorb(out, self.view_snapshot())
        if a.status == "running":
            assert out == [] and self.scheduler.stats["arguments_missing_while_running"] == before + 1
        else:
            assert a.fetch_asked, f"no new fetch after a missing argument: {out}"
            assert self.scheduler.state_of(*key) is TaskState.FETCHING

    def late_arguments_missing(self, data: st.DataObject) -> None:
        keys = sorted(k for k, a in self.attempts.items() if a.status in TERMINAL or not a.spec.args)
        if not keys:
            return
        key = data.draw(st.sampled_from(keys))
        before = self.scheduler.stats["stale_arguments_missing"]
        assert self.send(E.ArgumentsMissing, task=key[0], attempt=key[1], node=LOCAL) == []
        assert self.scheduler.stats["stale_arguments_missing"] == before + 1

    @precondition(lambda self: any(a.status == "running" for a in self.attempts.values()))
    @rule(data=st.data(), ok=st.booleans())
    def result(self, data: st.DataObject, ok: bool) -> None:
        key = data.draw(st.sampled_from(sorted(k for k, a in self.attempts.items() if a.status == "running")))
        a = self.attempts[key]
        assert a.worker is not None
        w = self.workers[a.worker]
        cls = E.TaskFinished if ok else E.TaskFailed
        out = self.send(cls, task=key[0], attempt=key[1], node=LOCAL, worker=a.worker)
        a.status = "finished" if ok else "failed"
        w.task = None
        w.blocked, w.lent_cpu = False, 0
        if a.spec.kind is TaskKind.ACTOR_CREATION and ok:
            w.status, w.held, w.gpus = "actor", a.held, a.gpus
        elif a.spec.kind is TaskKind.ACTOR_CREATION:
            w.status = "draining"
            assert any(isinstance(c, C.KillWorker) and c.worker == a.worker for c in out)
        else:
            w.status = "idle"
        a.held, a.gpus = {}, {}
        self.absorb(out, self.view_snapshot())

    def late_result(self, data: st.DataObject) -> None:
        if not self.attempts:
            return
        ok, wrong_worker = data.draw(st.booleans()), data.draw(st.booleans())
        key = data.draw(st.sampled_from(sorted(self.attempts)))
        a = self.attempts[key]
        if a.status == "running" and not wrong_worker:
            return  # that one is a real result
        workers = sorted(self.workers) + [worker_id(LOCAL, 99_999)]
        worker = data.draw(st.sampled_from(workers))
        if a.status == "running" and worker == a.worker:
            return
        before_stale = self.scheduler.stats["stale_task_finished"] + self.scheduler.stats["stale_task_failed"]
        before_actor = self.scheduler.stats["actor_task_event_ignored"]
        cls = E.TaskFinished if ok else E.TaskFailed
        assert self.send(cls, task=key[0], attempt=key[1], node=LOCAL, worker=worker) == []
        after_stale = self.scheduler.stats["stale_task_finished"] + self.scheduler.stats["stale_task_failed"]
        after_actor = self.scheduler.stats["actor_task_event_ignored"]
        assert (after_stale - before_stale) + (after_actor - before_actor) == 1

    @precondition(lambda self: bool(self.attempts))
    @rule(data=st.data())
    def withdraw(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.attempts)))
        a = self.attempts[key]
        out = self.send(E.TaskWithdrawn, task=key[0], attempt=key[1], node=LOCAL)
        if a.status == "pending":
            a.status = "withdrawn"
        self.absorb(out, self.view_snapshot())
        assert self.scheduler.state_of(*key) in (None, TaskState.RUNNING)

    @rule(
        data=st.data(),
        kind=st.sampled_from(
            [
                "duplicate_or_stale_arrival",
                "late_arguments_fetched",
                "late_arguments_missing",
                "late_result",
                "duplicate_worker_started",
            ]
        ),
    )
    def late_or_duplicate(self, data: st.DataObject, kind: str) -> None:
        """The distributed world is late and repetitive: nothing happens, and it is counted."""
        getattr(self, kind)(data)

    @precondition(
        lambda self: any(w.status == "starting" for w in self.workers.values())
        or any(a.fetch_asked and not a.fetch_answered and a.status == "pending" for a in self.attempts.values())
    )
    @rule()
    def drive(self) -> None:
        """A quiet stretch: every outstanding fetch is answered and every worker comes up."""
        for key in sorted(self.attempts):
            a = self.attempts[key]
            if a.fetch_asked and not a.fetch_answered and a.status == "pending":
                a.fetch_answered = True
                self.absorb(
                    self.send(E.ArgumentsFetched, task=key[0], attempt=key[1], node=LOCAL),
                    self.view_snapshot(),
                )
        for wid in sorted(self.workers):
            if self.workers[wid].status == "starting":
                self.workers[wid].status = "idle"
                self.absorb(self.send(E.WorkerStarted, worker=wid, node=LOCAL), self.view_snapshot())

    # -- workers ----------------------------------------------------------------------------

    @precondition(lambda self: any(w.status == "starting" for w in self.workers.values()))
    @rule(data=st.data())
    def worker_started(self, data: st.DataObject) -> None:
        wid = data.draw(st.sampled_from(sorted(w for w, r in self.workers.items() if r.status == "starting")))
        self.workers[wid].status = "idle"
        self.absorb(self.send(E.WorkerStarted, worker=wid, node=LOCAL), self.view_snapshot())

    def duplicate_worker_started(self, data: st.DataObject) -> None:
        if not self.workers:
            return
        wid = data.draw(st.sampled_from(sorted(self.workers)))
        if self.workers[wid].status == "starting":
            return
        assert self.send(E.WorkerStarted, worker=wid, node=LOCAL) == []

    @precondition(lambda self: any(w.status in ("busy", "actor") for w in self.workers.values()))
    @rule(data=st.data())
    def block_or_unblock(self, data: st.DataObject) -> None:
        wid = data.draw(
            st.sampled_from(sorted(w for w, r in self.workers.items() if r.status in ("busy", "actor")))
        )
        w = self.workers[wid]
        held = self.attempts[w.task].held if w.task is not None else w.held
        if not w.blocked:
            out = self.send(E.WorkerBlocked, worker=wid, node=LOCAL)
            w.blocked, w.lent_cpu = True, held.pop(CPU, 0)
        else:
            free = self.scheduler.available().get(CPU, 0)
            out = self.send(E.WorkerUnblocked, worker=wid, node=LOCAL)
            taken = min(w.lent_cpu, free)
            if taken:
                held[CPU] = taken
            w.blocked, w.lent_cpu = False, 0
        self.absorb(out, self.view_snapshot())

    @precondition(lambda self: bool(self.workers))
    @rule(data=st.data(), twice=st.booleans())
    def worker_died(self, data: st.DataObject, twice: bool) -> None:
        wid = data.draw(st.sampled_from(sorted(self.workers)))
        w = self.workers.pop(wid)
        if w.task is not None:
            self.attempts[w.task].status = "lost"
            self.attempts[w.task].held = {}
            self.attempts[w.task].gpus = {}
        self.absorb(self.send(E.WorkerDied, worker=wid, node=LOCAL), self.view_snapshot())
        if twice:
            assert self.send(E.WorkerDied, worker=wid, node=LOCAL) == []

    # -- other nodes ------------------------------------------------------------------------

    @rule(node=st.sampled_from(OTHERS), total=resources_st, step=st.sampled_from([1, 1, 0, -1]))
    def node_joined(self, node: NodeID, total: dict[str, int], step: int) -> None:
        known = self.view.get(node)
        base = known[0] if known else self.dead_incarnation.get(node, -1)
        incarnation = max(base + step, 0)
        before = self.view_snapshot()
        fresh = incarnation > self.dead_incarnation.get(node, -1) and (known is None or incarnation > known[0])
        if fresh:
            self.view[node] = (incarnation, units_of(total))
            before = self.view_snapshot()
        out = self.send(
            E.NodeJoined, node=node, incarnation=incarnation, resources=units_of(total), object_store_bytes=1
        )
        if not fresh:
            assert out == []
        self.absorb(out, before, spill=True)

    @precondition(lambda self: bool(self.view))
    @rule(data=st.data(), stale=st.sampled_from([False, False, True]))
    def node_died(self, data: st.DataObject, stale: bool) -> None:
        node = data.draw(st.sampled_from(sorted(set(self.view) | set(self.dead_incarnation))))
        known = self.view.get(node)
        if known is not None and not stale:
            incarnation = known[0]
            del self.view[node]
        else:
            incarnation = max((known[0] if known else self.dead_incarnation[node]) - 1, 0)
            if known is not None and incarnation >= known[0]:
                return
        self.dead_incarnation[node] = max(self.dead_incarnation.get(node, -1), incarnation)
        assert self.send(E.NodeDied, node=node, incarnation=incarnation) == []

    @precondition(lambda self: bool(self.view))
    @rule(data=st.data(), fraction=st.sampled_from([0.0, 0.5, 1.0]), stale=st.booleans())
    def resources_reported(self, data: st.DataObject, fraction: float, stale: bool) -> None:
        node = data.draw(st.sampled_from(sorted(self.view)))
        incarnation, total = self.view[node]
        available = {name: int(cap * fraction) for name, cap in total.items()}
        before = self.view_snapshot()
        out = self.send(
            E.NodeResourcesReported,
            node=node,
            incarnation=incarnation - 1 if stale else incarnation,
            available=available,
        )
        if stale:
            assert out == []
        self.absorb(out, before, spill=True)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def indexes_hold(self) -> None:
        self.scheduler.check_invariants()

    @invariant()
    def resources_are_conserved_exactly(self) -> None:
        s = self.scheduler
        available, total, holdings = s.available(), s.total(), s.holdings()
        assert total == self.total
        used: Units = {}
        for units in holdings.values():
            for name, amount in units.items():
                assert amount >= 0, (name, amount)
                used[name] = used.get(name, 0) + amount
        for name in sorted(set(total) | set(available) | set(used)):
            assert 0 <= available.get(name, 0) <= total.get(name, 0), name
            assert available.get(name, 0) + used.get(name, 0) == total.get(name, 0), name
        for (task, attempt), a in self.attempts.items():
            if a.status == "running":
                assert nonzero(holdings[f"task:{task}:{attempt}"]) == nonzero(a.held), (a, holdings)
        for wid, w in self.workers.items():
            if w.status == "actor":
                assert nonzero(holdings[f"actor:{wid}"]) == nonzero(w.held), (wid, w, holdings)
        gpu_free = s.gpu_free()
        on_gpu = [0] * len(gpu_free)
        holders = [a.gpus for a in self.attempts.values()]
        holders += [w.gpus for w in self.workers.values() if w.status == "actor"]
        for gpus in holders:
            for g, taken in gpus.items():
                on_gpu[g] += taken
        waiting = any(s.state_of(*k) is TaskState.WAITING_FOR_WORKER for k in self.attempts)
        for g, free in enumerate(gpu_free):
            assert on_gpu[g] <= UNIT, f"GPU {g} over-committed: {on_gpu[g]}"
            if waiting:
                assert on_gpu[g] <= UNIT - free
            else:
                assert on_gpu[g] == UNIT - free, (g, on_gpu, gpu_free)

    @invariant()
    def no_attempt_is_lost(self) -> None:
        s = self.scheduler
        live = 0
        for (task, attempt), a in self.attempts.items():
            state = s.state_of(task, attempt)
            if a.status == "pending":
                live += 1
                assert state in PENDING, (a, state)
                if a.fetch_asked and not a.fetch_answered:
                    assert state is TaskState.FETCHING, (a, state)
                if state is TaskState.FETCHING:
                    assert a.fetch_asked and not a.fetch_answered, a
                if state is TaskState.INFEASIBLE:
                    placement = a.spec.placement
                    assert not fits(placement, self.total), f"infeasible here but fits: {a}"
                    for node, (_, total) in self.view.items():
                        assert not fits(placement, total), f"infeasible but fits {node}: {a}"
            elif a.status == "running":
                live += 1
                assert state is TaskState.RUNNING, (a, state)
                assert s.worker_of(task, attempt) == a.worker
            else:
                assert a.status in TERMINAL, a
                assert state is None, (a, state)
        assert s.queue_length() + s.running_count() == live

    @invariant()
    def arguments_are_released_when_the_attempt_leaves(self) -> None:
        for a in self.attempts.values():
            if a.status in ("pending", "running") or not a.fetch_asked or a.status == "args_failed":
                assert a.releases == 0, f"released while here (or after a failed fetch): {a}"
            else:
                assert a.releases == 1, f"left without releasing its arguments: {a}"

    @invariant()
    def workers_match_the_model(self) -> None:
        expected = {w: WORKER_STATE[r.status] for w, r in sorted(self.workers.items())}
        assert self.scheduler.workers() == expected

    @invariant()
    def one_warning_per_attempt_at_most(self) -> None:
        for task, count in self.warned.items():
            assert count <= self.latest[task], (task, count)

    @invariant()
    def view_matches_the_model(self) -> None:
        view = self.scheduler.view()
        assert sorted(view) == sorted({LOCAL, *self.view})
        for node, (incarnation, total) in self.view.items():
            assert view[node].incarnation == incarnation and view[node].total == total

    def teardown(self) -> None:
        """Same events, fresh scheduler taking the general paths only (no fused fast
        path, the policy asked every time): the same commands in the same order, the
        same stats and the same stories."""
        replay = _GeneralScheduler(LOCAL, policy=_GeneralPolicy())
        for event, expected in zip(self.events, self.outputs):
            assert replay.handle(event) == expected, event
        replay.check_invariants()
        assert replay.stats == self.scheduler.stats
        assert list(replay._story) == list(self.scheduler._story)


class _GeneralPolicy(DefaultPolicy):
    """``DefaultPolicy``, but not exactly: the scheduler asks ``place`` every time."""


class _GeneralScheduler(Scheduler):
    """A scheduler that never takes the fused arrival path."""

    def _starts_at_once(self, rec: Any) -> bool:
        return False


SchedulerMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestScheduler = SchedulerMachine.TestCase
