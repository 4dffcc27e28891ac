"""The actor manager against a tiny model, under random creations, calls, deaths and kills.

The test plays the rest of the cluster: schedulers (creation attempts placed,
forwarded, started; withdrawals that arrive too late), workers (calls and
constructors run, finish, fail; kills answered with ``WorkerDied`` later),
nodes (die, come back with a new incarnation) and the task manager (resubmits
an aborted call while ``max_task_retries`` allows). A tiny model predicts each
actor's state and restart count; every submitted call attempt has exactly one
fate. A twin machine fed the same events must return the same commands.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, precondition, rule

from detray.core import commands as C
from detray.core import events as E
from detray.core.actors import ActorManager, ActorState
from detray.core.errors import ErrorKind, failure
from detray.core.ids import ActorID, NodeID, TaskID, WorkerID, job_id, node_id, worker_id
from detray.core.specs import INFINITE, ActorSpec, TaskKind, TaskSpec

NODES = (node_id(0), node_id(1), node_id(2))
CALLERS = (WorkerID("caller-a"), WorkerID("caller-b"))
NAMES = (None, None, "svc", "db")
DISASTERS_MAX = 6
JOB = job_id(1)

P = ActorState.PENDING_CREATION
A = ActorState.ALIVE
R = ActorState.RESTARTING
D = ActorState.DEAD


@dataclass
class ModelActor:
    """What the model believes about one actor."""

    spec: ActorSpec
    origin: NodeID
    state: ActorState = P
    restarts: int = 0
    args_ready: bool = False
    worker: WorkerID | None = None
    """The worker of the current incarnation (constructor running, or alive)."""
    exiting: bool = False
    """A call of the current incarnation called ``exit_actor()``; calls still running finish."""


@dataclass
class Attempt:
    """One submitted call attempt and its fate."""

    spec: TaskSpec
    attempt: int
    fate: str = "queued"
    """queued | running | finished | aborted | withdrawn"""
    node: NodeID | None = None
    worker: WorkerID | None = None


@dataclass
class World:
    """The cluster around the machine, as the test simulates it."""

    live: dict[NodeID, int] = field(default_factory=dict)
    incarnation: dict[NodeID, int] = field(default_factory=dict)
    placements: dict[tuple[ActorID, int], NodeID] = field(default_factory=dict)
    """Creation attempts queued at a scheduler, not started."""
    orphans: dict[tuple[ActorID, int], NodeID] = field(default_factory=dict)
    """Withdrawn creation attempts the scheduler may still start (the withdraw came late)."""
    creating: dict[tuple[ActorID, int], tuple[NodeID, WorkerID]] = field(default_factory=dict)
    """Constructors running on a worker."""
    workers: dict[WorkerID, NodeID] = field(default_factory=dict)
    """Workers alive (hosting a constructor, an actor, or a stale creation)."""
    kills: dict[WorkerID, NodeID] = field(default_factory=dict)
    """KillWorker received, WorkerDied not yet reported."""
    resubmits: list[tuple[TaskSpec, int]] = field(default_factory=list)
    worker_counter: int = 0


class ActorManagerMachine(RuleBasedStateMachine):
    actors = Bundle("actors")

    def __init__(self) -> None:
        super().__init__()
        self.am = ActorManager()
        self.twin = ActorManager()
        self.world = World()
        self.model: dict[ActorID, ModelActor] = {}
        self.attempts: dict[tuple[TaskID, int], Attempt] = {}
        self.next_seq: dict[tuple[ActorID, WorkerID], int] = {}
        self.first_starts: dict[tuple[ActorID, WorkerID], list[int]] = {}
        self.owner_generation: dict[str, int] = {"owner-1": 0, "owner-2": 0}
        self.steps = 0
        self.last_out: list[C.Command] = []
        self.reported_dead: set[ActorID] = set()
        self.disasters = 0
        """Destructive steps so far (kills, owner and node deaths): capped so actors also live."""

    # --- plumbing ----------------------------------------------------------------------------

    def feed(self, kind: type[E.Event], **fields: object) -> list[C.Command]:
        self.steps += 1
        stim = f"s{self.steps}"
        event = kind(now=float(self.steps), stimulus_id=stim, **fields)
        out = self.am.handle(event)
        assert self.twin.handle(event) == out, f"twin diverged on {event}"
        assert all(c.stimulus_id == stim for c in out)
        self.last_out = out
        self.apply(out)
        return out

    def apply(self, out: list[C.Command]) -> None:
        """Carry out the commands as schedulers, workers and the task manager would."""
        w = self.world
        for c in out:
            if isinstance(c, C.ScheduleTask):
                actor = c.spec.actor_id
                assert actor is not None and c.spec.kind is TaskKind.ACTOR_CREATION
                m = self.model[actor]
                assert m.state in (P, R) and m.args_ready, f"{actor} placed while {m.state}"
                assert c.attempt == m.restarts + 1, (
                    f"{actor}: placed attempt {c.attempt}, restarts {m.restarts}"
                )
                assert c.node in w.live, f"{actor} placed on dead node {c.node}"
                w.placements[(actor, c.attempt)] = c.node
            elif isinstance(c, C.WithdrawTask):
                actor = self.actor_of_creation(c.task)
                assert w.placements.pop((actor, c.attempt)) == c.node, f"withdrew unknown {c}"
                w.orphans[(actor, c.attempt)] = c.node
            elif isinstance(c, C.StartTask):
                a = self.attempts[(c.spec.task_id, c.attempt)]
                assert a.fate == "queued", f"started {c.spec.task_id}#{c.attempt} in fate {a.fate}"
                actor = c.spec.actor_id
                assert actor is not None
                m = self.model[actor]
                assert m.state is A and c.worker == m.worker, (
                    f"started on {c.worker}, model {m.state} {m.worker}"
                )
                a.fate, a.node, a.worker = "running", c.node, c.worker
                self.check_caller_order(c)
            elif isinstance(c, C.AbortActorTask):
                a = self.attempts[(c.task, c.attempt)]
                assert a.fate in ("queued", "running"), f"aborted {c.task}#{c.attempt} in fate {a.fate}"
                assert c.failure.kind in (ErrorKind.ACTOR_DIED, ErrorKind.ACTOR_UNSCHEDULABLE)
                m = self.model[c.actor]
                restarting = m.state is not D and not m.exiting
                assert c.actor_restarting == restarting, f"abort restarting={c.actor_restarting}"
                assert not restarting or a.fate == "running", "a queued call was aborted by a restart"
                a.fate = "aborted"
                retries = a.spec.max_retries
                if c.actor_restarting and (retries == INFINITE or c.attempt - 1 < retries):
                    w.resubmits.append((a.spec, c.attempt + 1))
            elif isinstance(c, C.KillWorker):
                assert w.workers.get(c.worker) == c.node, f"kill of unknown worker {c.worker}"
                w.kills[c.worker] = c.node
            elif isinstance(c, C.Warn):
                assert c.code == "actor_name_taken"
            elif isinstance(c, C.ReportActorDead):
                assert self.model[c.actor].state is D, (
                    f"{c.actor} reported dead while {self.model[c.actor].state}"
                )
                assert c.actor not in self.reported_dead, f"{c.actor} reported dead twice"
                assert c.failure == self.am.death_cause(c.actor)
                self.reported_dead.add(c.actor)
            else:
                raise AssertionError(f"unexpected command {c}")

    def check_caller_order(self, start: C.StartTask) -> None:
        actor, caller, seq = start.spec.actor_id, start.spec.owner, start.spec.caller_seq
        assert actor is not None
        if start.attempt == 1:
            seen = self.first_starts.setdefault((actor, caller), [])
            if self.model[actor].spec.max_concurrency == 1 and not self.model[actor].spec.is_async:
                assert not seen or seen[-1] < seq, f"{actor}: {caller} started seq {seq} after {seen}"
            seen.append(seq)

    def actor_of_creation(self, task: TaskID) -> ActorID:
        return ActorID(f"A{task}")

    def new_worker(self, node: NodeID) -> WorkerID:
        self.world.worker_counter += 1
        worker = worker_id(node, self.world.worker_counter)
        self.world.workers[worker] = node
        return worker

    def forget_worker(self, worker: WorkerID) -> None:
        """The worker is gone: whatever ran on it is gone with it."""
        w = self.world
        w.workers.pop(worker, None)
        w.kills.pop(worker, None)
        for key in [k for k, (_, wk) in w.creating.items() if wk == worker]:
            del w.creating[key]
        for a in self.attempts.values():
            if a.worker == worker and a.fate in ("running", "aborted"):
                a.worker = None  # it will never report
                a.node = None

    # --- the model ----------------------------------------------------------------------------

    def lose(self, m: ModelActor, *, restartable: bool) -> None:
        if m.exiting:
            restartable = False  # an actor that chose to exit is never restarted
            m.exiting = False
        m.worker = None
        budget = m.spec.max_restarts
        if restartable and (budget == INFINITE or m.restarts < budget):
            m.restarts += 1
            m.state = R
        else:
            m.state = D

    def current_location(self, actor: ActorID) -> NodeID | None:
        m = self.model[actor]
        key = (actor, m.restarts + 1)
        if key in self.world.placements:
            return self.world.placements[key]
        if key in self.world.creating:
            return self.world.creating[key][0]
        if m.state is A and m.worker is not None:
            return self.world.workers.get(m.worker) or node_of(m.worker)
        return None

    # --- rules: cluster -----------------------------------------------------------------------

    def join(self, node: NodeID) -> None:
        inc = self.world.incarnation.get(node, 0) + 1
        self.world.incarnation[node] = inc
        self.world.live[node] = inc
        self.feed(E.NodeJoined, node=node, incarnation=inc, resources={"CPU": 80_000}, object_store_bytes=1)

    @precondition(lambda self: len(self.world.live) < len(NODES))
    @rule(data=st.data())
    def node_returns(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(sorted(set(NODES) - set(self.world.live))))
        self.join(node)

    def may_strike(self) -> bool:
        return self.disasters < DISASTERS_MAX

    def live_actors(self) -> list[ActorID]:
        return [actor for actor, m in self.model.items() if m.state is not D]

    @precondition(lambda self: bool(self.world.live) and self.may_strike())
    @rule(data=st.data())
    def node_dies(self, data: st.DataObject) -> None:
        self.disasters += 1
        self.node_death(data.draw(st.sampled_from(sorted(self.world.live))))

    def node_death(self, node: NodeID) -> None:
        w = self.world
        for actor, m in self.model.items():
            if m.state is not D and self.current_location(actor) == node:
                self.lose(m, restartable=True)
        inc = w.live.pop(node)
        for key in [k for k, n in w.placements.items() if n == node]:
            del w.placements[key]
        for key in [k for k, n in w.orphans.items() if n == node]:
            del w.orphans[key]
        for worker in [wk for wk, n in w.workers.items() if n == node]:
            self.forget_worker(worker)
        self.feed(E.NodeDied, node=node, incarnation=inc)

    @precondition(lambda self: any(inc > 1 for inc in self.world.incarnation.values()) and self.may_strike())
    @rule(data=st.data())
    def stale_node_death(self, data: st.DataObject) -> None:
        self.disasters += 1
        node = data.draw(st.sampled_from(sorted(n for n, inc in self.world.incarnation.items() if inc > 1)))
        before = dict(self.am.stats)
        assert self.feed(E.NodeDied, node=node, incarnation=self.world.incarnation[node] - 1) == []
        assert self.am.stats["stale_node_died"] == before.get("stale_node_died", 0) + 1

    # --- rules: actors ------------------------------------------------------------------------

    @initialize(
        target=actors,
        data=st.data(),
        max_restarts=st.sampled_from((0, 1, 2, INFINITE)),
        max_task_retries=st.sampled_from((0, 1, INFINITE)),
        concurrency=st.sampled_from(((1, False), (1, False), (3, False), (3, True))),
    )
    def first_actor(
        self, data: st.DataObject, max_restarts: int, max_task_retries: int, concurrency: tuple[int, bool]
    ) -> ActorID:
        for node in NODES:
            self.join(node)
        actor = self.new_actor(data, max_restarts, max_task_retries, concurrency, "svc", False, "owner-1")
        self.ready(actor)
        return actor

    @precondition(lambda self: bool(self.world.live) and len(self.model) < 8)
    @rule(
        target=actors,
        data=st.data(),
        max_restarts=st.sampled_from((0, 1, 2, INFINITE)),
        max_task_retries=st.sampled_from((0, 1, INFINITE)),
        concurrency=st.sampled_from(((1, False), (1, False), (3, False), (3, True))),
        name=st.sampled_from(NAMES),
        detached=st.booleans(),
        owner=st.sampled_from(("owner-1", "owner-2")),
    )
    def create(
        self,
        data: st.DataObject,
        max_restarts: int,
        max_task_retries: int,
        concurrency: tuple[int, bool],
        name: str | None,
        detached: bool,
        owner: str,
    ) -> ActorID:
        return self.new_actor(data, max_restarts, max_task_retries, concurrency, name, detached, owner)

    def new_actor(
        self,
        data: st.DataObject,
        max_restarts: int,
        max_task_retries: int,
        concurrency: tuple[int, bool],
        name: str | None,
        detached: bool,
        owner: str,
    ) -> ActorID:
        node = data.draw(st.sampled_from(sorted(self.world.live)))
        index = len(self.model)
        task = TaskID(f"c{index}")
        actor = ActorID(f"A{task}")
        creation = TaskSpec(
            task_id=task,
            job_id=JOB,
            owner=WorkerID(f"{owner}#{self.owner_generation[owner]}"),
            name="Actor.__init__",
            kind=TaskKind.ACTOR_CREATION,
            actor_id=actor,
        )
        spec = ActorSpec(
            actor_id=actor,
            creation=creation,
            max_restarts=max_restarts,
            max_task_retries=max_task_retries,
            name=name,
            namespace="ns",
            detached=detached,
            max_concurrency=concurrency[0],
            is_async=concurrency[1],
        )
        m = ModelActor(spec=spec, origin=node)
        holder = self.name_holder(name)
        if holder is not None:
            m.state = D
        self.model[actor] = m
        self.feed(E.ActorCreated, spec=spec, node=node)
        if holder is not None:
            assert [type(c) for c in self.last_out] == [C.Warn, C.ReportActorDead]
        return actor

    def name_holder(self, name: str | None) -> ActorID | None:
        if name is None:
            return None
        for actor, m in self.model.items():
            if m.state is not D and m.spec.name == name:
                return actor
        return None

    @precondition(lambda self: any(not m.args_ready and m.state is not D for m in self.model.values()))
    @rule(data=st.data())
    def arguments_ready(self, data: st.DataObject) -> None:
        waiting = [a for a, m in self.model.items() if not m.args_ready and m.state is not D]
        actor = data.draw(st.sampled_from(waiting))
        self.ready(actor)

    def ready(self, actor: ActorID) -> None:
        m = self.model[actor]
        if m.state is not D:
            m.args_ready = True
        self.feed(E.ActorArgumentsReady, spec=m.spec)

    @precondition(lambda self: bool(self.world.placements) and len(self.world.live) > 1)
    @rule(data=st.data())
    def forward_creation(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.world.placements)))
        to = data.draw(st.sampled_from(sorted(set(self.world.live) - {self.world.placements[key]})))
        self.world.placements[key] = to
        actor, attempt = key
        self.feed(E.TaskArrived, spec=self.model[actor].spec.creation, attempt=attempt, node=to)

    @precondition(lambda self: bool(self.world.placements))
    @rule(data=st.data())
    def start_creation(self, data: st.DataObject) -> None:
        self.start_placement(data.draw(st.sampled_from(sorted(self.world.placements))))

    def start_placement(self, key: tuple[ActorID, int]) -> None:
        node = self.world.placements.pop(key)
        actor, attempt = key
        m = self.model[actor]
        assert attempt == m.restarts + 1 and m.state in (P, R), "a stale placement was left at a scheduler"
        worker = self.new_worker(node)
        self.world.creating[key] = (node, worker)
        m.worker = worker
        task = m.spec.creation.task_id
        assert self.feed(E.TaskStarted, task=task, attempt=attempt, node=node, worker=worker) == []

    @precondition(lambda self: bool(self.world.placements))
    @rule(data=st.data())
    def constructor_succeeds(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.world.placements)))
        self.start_placement(key)
        self.end_creation(key, raised=False)

    @precondition(lambda self: bool(self.world.orphans))
    @rule(data=st.data())
    def withdrawn_creation_starts_anyway(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.world.orphans)))
        node = self.world.orphans.pop(key)
        worker = self.new_worker(node)
        task = self.model[key[0]].spec.creation.task_id
        out = self.feed(E.TaskStarted, task=task, attempt=key[1], node=node, worker=worker)
        assert out == [C.KillWorker(stimulus_id=f"s{self.steps}", worker=worker, node=node)]

    @precondition(lambda self: bool(self.world.creating))
    @rule(data=st.data(), raised=st.sampled_from((False, False, True)))
    def creation_ends(self, data: st.DataObject, raised: bool) -> None:
        self.end_creation(data.draw(st.sampled_from(sorted(self.world.creating))), raised=raised)

    def end_creation(self, key: tuple[ActorID, int], *, raised: bool) -> None:
        node, worker = self.world.creating.pop(key)
        actor, attempt = key
        m = self.model[actor]
        current = m.state in (P, R) and attempt == m.restarts + 1 and m.worker == worker
        task = m.spec.creation.task_id
        if raised:
            if current:
                self.lose(m, restartable=False)
            self.feed(E.TaskFailed, task=task, attempt=attempt, node=node, worker=worker, error_types=("E",))
            if current:
                assert any(isinstance(c, C.KillWorker) and c.worker == worker for c in self.last_out)
        else:
            if current:
                m.state = A
            out = self.feed(E.TaskFinished, task=task, attempt=attempt, node=node, worker=worker)
            assert current or out == [], "a stale creation finish caused commands"

    @precondition(lambda self: bool(self.world.placements) and self.may_strike())
    @rule(data=st.data())
    def creation_unschedulable(self, data: st.DataObject) -> None:
        self.disasters += 1
        key = data.draw(st.sampled_from(sorted(self.world.placements)))
        del self.world.placements[key]
        actor, attempt = key
        m = self.model[actor]
        self.lose(m, restartable=False)
        reason = failure(ErrorKind.TASK_UNSCHEDULABLE, "affinity to a dead node")
        self.feed(E.TaskUnschedulable, task=m.spec.creation.task_id, attempt=attempt, failure=reason)
        cause = self.am.death_cause(actor)
        assert cause is not None and cause.kind is ErrorKind.ACTOR_UNSCHEDULABLE

    @precondition(lambda self: bool(self.live_actors()) and self.may_strike())
    @rule(data=st.data(), no_restart=st.booleans())
    def kill(self, data: st.DataObject, no_restart: bool) -> None:
        self.disasters += 1
        self.kill_actor(data.draw(st.sampled_from(self.live_actors())), no_restart)

    def kill_actor(self, actor: ActorID, no_restart: bool) -> None:
        m = self.model[actor]
        if m.state is not D:
            self.lose(m, restartable=not no_restart)
        self.feed(E.ActorKillRequested, actor=actor, no_restart=no_restart)

    @precondition(lambda self: self.may_strike())
    @rule(owner=st.sampled_from(("owner-1", "owner-2")))
    def owner_dies(self, owner: str) -> None:
        self.disasters += 1
        full = WorkerID(f"{owner}#{self.owner_generation[owner]}")
        self.owner_generation[owner] += 1
        for m in self.model.values():
            if m.state is not D and not m.spec.detached and m.spec.creation.owner == full:
                self.lose(m, restartable=False)
        self.feed(E.OwnerDied, owner=full)

    @precondition(lambda self: bool(self.world.workers) and self.may_strike())
    @rule(data=st.data())
    def worker_dies(self, data: st.DataObject) -> None:
        self.disasters += 1
        worker = data.draw(st.sampled_from(sorted(self.world.workers)))
        self.worker_death(worker)

    def busy_actors(self) -> list[ActorID]:
        return sorted({a.spec.actor_id for a in self.attempts.values() if a.fate == "running" and a.spec.actor_id})

    @precondition(lambda self: bool(self.busy_actors()) and self.may_strike())
    @rule(data=st.data(), how=st.sampled_from(("worker_died", "killed_with_restart", "node_died")))
    def busy_actor_dies(self, data: st.DataObject, how: str) -> None:
        actor = data.draw(st.sampled_from(self.busy_actors()))
        worker = self.model[actor].worker
        assert worker is not None
        self.disasters += 1
        if how == "worker_died":
            self.worker_death(worker)
        elif how == "killed_with_restart":
            self.kill_actor(actor, no_restart=False)
        else:
            node = self.world.workers[worker]
            self.node_death(node)

    @precondition(lambda self: bool(self.world.kills))
    @rule(data=st.data())
    def killed_worker_dies(self, data: st.DataObject) -> None:
        self.worker_death(data.draw(st.sampled_from(sorted(self.world.kills))))

    def worker_death(self, worker: WorkerID) -> None:
        node = self.world.workers[worker]
        for m in self.model.values():
            if m.state is not D and m.worker == worker:
                self.lose(m, restartable=True)
        self.forget_worker(worker)
        self.feed(E.WorkerDied, worker=worker, node=node)

    # --- rules: calls ---------------------------------------------------------------------------

    @rule(actor=actors, caller=st.sampled_from(CALLERS), data=st.data())
    def submit_call_to_an_actor(self, actor: ActorID, caller: WorkerID, data: st.DataObject) -> None:
        """Mostly to an actor that is not dead (a dead one fails the call at once)."""
        live = self.live_actors()
        if live and data.draw(st.integers(0, 9)) > 0:
            actor = data.draw(st.sampled_from(live))
        self.submit_call(actor, caller)

    def submit_call(self, actor: ActorID, caller: WorkerID) -> None:
        seq = self.next_seq.get((actor, caller), 0)
        self.next_seq[(actor, caller)] = seq + 1
        spec = TaskSpec(
            task_id=TaskID(f"{actor}/{caller}/{seq}"),
            job_id=JOB,
            owner=caller,
            name="Actor.method",
            kind=TaskKind.ACTOR_TASK,
            actor_id=actor,
            caller_seq=seq,
            max_retries=self.model[actor].spec.max_task_retries,
        )
        self.submit(spec, 1)

    def submit(self, spec: TaskSpec, attempt: int) -> None:
        self.attempts[(spec.task_id, attempt)] = Attempt(spec=spec, attempt=attempt)
        self.feed(E.ActorTaskReady, spec=spec, attempt=attempt)

    @precondition(lambda self: bool(self.world.resubmits))
    @rule(data=st.data())
    def task_manager_resubmits(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.world.resubmits) - 1))
        spec, attempt = self.world.resubmits.pop(index)
        self.submit(spec, attempt)

    def reporting(self) -> list[Attempt]:
        """Call attempts whose worker is alive and may still report."""
        return [a for a in self.attempts.values() if a.worker is not None and a.fate in ("running", "aborted")]

    @precondition(lambda self: bool(self.reporting()))
    @rule(data=st.data(), raised=st.booleans())
    def call_ends(self, data: st.DataObject, raised: bool) -> None:
        a = data.draw(st.sampled_from(self.reporting()))
        assert a.node is not None and a.worker is not None
        was_running = a.fate == "running"
        stale_before = self.am.stats["stale_task_finished"] + self.am.stats["stale_task_failed"]
        kind: type[E.Event] = E.TaskFailed if raised else E.TaskFinished
        worker, node = a.worker, a.node
        a.worker = a.node = None
        if was_running:
            a.fate = "finished"
            m = self.model[a.spec.actor_id] if a.spec.actor_id else None
            if m is not None and m.exiting and not self.running_calls_of(a.spec.actor_id):
                self.lose(m, restartable=False)  # the last running call of an exiting actor
        self.feed(kind, task=a.spec.task_id, attempt=a.attempt, node=node, worker=worker)
        stale_after = self.am.stats["stale_task_finished"] + self.am.stats["stale_task_failed"]
        assert stale_after == stale_before + (0 if was_running else 1)
        if not was_running:
            assert self.last_out == [], "a late report from an old incarnation caused commands"

    def running_calls_of(self, actor: ActorID | None) -> list[Attempt]:
        return [a for a in self.attempts.values() if a.spec.actor_id == actor and a.fate == "running"]

    def calls_that_may_exit(self) -> list[Attempt]:
        """Running calls on the current incarnation of an alive actor."""
        return sorted(
            (
                a
                for a in self.attempts.values()
                if a.fate == "running"
                and a.spec.actor_id is not None
                and self.model[a.spec.actor_id].state is A
                and a.worker == self.model[a.spec.actor_id].worker
            ),
            key=lambda a: (a.spec.task_id, a.attempt),
        )

    @precondition(lambda self: bool(self.calls_that_may_exit()))
    @rule(data=st.data())
    def a_call_calls_exit_actor(self, data: st.DataObject) -> None:
        """``exit_actor()`` (or ``__ray_terminate__``): the call and the queued ones fail at
        once, later calls fail, running ones finish; then the actor dies, not restarted."""
        a = data.draw(st.sampled_from(self.calls_that_may_exit()))
        actor = a.spec.actor_id
        assert actor is not None and a.worker is not None
        m = self.model[actor]
        m.exiting = True
        others = [o for o in self.running_calls_of(actor) if o is not a]
        if not others:
            self.lose(m, restartable=False)  # nothing left running: it ends now
        out = self.feed(
            E.ActorKillRequested,
            actor=actor,
            no_restart=True,
            exit_call=a.spec.task_id,
            exit_attempt=a.attempt,
            worker=a.worker,
        )
        assert a.fate == "aborted", "the call that exited must fail, not return a value"
        assert all(att.fate != "queued" for att in self.attempts.values() if att.spec.actor_id == actor)
        assert any(isinstance(c, C.KillWorker) for c in out) == (not others)

    def exiting_actors(self) -> list[ActorID]:
        return sorted(actor for actor, m in self.model.items() if m.exiting)

    @precondition(lambda self: bool(self.exiting_actors()))
    @rule(data=st.data(), how=st.sampled_from(("worker_died", "killed_with_restart", "node_died")))
    def an_exiting_actor_dies_before_its_calls_end(self, data: st.DataObject, how: str) -> None:
        """However it ends, an actor that chose to exit is not restarted."""
        actor = data.draw(st.sampled_from(self.exiting_actors()))
        worker = self.model[actor].worker
        assert worker is not None
        if how == "worker_died":
            self.worker_death(worker)
        elif how == "killed_with_restart":
            self.kill_actor(actor, no_restart=False)
        else:
            self.node_death(self.world.workers[worker])
        assert self.model[actor].state is D

    @precondition(lambda self: any(a.fate in ("finished", "aborted") for a in self.attempts.values()))
    @rule(data=st.data())
    def a_stale_exit_request_is_dropped(self, data: st.DataObject) -> None:
        """An exit request from an attempt that no longer runs (late, or an old incarnation)."""
        ended = [a for a in self.attempts.values() if a.fate in ("finished", "aborted")]
        a = data.draw(st.sampled_from(sorted(ended, key=lambda a: (a.spec.task_id, a.attempt))))
        assert a.spec.actor_id is not None
        worker = a.worker or self.model[a.spec.actor_id].worker or WorkerID("gone/w0")
        before = self.am.stats["stale_exit_requested"]
        out = self.feed(
            E.ActorKillRequested,
            actor=a.spec.actor_id,
            no_restart=True,
            exit_call=a.spec.task_id,
            exit_attempt=a.attempt,
            worker=worker,
        )
        assert out == [] and self.am.stats["stale_exit_requested"] == before + 1

    @precondition(lambda self: any(a.fate == "queued" for a in self.attempts.values()))
    @rule(data=st.data())
    def withdraw_call(self, data: st.DataObject) -> None:
        a = data.draw(st.sampled_from([a for a in self.attempts.values() if a.fate == "queued"]))
        a.fate = "withdrawn"
        assert self.feed(E.TaskWithdrawn, task=a.spec.task_id, attempt=a.attempt, node=NODES[0]) == []

    # --- invariants -----------------------------------------------------------------------------

    @invariant()
    def machine_indexes_agree(self) -> None:
        self.am.check_invariants()

    @invariant()
    def states_and_restarts_match_the_model(self) -> None:
        for actor, m in self.model.items():
            assert self.am.state(actor) is m.state, (
                f"{actor}: machine {self.am.state(actor)}, model {m.state}"
            )
            assert self.am.restarts(actor) == m.restarts, f"{actor}: restarts differ"
            budget = m.spec.max_restarts
            assert budget == INFINITE or self.am.restarts(actor) <= budget
            if m.state is A:
                assert self.am.worker_of(actor) == m.worker and self.am.node_of(actor) is not None
            if m.state is D:
                assert self.am.death_cause(actor) is not None
                assert actor in self.reported_dead, f"{actor} died without ReportActorDead"

    @invariant()
    def every_attempt_has_one_fate_and_the_machine_agrees(self) -> None:
        for actor, m in self.model.items():
            queued = {(a.spec.task_id, a.attempt) for a in self.attempts.values()
                      if a.spec.actor_id == actor and a.fate == "queued"}
            running = {(a.spec.task_id, a.attempt) for a in self.attempts.values()
                       if a.spec.actor_id == actor and a.fate == "running"}
            assert set(self.am.queued_calls(actor)) == queued, f"{actor}: queued calls differ"
            assert set(self.am.running_calls(actor)) == running, f"{actor}: running calls differ"
            assert len(running) <= m.spec.max_concurrency
            if m.state is D:
                assert not queued and not running, f"dead {actor} keeps calls"
            if m.state is A and queued:
                assert len(running) == m.spec.max_concurrency, f"{actor} idles with calls queued"

    @invariant()
    def names_are_unique_among_live_actors(self) -> None:
        holders: dict[str, ActorID] = {}
        for actor, m in self.model.items():
            if m.state is not D and m.spec.name is not None:
                assert m.spec.name not in holders, f"name {m.spec.name} held twice"
                holders[m.spec.name] = actor
        for name in NAMES:
            if name is not None:
                assert self.am.lookup(name, "ns") == holders.get(name)

    @invariant()
    def every_creating_actor_has_exactly_one_current_creation(self) -> None:
        if not self.world.live:
            return
        for actor, m in self.model.items():
            if m.state is D:
                continue  # a killed constructor may still run until its WorkerDied
            key = (actor, m.restarts + 1)
            outstanding = (key in self.world.placements) + (key in self.world.creating)
            expected = 1 if m.state in (P, R) and m.args_ready else 0
            assert outstanding == expected, (
                f"{actor} ({m.state}, args {m.args_ready}): {outstanding} creations"
            )


def node_of(worker: WorkerID) -> NodeID:
    return NodeID(worker.partition("/")[0])


ActorManagerMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("DETRAY_LONG_EXAMPLES", 250)),
    stateful_step_count=80,
    deadline=None,
)
TestActorManager = ActorManagerMachine.TestCase
