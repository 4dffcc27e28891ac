"""The task manager against a tiny model, driven by Hypothesis through a toy cluster.

The *world* plays the other machines as simply as it can: a directory that
knows which objects have a value (one copy, on one node), which resolve to a
failure and which were never created; schedulers that start, forward and
finish attempts; an actor manager that aborts calls. The *model* restates the
owner's rules naively (no indexes, lineage recomputed by a fixed point every
step) and predicts, for every event, the task states and attempts, and exactly
which attempts are scheduled, which objects fail with which kind, which
waiters are asked or forgotten, which attempts are withdrawn or interrupted.

Properties checked after every step, besides the model comparison:
- no task is lost: each is finished, failed or cancelled with a documented
  kind, or in flight with a ``pending_reason``;
- an object whose creator's lineage is live and has retries left is never
  failed as ``OBJECT_LOST``;
- no task gets a new attempt while the world still has one of it in flight;
- attempts never exceed ``max_retries + 1``;
- a freed object is referenced by nobody and not being created; at the end,
  no object that nothing needs still holds a value (nothing leaks);
- the same events give the same commands (replayed into a fresh machine).
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from dataclasses import dataclass, field

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from detray.core import commands as C
from detray.core import events as E
from detray.core.errors import ErrorKind, Failure, failure
from detray.core.ids import (
    ActorID,
    NodeID,
    ObjectID,
    TaskID,
    WorkerID,
    actor_id,
    creating_task,
    driver_task_id,
    is_put,
    job_id,
    node_id,
    put_object_id,
    return_object_id,
    task_id,
    worker_id,
)
from detray.core.specs import ActorSpec, TaskKind, TaskSpec
from detray.core.tasks import (
    CANCELLED_FAILURE_KINDS,
    OWN_FAILURE_KINDS,
    TaskManager,
    TaskState,
)

EXAMPLES = int(os.environ.get("DETRAY_LONG_EXAMPLES", 100))

JOB = job_id(1)
DRIVER = driver_task_id(JOB)
HEAD = node_id(0)
"""The owners' node: it never dies (its death would be every owner's)."""
EXEC_NODES = (node_id(1), node_id(2))
OWNER_A = worker_id(HEAD, 0)
OWNER_B = worker_id(HEAD, 1)
"""B may die (``OwnerDied``); A never does."""
ACTOR_WORKER = worker_id(HEAD, 99)
SYNC_ACTOR = actor_id(TaskID("sync"))
"""Never announced by ``ActorCreated``: its calls are submitted in caller order."""
ASYNC_CREATION = task_id(JOB, DRIVER, 1_000_000)
ASYNC_ACTOR = actor_id(ASYNC_CREATION)

ACTIVE = ("W", "S", "R")
STATE_NAMES = {
    "W": TaskState.WAITING_FOR_ARGS,
    "S": TaskState.SCHEDULED,
    "R": TaskState.RUNNING,
    "F": TaskState.FINISHED,
    "X": TaskState.FAILED,
    "C": TaskState.CANCELLED,
}


@dataclass
class MTask:
    """The model's view of one task."""

    spec: TaskSpec
    args: tuple[ObjectID, ...]
    state: str = "W"
    attempt: int = 1
    node: NodeID | None = None
    worker: WorkerID | None = None
    hops: int = -1
    args_ready: bool = False
    queued_call: bool = False
    cancel: bool = False
    force: bool = False
    """Cancelled with force while running: its worker's death is a WORKER_CRASHED."""
    rebuilding: bool = False
    lost: set[ObjectID] = field(default_factory=set)
    kind: ErrorKind | None = None
    from_argument: bool = False
    """Failed with an argument's failure (any kind), not one of its own."""
    released: bool = False
    """Finished and its lineage released (sticky, as in the machine)."""

    @property
    def normal(self) -> bool:
        return self.spec.kind is TaskKind.NORMAL

    @property
    def waiter(self) -> str:
        return f"task:{self.spec.task_id}"


@dataclass
class MActor:
    spec: ActorSpec
    args: tuple[ObjectID, ...]
    state: str = "W"


class TaskManagerMachine(RuleBasedStateMachine):
    objects = Bundle("objects")

    def __init__(self) -> None:
        super().__init__()
        self.tm = TaskManager()
        self.log: list[tuple[E.Event, list[C.Command]]] = []
        self.sids = itertools.count(1)
        self.task_counter = itertools.count(1)
        self.put_counter = itertools.count(1)
        self.worker_counter = itertools.count(100)
        self.hop_counter = itertools.count(1)
        # model
        self.tasks: dict[TaskID, MTask] = {}
        self.refs: Counter[ObjectID] = Counter()
        self.owner_of: dict[ObjectID, WorkerID] = {}
        self.dead_owners: set[WorkerID] = set()
        self.queues: dict[tuple[WorkerID, ActorID], list[TaskID]] = {}
        self.actor: MActor | None = None
        self.actor_created = False
        self.alive: dict[NodeID, bool] = {node: True for node in EXEC_NODES}
        self.incarnation: dict[NodeID, int] = {node: 0 for node in EXEC_NODES}
        # world
        self.value_at: dict[ObjectID, NodeID] = {}
        self.failed: dict[ObjectID, Failure] = {}
        self.created: set[ObjectID] = set()
        self.waiting: dict[str, tuple[ObjectID, ...]] = {}
        self.inflight: dict[TaskID, int] = {}
        self.where: dict[TaskID, tuple[NodeID, WorkerID | None]] = {}
        self.interrupted: dict[TaskID, int] = {}
        self.superseded: list[tuple[TaskID, int, NodeID, WorkerID]] = []
        self.old: list[E.Event] = []
        self._reset_expectations()

    # --- plumbing ------------------------------------------------------------------------

    def _reset_expectations(self) -> None:
        self.exp_sched: list[tuple[TaskID, int]] = []
        self.exp_fail: dict[ObjectID, ErrorKind] = {}
        self.exp_requests: set[str] = set()
        self.exp_forget: set[str] = set()
        self.exp_withdraw: set[TaskID] = set()
        self.exp_interrupt: set[TaskID] = set()
        self.exp_create = 0
        self.owner_death_min: set[ObjectID] = set()
        self.owner_death_max: set[ObjectID] = set()
        self.protected: set[ObjectID] = set()

    def step(self, event: E.Event) -> list[C.Command]:
        """Predict with the model, deliver to the machine, compare, update the world."""
        self._reset_expectations()
        if isinstance(event, E.ObjectLost) and self.lineage_protected(event.obj):
            self.protected.add(event.obj)
        getattr(self, "m_" + type(event).__name__)(event)
        out = self.tm.handle(event)
        self.log.append((event, out))
        self.check_commands(event, out)
        self.apply_world(out)
        self.model_gc()
        for tid in list(self.inflight):
            t = self.tasks[tid]
            if t.state not in ("S", "R") or t.attempt != self.inflight[tid]:
                del self.inflight[tid]
                self.where.pop(tid, None)
        if isinstance(event, (E.TaskStarted, E.TaskFinished, E.TaskFailed, E.TaskArrived, E.NodeDied, E.WorkerDied)):
            self.old.append(event)
        return out

    def sid(self) -> str:
        return f"s{next(self.sids)}"

    def check_commands(self, event: E.Event, out: list[C.Command]) -> None:
        assert all(c.stimulus_id == event.stimulus_id for c in out), out
        sched = sorted((c.spec.task_id, c.attempt) for c in out if isinstance(c, (C.ScheduleTask, C.SubmitActorTask)))
        assert sched == sorted(self.exp_sched), f"scheduled {sched}, model expects {sorted(self.exp_sched)}"
        for tid, attempt in sched:
            assert tid not in self.inflight, (
                f"{tid}: attempt {attempt} scheduled while attempt {self.inflight[tid]} is still in flight"
            )
            budget = self.tasks[tid].spec.max_retries
            assert budget == -1 or attempt - 1 <= budget, f"{tid}: attempt {attempt} > max_retries {budget}"
        fails = {c.obj: c.failure for c in out if isinstance(c, C.FailObject)}
        for obj, cause in fails.items():
            if cause.kind is ErrorKind.OBJECT_LOST:
                assert obj not in self.protected, f"{obj} failed as lost with live lineage and retries left"
        kinds = {obj: cause.kind for obj, cause in fails.items()}
        if isinstance(event, E.OwnerDied):
            assert set(kinds.values()) <= {ErrorKind.OWNER_DIED}, kinds
            assert self.owner_death_min <= set(kinds) <= self.owner_death_max, (
                sorted(kinds),
                sorted(self.owner_death_min),
            )
        else:
            assert kinds == self.exp_fail, f"failed {kinds}, model expects {self.exp_fail}"
        requests = {c.waiter for c in out if isinstance(c, C.RequestObjects)}
        assert requests == self.exp_requests, (requests, self.exp_requests)
        forgets = {c.waiter for c in out if isinstance(c, C.ForgetWaiter)}
        assert forgets == self.exp_forget, (forgets, self.exp_forget)
        withdraws = {c.task for c in out if isinstance(c, C.WithdrawTask)}
        assert withdraws == self.exp_withdraw, (withdraws, self.exp_withdraw)
        interrupts = {c.task for c in out if isinstance(c, C.InterruptTask)}
        assert interrupts == self.exp_interrupt, (interrupts, self.exp_interrupt)
        creates = [c for c in out if isinstance(c, C.CreateActor)]
        assert len(creates) == self.exp_create, creates
        for c in out:
            if isinstance(c, C.FreeObject):
                assert not self.needed(c.obj), f"{c.obj} freed while needed"
                assert self.owner_of[c.obj] not in self.dead_owners, f"{c.obj} of a dead owner freed"

    def apply_world(self, out: list[C.Command]) -> None:
        for c in out:
            if isinstance(c, C.RequestObjects):
                self.waiting[c.waiter] = c.objects
            elif isinstance(c, C.ForgetWaiter):
                self.waiting.pop(c.waiter, None)
            elif isinstance(c, C.ScheduleTask):
                self.inflight[c.spec.task_id] = c.attempt
                self.where[c.spec.task_id] = (c.node, None)
            elif isinstance(c, C.SubmitActorTask):
                self.inflight[c.spec.task_id] = c.attempt
                self.where[c.spec.task_id] = (HEAD, None)
            elif isinstance(c, C.WithdrawTask):
                self.end_in_world(c.task)
            elif isinstance(c, C.InterruptTask):
                self.interrupted[c.task] = c.attempt
            elif isinstance(c, C.FailObject):
                self.failed[c.obj] = c.failure
                self.value_at.pop(c.obj, None)
            elif isinstance(c, C.FreeObject):
                self.value_at.pop(c.obj, None)
                self.failed.pop(c.obj, None)

    def end_in_world(self, tid: TaskID) -> None:
        """The world saw the attempt in flight end (died, withdrawn, reported)."""
        attempt = self.inflight.pop(tid, None)
        node, worker = self.where.pop(tid, (HEAD, None))
        if attempt is not None:
            self.superseded.append((tid, attempt, node, worker or worker_id(node, next(self.worker_counter))))

    # --- model helpers ------------------------------------------------------------------------

    def alive_node(self, node: NodeID) -> bool:
        return node == HEAD or self.alive[node]

    def users(self, obj: ObjectID) -> int:
        count = sum(1 for t in self.tasks.values() if t.state in ACTIVE and obj in t.args)
        if self.actor is not None and obj in self.actor.args:
            count += 1
        return count

    def pending(self, obj: ObjectID) -> bool:
        if is_put(obj):
            return False
        t = self.tasks.get(creating_task(obj))
        return t is not None and t.state in ACTIVE

    def needed(self, obj: ObjectID) -> bool:
        return self.refs[obj] > 0 or self.users(obj) > 0 or self.pending(obj)

    def lineage_protected(self, obj: ObjectID) -> bool:
        """Live lineage, retries left, rebuildable: must never fail as lost."""
        if is_put(obj):
            return False
        t = self.tasks.get(creating_task(obj))
        return (
            t is not None
            and t.normal
            and t.state == "F"
            and not t.released
            and self.budget(t)
            and t.spec.owner not in self.dead_owners
        )

    def budget(self, t: MTask) -> bool:
        return t.spec.max_retries == -1 or t.attempt <= t.spec.max_retries

    def ordered(self, actor: ActorID) -> bool:
        return not (actor == ASYNC_ACTOR and self.actor is not None)

    def model_gc(self) -> None:
        """Lineage is what the live roots reach: pending tasks, live actors, handles."""
        kept = {tid for tid, t in self.tasks.items() if t.state in ACTIVE}
        held = {obj for tid in kept for obj in self.tasks[tid].args}
        if self.actor is not None:
            held.update(self.actor.args)
        changed = True
        while changed:
            changed = False
            for tid, t in self.tasks.items():
                if t.state != "F" or t.released or tid in kept:
                    continue
                if any(self.refs[obj] > 0 or obj in held for obj in t.spec.return_ids):
                    kept.add(tid)
                    held.update(t.args)
                    changed = True
        for tid, t in self.tasks.items():
            if t.state == "F" and tid not in kept:
                t.released = True

    def schedule(self, t: MTask) -> None:
        t.state = "S"
        t.node = HEAD if t.normal else None
        t.worker = None
        t.hops = -1
        self.exp_sched.append((t.spec.task_id, t.attempt))

    def args_resolved(self, t: MTask) -> None:
        t.args_ready = True
        if t.queued_call:
            assert t.spec.actor_id is not None
            self.release_queue((t.spec.owner, t.spec.actor_id))
        else:
            self.schedule(t)

    def release_queue(self, key: tuple[WorkerID, ActorID]) -> None:
        if key[0] in self.dead_owners:
            return
        queue = self.queues.get(key, [])
        while queue and self.tasks[queue[0]].args_ready:
            t = self.tasks[queue.pop(0)]
            t.queued_call = False
            self.schedule(t)

    def await_args(self, t: MTask) -> None:
        t.args_ready = False
        if t.args:
            self.exp_requests.add(t.waiter)
        else:
            self.args_resolved(t)

    def end(
        self, t: MTask, state: str, kind: ErrorKind, *, stored: bool = False, every_return: bool = False
    ) -> None:
        returns = t.spec.return_ids
        if t.rebuilding and not every_return:
            targets = [obj for obj in returns if obj in t.lost]
        else:
            targets = list(returns)
        if not stored:
            for obj in targets:
                self.exp_fail[obj] = kind
        t.state = state
        t.kind = kind
        t.node = t.worker = None
        t.cancel = t.force = t.rebuilding = False
        t.lost = set()
        if t.queued_call:
            assert t.spec.actor_id is not None
            key = (t.spec.owner, t.spec.actor_id)
            self.queues[key].remove(t.spec.task_id)
            t.queued_call = False
            self.release_queue(key)

    def retry(self, t: MTask) -> None:
        t.attempt += 1
        self.schedule(t)

    def attempt_lost(self, t: MTask, kind: ErrorKind) -> None:
        assert t.normal
        if t.cancel:
            self.end(t, "C", ErrorKind.WORKER_CRASHED if t.force else ErrorKind.TASK_CANCELLED)
        elif self.budget(t):
            self.retry(t)
        else:
            self.end(t, "X", kind)

    def current(self, tid: TaskID, attempt: int) -> MTask | None:
        t = self.tasks.get(tid)
        if t is None or t.attempt != attempt or t.state not in ("S", "R"):
            return None
        return t

    def release_actor(self) -> None:
        assert self.actor is not None
        if self.actor.state == "W" and self.actor.args:
            self.exp_forget.add(f"task:{ASYNC_CREATION}")
        self.actor = None

    # --- model: one method per event type ---------------------------------------------------

    def m_NodeJoined(self, e: E.NodeJoined) -> None:
        if e.node in self.alive:
            self.alive[e.node] = True
            self.incarnation[e.node] = e.incarnation

    def m_NodeDied(self, e: E.NodeDied) -> None:
        if not self.alive[e.node] or e.incarnation < self.incarnation[e.node]:
            return
        self.alive[e.node] = False
        for t in self.tasks.values():
            if t.normal and t.state in ("S", "R") and t.node == e.node:
                self.attempt_lost(t, ErrorKind.NODE_DIED)

    def m_WorkerDied(self, e: E.WorkerDied) -> None:
        for t in self.tasks.values():
            if t.normal and t.state == "R" and t.worker == e.worker:
                self.attempt_lost(t, ErrorKind.WORKER_CRASHED)

    def m_RefsAdded(self, e: E.RefsAdded) -> None:
        if e.owner not in self.dead_owners:
            self.refs.update(e.objects)

    def m_RefsRemoved(self, e: E.RefsRemoved) -> None:
        if e.owner in self.dead_owners:
            return
        for obj in e.objects:
            if self.refs[obj] > 0:
                self.refs[obj] -= 1

    def m_TaskSubmitted(self, e: E.TaskSubmitted) -> None:
        spec = e.spec
        t = self.tasks[spec.task_id] = MTask(spec, tuple(dict.fromkeys(spec.args)))
        if spec.kind is TaskKind.ACTOR_TASK:
            assert spec.actor_id is not None
            if self.ordered(spec.actor_id):
                self.queues.setdefault((spec.owner, spec.actor_id), []).append(spec.task_id)
                t.queued_call = True
        self.await_args(t)

    def m_ArgumentsReady(self, e: E.ArgumentsReady) -> None:
        tid = TaskID(e.waiter[len("task:") :])
        if tid == ASYNC_CREATION:
            if self.actor is not None and self.actor.state == "W":
                self.actor.state = "S"
                self.exp_create += 1
            return
        t = self.tasks[tid]
        if t.state != "W" or t.args_ready:
            return
        if e.failed:
            by_obj = dict(e.failed)
            cause = next(by_obj[obj] for obj in t.args if obj in by_obj)
            self.end(t, "X", cause.kind)
            t.from_argument = True
        else:
            self.args_resolved(t)

    def m_TaskArrived(self, e: E.TaskArrived) -> None:
        t = self.current(e.spec.task_id, e.attempt)
        if t is None or t.state != "S" or not t.normal or e.hops <= t.hops:
            return
        if not self.alive_node(e.node):
            self.attempt_lost(t, ErrorKind.NODE_DIED)
            return
        t.node = e.node
        t.hops = e.hops

    def m_TaskStarted(self, e: E.TaskStarted) -> None:
        t = self.tasks[e.task]
        if t.state == "C" and t.attempt == e.attempt:
            self.exp_interrupt.add(e.task)
            return
        if self.current(e.task, e.attempt) is None or t.state != "S":
            return
        if not self.alive_node(e.node):
            if t.normal:
                self.attempt_lost(t, ErrorKind.NODE_DIED)
            return
        t.state = "R"
        t.node = e.node
        t.worker = e.worker

    def result_accepted(self, t: MTask, node: NodeID, worker: WorkerID) -> bool:
        if t.state == "R" and worker != t.worker:
            return False
        if not self.alive_node(node):
            if t.state == "S" and t.normal:
                self.attempt_lost(t, ErrorKind.NODE_DIED)
            return False
        return True

    def m_TaskFinished(self, e: E.TaskFinished) -> None:
        t = self.current(e.task, e.attempt)
        if t is None or not self.result_accepted(t, e.node, e.worker):
            return
        t.state = "F"
        t.node = t.worker = None
        t.cancel = t.force = t.rebuilding = False
        t.lost = set()
        for obj in t.spec.return_ids:
            self.value_at[obj] = e.node
            self.created.add(obj)
            self.failed.pop(obj, None)

    def m_TaskFailed(self, e: E.TaskFailed) -> None:
        t = self.current(e.task, e.attempt)
        if t is None or not self.result_accepted(t, e.node, e.worker):
            return
        allowed = t.spec.retry_exceptions
        retryable = allowed is True or (isinstance(allowed, tuple) and any(n in allowed for n in e.error_types))
        if t.cancel or e.cancelled:
            self.end(t, "C", ErrorKind.TASK_CANCELLED, stored=True)
        elif retryable and self.budget(t):
            self.retry(t)
            return
        else:
            self.end(t, "X", ErrorKind.TASK_ERROR, stored=True)
        for obj, _ in e.return_sizes:  # the driver stored the error as the values
            self.value_at[obj] = e.node
            self.created.add(obj)
            self.failed.pop(obj, None)

    def m_TaskUnschedulable(self, e: E.TaskUnschedulable) -> None:
        t = self.current(e.task, e.attempt)
        if t is not None and t.state == "S":
            self.end(t, "X", e.failure.kind)

    def m_CancelRequested(self, e: E.CancelRequested) -> None:
        t = self.tasks[e.task]
        if t.state not in ACTIVE or t.rebuilding:
            return
        if t.state == "R":
            if not t.cancel:
                t.cancel = True
                t.force = e.force and t.normal
                self.exp_interrupt.add(e.task)
            return
        if t.state == "W" and t.args and not t.args_ready:
            self.exp_forget.add(t.waiter)
        if t.state == "S":
            self.exp_withdraw.add(e.task)
        self.end(t, "C", ErrorKind.TASK_CANCELLED)

    def m_ObjectLost(self, e: E.ObjectLost) -> None:
        obj = e.obj
        if is_put(obj):
            self.exp_fail[obj] = ErrorKind.OBJECT_LOST
            return
        t = self.tasks[creating_task(obj)]
        if t.state in ("X", "C") or (t.state == "F" and t.released):
            self.exp_fail[obj] = ErrorKind.OWNER_DIED if t.kind is ErrorKind.OWNER_DIED else ErrorKind.OBJECT_LOST
        elif not t.normal:
            self.exp_fail[obj] = ErrorKind.OBJECT_LOST
        elif t.state in ACTIVE:
            if t.rebuilding:
                t.lost.add(obj)
        elif not self.budget(t):
            self.exp_fail[obj] = ErrorKind.OBJECT_LOST
        else:
            t.attempt += 1
            t.rebuilding = True
            t.lost = {obj}
            t.state = "W"
            self.await_args(t)

    def m_OwnerDied(self, e: E.OwnerDied) -> None:
        owner = e.owner
        if owner in self.dead_owners:
            return
        self.dead_owners.add(owner)
        for t in self.tasks.values():
            if t.spec.owner != owner:
                continue
            self.owner_death_max.update(t.spec.return_ids)
            if t.state in ACTIVE:
                self.owner_death_min.update(t.spec.return_ids)
                if t.state == "W" and t.args and not t.args_ready:
                    self.exp_forget.add(t.waiter)
                elif t.state == "S":
                    self.exp_withdraw.add(t.spec.task_id)
                elif t.state == "R" and t.normal and t.node is not None and self.alive_node(t.node):
                    self.exp_interrupt.add(t.spec.task_id)
                self.end(t, "C", ErrorKind.OWNER_DIED, every_return=True)
            elif t.state == "F" and not t.released:
                t.released = True
                t.kind = ErrorKind.OWNER_DIED
        for obj, obj_owner in self.owner_of.items():
            if obj_owner == owner:
                self.owner_death_max.add(obj)
                if self.refs[obj] > 0:  # a handle the owner counted: it must fail
                    self.owner_death_min.add(obj)
                self.refs[obj] = 0

    def m_ActorCreated(self, e: E.ActorCreated) -> None:
        self.actor = MActor(e.spec, tuple(dict.fromkeys(e.spec.creation.args)))
        self.actor_created = True
        if self.actor.args:
            self.exp_requests.add(f"task:{ASYNC_CREATION}")
        else:
            self.actor.state = "S"
            self.exp_create += 1

    def m_ActorTerminated(self, e: E.ActorTerminated) -> None:
        if self.actor is not None:
            self.release_actor()

    def m_ActorTaskAborted(self, e: E.ActorTaskAborted) -> None:
        t = self.current(e.task, e.attempt)
        if t is not None and not t.normal:
            if t.cancel:
                self.end(t, "C", ErrorKind.TASK_CANCELLED)
            elif e.actor_restarting and self.budget(t):
                self.retry(t)
            else:
                self.end(t, "X", e.failure.kind)
        if not e.actor_restarting and e.actor == ASYNC_ACTOR and self.actor is not None:
            self.release_actor()

    # --- rules: the cluster ----------------------------------------------------------------------

    @initialize()
    def nodes_join(self) -> None:
        for node in (HEAD, *EXEC_NODES):
            self.step(E.NodeJoined(now=0.0, stimulus_id=self.sid(), node=node, incarnation=0, resources={}, object_store_bytes=1))

    @initialize(
        target=objects,
        max_retries=st.lists(st.sampled_from([0, 1, 2, -1]), min_size=1, max_size=3),
    )
    def seed_tasks(self, max_retries: list[int]) -> object:
        """Start every run with a few argument-less tasks of A, so lineage forms early."""
        returns: list[ObjectID] = []
        for budget in max_retries:
            returns.extend(self.submit_task([], 1, budget, False, "normal", OWNER_A))
        return multiple(*returns)

    @rule(target=objects, owner=st.sampled_from([OWNER_A, OWNER_B]))
    def put(self, owner: WorkerID) -> object:
        if owner in self.dead_owners:
            return multiple()
        obj = put_object_id(DRIVER, next(self.put_counter))
        self.owner_of[obj] = owner
        self.value_at[obj] = HEAD
        self.created.add(obj)
        self.step(E.RefsAdded(now=0.0, stimulus_id=self.sid(), owner=owner, objects=(obj,)))
        return obj

    @rule(
        target=objects,
        args=st.lists(objects, max_size=3),
        returns=st.integers(1, 2),
        max_retries=st.sampled_from([0, 1, 2, -1]),
        retry_exceptions=st.sampled_from([False, True, ("m.Flaky",)]),
        kind=st.sampled_from(["normal", "normal", "normal", "sync_call", "async_call"]),
        owner=st.sampled_from([OWNER_A, OWNER_A, OWNER_B]),
    )
    def submit(
        self,
        args: list[ObjectID],
        returns: int,
        max_retries: int,
        retry_exceptions: bool | tuple[str, ...],
        kind: str,
        owner: WorkerID,
    ) -> object:
        if owner in self.dead_owners:
            return multiple()
        return multiple(*self.submit_task(args, returns, max_retries, retry_exceptions, kind, owner))

    def submit_task(
        self,
        args: list[ObjectID],
        returns: int,
        max_retries: int,
        retry_exceptions: bool | tuple[str, ...],
        kind: str,
        owner: WorkerID,
    ) -> tuple[ObjectID, ...]:
        args = [obj for obj in args if self.owner_of[obj] not in self.dead_owners]
        for obj in dict.fromkeys(args):
            if self.refs[obj] == 0:  # the submitter holds a handle to each argument
                self.step(E.RefsAdded(now=0.0, stimulus_id=self.sid(), owner=self.owner_of[obj], objects=(obj,)))
        counter = next(self.task_counter)
        tid = task_id(JOB, DRIVER, counter)
        return_ids = tuple(return_object_id(tid, i) for i in range(1, returns + 1))
        actor = {"sync_call": SYNC_ACTOR, "async_call": ASYNC_ACTOR}.get(kind)
        spec = TaskSpec(
            task_id=tid,
            job_id=JOB,
            owner=owner,
            name=f"f{counter}",
            kind=TaskKind.NORMAL if actor is None else TaskKind.ACTOR_TASK,
            args=tuple(args),
            return_ids=return_ids,
            max_retries=max_retries,
            retry_exceptions=retry_exceptions,
            actor_id=actor,
            caller_seq=counter,
        )
        for obj in return_ids:
            self.owner_of[obj] = owner
        self.step(E.RefsAdded(now=0.0, stimulus_id=self.sid(), owner=owner, objects=return_ids))
        self.step(E.TaskSubmitted(now=0.0, stimulus_id=self.sid(), spec=spec, node=HEAD))
        return return_ids

    def answerable_waiters(self) -> list[str]:
        """Waiters whose objects all exist or failed, or miss one that existed once."""
        return [
            waiter
            for waiter in sorted(self.waiting)
            if all(obj in self.value_at or obj in self.failed or obj in self.created for obj in self.waiting[waiter])
        ]

    @precondition(lambda self: self.answerable_waiters())
    @rule(data=st.data())
    def resolve_arguments(self, data: st.DataObject) -> None:
        """The directory answers a waiter, or reports a needed object with no copy left."""
        waiter = data.draw(st.sampled_from(self.answerable_waiters()))
        args = self.waiting[waiter]
        missing = [obj for obj in args if obj not in self.value_at and obj not in self.failed]
        if missing:
            self.step(E.ObjectLost(now=0.0, stimulus_id=self.sid(), obj=missing[0]))
            return
        del self.waiting[waiter]
        ready = tuple(obj for obj in args if obj in self.value_at)
        failed = tuple((obj, self.failed[obj]) for obj in args if obj in self.failed)
        self.step(E.ArgumentsReady(now=0.0, stimulus_id=self.sid(), waiter=waiter, ready=ready, failed=failed))

    def gettable_lost(self) -> list[ObjectID]:
        return [
            obj
            for obj in sorted(self.created)
            if self.refs[obj] > 0 and obj not in self.value_at and obj not in self.failed
        ]

    @precondition(lambda self: self.gettable_lost())
    @rule(data=st.data())
    def get(self, data: st.DataObject) -> None:
        """A get needs the object: with no copy left, the directory reports it lost."""
        obj = data.draw(st.sampled_from(self.gettable_lost()))
        self.step(E.ObjectLost(now=0.0, stimulus_id=self.sid(), obj=obj))

    @precondition(lambda self: self.value_at)
    @rule(data=st.data(), needed_now=st.booleans())
    def evict(self, data: st.DataObject, needed_now: bool) -> None:
        """A fault drops the object's only copy; the task manager hears of it only when
        something needs the object (here, maybe at once: a ``get`` finds no copy)."""
        obj = data.draw(st.sampled_from(sorted(self.value_at)))
        del self.value_at[obj]
        if needed_now and self.refs[obj] > 0 and obj not in self.failed:
            self.step(E.ObjectLost(now=0.0, stimulus_id=self.sid(), obj=obj))

    def eligible(self, *, normal: bool | None = None, started: bool | None = None) -> list[TaskID]:
        return [
            tid
            for tid in sorted(self.inflight)
            if (normal is None or self.tasks[tid].normal == normal)
            and (started is None or (self.where[tid][1] is not None) == started)
        ]

    def pick_inflight(self, data: st.DataObject, *, normal: bool | None = None, started: bool | None = None) -> TaskID | None:
        choices = self.eligible(normal=normal, started=started)
        if not choices:
            return None
        return data.draw(st.sampled_from(choices))

    @precondition(lambda self: self.eligible(normal=True, started=False))
    @rule(data=st.data(), to_node=st.sampled_from(EXEC_NODES))
    def forward(self, data: st.DataObject, to_node: NodeID) -> None:
        tid = self.pick_inflight(data, normal=True, started=False)
        if tid is None:
            return
        attempt = self.inflight[tid]
        if self.alive[to_node]:
            self.where[tid] = (to_node, None)
        else:
            self.end_in_world(tid)  # forwarded into a node that is gone
        spec = self.tasks[tid].spec
        self.step(
            E.TaskArrived(now=0.0, stimulus_id=self.sid(), spec=spec, attempt=attempt, node=to_node, hops=next(self.hop_counter))
        )

    @precondition(lambda self: self.eligible(started=False))
    @rule(data=st.data())
    def start(self, data: st.DataObject) -> None:
        tid = self.pick_inflight(data, started=False)
        if tid is None:
            return
        node, _ = self.where[tid]
        worker = ACTOR_WORKER if not self.tasks[tid].normal else worker_id(node, next(self.worker_counter))
        self.where[tid] = (node, worker)
        self.step(E.TaskStarted(now=0.0, stimulus_id=self.sid(), task=tid, attempt=self.inflight[tid], node=node, worker=worker))

    def ending(self, tid: TaskID) -> tuple[int, NodeID, WorkerID]:
        attempt = self.inflight[tid]
        node, worker = self.where[tid]
        if worker is None:  # finished before its start was reported
            worker = ACTOR_WORKER if not self.tasks[tid].normal else worker_id(node, next(self.worker_counter))
        self.inflight.pop(tid)
        self.where.pop(tid)
        self.superseded.append((tid, attempt, node, worker))  # it may report again, late
        return attempt, node, worker

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        tid = self.pick_inflight(data)
        if tid is None:
            return
        attempt, node, worker = self.ending(tid)
        sizes = tuple((obj, 8) for obj in self.tasks[tid].spec.return_ids)
        self.step(
            E.TaskFinished(now=0.0, stimulus_id=self.sid(), task=tid, attempt=attempt, node=node, worker=worker, return_sizes=sizes)
        )

    @precondition(lambda self: self.inflight)
    @rule(data=st.data())
    def run_to_completion(self, data: st.DataObject) -> None:
        """An attempt starts (if it has not) and finishes: the common, boring path."""
        tid = self.pick_inflight(data)
        assert tid is not None
        if self.where[tid][1] is None:
            node = self.where[tid][0]
            worker = ACTOR_WORKER if not self.tasks[tid].normal else worker_id(node, next(self.worker_counter))
            self.where[tid] = (node, worker)
            self.step(
                E.TaskStarted(now=0.0, stimulus_id=self.sid(), task=tid, attempt=self.inflight[tid], node=node, worker=worker)
            )
        if tid in self.inflight:
            attempt, node, worker = self.ending(tid)
            sizes = tuple((obj, 8) for obj in self.tasks[tid].spec.return_ids)
            self.step(
                E.TaskFinished(
                    now=0.0, stimulus_id=self.sid(), task=tid, attempt=attempt, node=node, worker=worker, return_sizes=sizes
                )
            )

    @precondition(lambda self: self.inflight)
    @rule(data=st.data(), error=st.sampled_from(["m.Flaky", "builtins.ValueError"]), cancelled=st.booleans())
    def fail(self, data: st.DataObject, error: str, cancelled: bool) -> None:
        tid = self.pick_inflight(data)
        if tid is None:
            return
        cancelled = cancelled and self.interrupted.get(tid) == self.inflight[tid]
        attempt, node, worker = self.ending(tid)
        sizes = tuple((obj, 8) for obj in self.tasks[tid].spec.return_ids)
        self.step(
            E.TaskFailed(
                now=0.0,
                stimulus_id=self.sid(),
                task=tid,
                attempt=attempt,
                node=node,
                worker=worker,
                error_types=(error, "builtins.Exception"),
                cancelled=cancelled,
                return_sizes=sizes,
            )
        )

    @precondition(lambda self: self.eligible(normal=True, started=True))
    @rule(data=st.data())
    def worker_dies(self, data: st.DataObject) -> None:
        tid = self.pick_inflight(data, normal=True, started=True)
        if tid is None:
            return
        node, worker = self.where[tid]
        assert worker is not None
        for other in [t for t, (_, w) in self.where.items() if w == worker]:
            self.end_in_world(other)
        self.step(E.WorkerDied(now=0.0, stimulus_id=self.sid(), worker=worker, node=node))

    @rule(
        target=objects,
        args=st.lists(objects, min_size=1, max_size=3),
        max_retries=st.sampled_from([0, 1, 2, -1]),
    )
    def submit_dependent(self, args: list[ObjectID], max_retries: int) -> object:
        """A normal task of A on earlier results: lineage chains."""
        return multiple(*self.submit_task(args, 1, max_retries, False, "normal", OWNER_A))

    @precondition(lambda self: any(self.alive.values()))
    @rule(node=st.sampled_from(EXEC_NODES))
    def node_dies(self, node: NodeID) -> None:
        if not self.alive[node]:
            return
        for obj in [o for o, at in self.value_at.items() if at == node]:
            del self.value_at[obj]
        for tid in [t for t, (at, _) in self.where.items() if at == node]:
            self.end_in_world(tid)
        self.step(E.NodeDied(now=0.0, stimulus_id=self.sid(), node=node, incarnation=self.incarnation[node]))

    @precondition(lambda self: not all(self.alive.values()))
    @rule(node=st.sampled_from(EXEC_NODES))
    def node_rejoins(self, node: NodeID) -> None:
        if self.alive[node]:
            return
        self.step(
            E.NodeJoined(
                now=0.0,
                stimulus_id=self.sid(),
                node=node,
                incarnation=self.incarnation[node] + 1,
                resources={},
                object_store_bytes=1,
            )
        )

    @precondition(lambda self: self.eligible(normal=True, started=False))
    @rule(data=st.data())
    def unschedulable(self, data: st.DataObject) -> None:
        tid = self.pick_inflight(data, normal=True, started=False)
        if tid is None:
            return
        attempt = self.inflight[tid]
        self.end_in_world(tid)
        cause = failure(ErrorKind.TASK_UNSCHEDULABLE, "hard affinity to a dead node")
        self.step(E.TaskUnschedulable(now=0.0, stimulus_id=self.sid(), task=tid, attempt=attempt, failure=cause))

    @precondition(lambda self: self.eligible(normal=False))
    @rule(data=st.data(), restarting=st.booleans())
    def actor_call_aborted(self, data: st.DataObject, restarting: bool) -> None:
        tid = self.pick_inflight(data, normal=False)
        if tid is None:
            return
        attempt = self.inflight[tid]
        actor = self.tasks[tid].spec.actor_id
        assert actor is not None
        self.end_in_world(tid)
        cause = failure(ErrorKind.ACTOR_DIED, "the actor died")
        self.step(
            E.ActorTaskAborted(
                now=0.0, stimulus_id=self.sid(), task=tid, attempt=attempt, actor=actor, actor_restarting=restarting, failure=cause
            )
        )

    @precondition(lambda self: self.superseded)
    @rule(data=st.data())
    def late_report(self, data: st.DataObject) -> None:
        """An attempt the world saw end reports again (late start or result)."""
        if not self.superseded:
            return
        tid, attempt, node, worker = data.draw(st.sampled_from(self.superseded))
        kind = data.draw(st.sampled_from(["started", "finished", "failed"]))
        sid = self.sid()
        if kind == "started":
            self.step(E.TaskStarted(now=0.0, stimulus_id=sid, task=tid, attempt=attempt, node=node, worker=worker))
        elif kind == "finished":
            self.step(E.TaskFinished(now=0.0, stimulus_id=sid, task=tid, attempt=attempt, node=node, worker=worker))
        else:
            self.step(E.TaskFailed(now=0.0, stimulus_id=sid, task=tid, attempt=attempt, node=node, worker=worker))

    @precondition(lambda self: self.old)
    @rule(data=st.data())
    def duplicate(self, data: st.DataObject) -> None:
        """An event delivered before is delivered again: nothing may change."""
        if not self.old:
            return
        event = data.draw(st.sampled_from(self.old))
        before = self.observe()
        out = self.step(type(event)(**{**_fields(event), "stimulus_id": self.sid()}))
        assert all(isinstance(c, C.InterruptTask) for c in out), out
        assert self.observe() == before, f"replaying {event} changed the machine"

    def observe(self) -> dict[TaskID, tuple[object, ...]]:
        tm = self.tm
        return {tid: (tm.state(tid), tm.attempt(tid), tm.pending_reason(tid)) for tid in self.tasks}

    # --- rules: the owner ---------------------------------------------------------------------

    @precondition(lambda self: self.tasks)
    @rule(data=st.data(), force=st.booleans(), any_task=st.integers(0, 4))
    def cancel(self, data: st.DataObject, force: bool, any_task: int) -> None:
        """Mostly a task in flight; sometimes any (cancelling an ended task does nothing)."""
        active = [tid for tid, t in sorted(self.tasks.items()) if t.state in ACTIVE]
        tid = data.draw(st.sampled_from(active if active and any_task else sorted(self.tasks)))
        self.step(E.CancelRequested(now=0.0, stimulus_id=self.sid(), task=tid, force=force))

    @rule(obj=objects)
    def add_ref(self, obj: ObjectID) -> None:
        owner = self.owner_of[obj]
        if owner in self.dead_owners or self.refs[obj] == 0:
            return  # only a holder of a handle can make another
        self.step(E.RefsAdded(now=0.0, stimulus_id=self.sid(), owner=owner, objects=(obj,)))

    @rule(obj=objects)
    def remove_ref(self, obj: ObjectID) -> None:
        owner = self.owner_of[obj]
        if owner in self.dead_owners or self.refs[obj] == 0:
            return
        self.step(E.RefsRemoved(now=0.0, stimulus_id=self.sid(), owner=owner, objects=(obj,)))

    @precondition(lambda self: OWNER_B not in self.dead_owners)
    @rule()
    def owner_b_dies(self) -> None:
        if OWNER_B in self.dead_owners:
            return
        self.step(E.OwnerDied(now=0.0, stimulus_id=self.sid(), owner=OWNER_B))

    @precondition(lambda self: not self.actor_created)
    @rule(args=st.lists(objects, max_size=2))
    def create_async_actor(self, args: list[ObjectID]) -> None:
        if self.actor_created:
            return
        args = [obj for obj in args if self.owner_of[obj] not in self.dead_owners]
        for obj in dict.fromkeys(args):
            if self.refs[obj] == 0:
                self.step(E.RefsAdded(now=0.0, stimulus_id=self.sid(), owner=self.owner_of[obj], objects=(obj,)))
        creation = TaskSpec(
            task_id=ASYNC_CREATION,
            job_id=JOB,
            owner=OWNER_A,
            name="Async.__init__",
            kind=TaskKind.ACTOR_CREATION,
            args=tuple(args),
            actor_id=ASYNC_ACTOR,
        )
        spec = ActorSpec(actor_id=ASYNC_ACTOR, creation=creation, is_async=True, max_concurrency=10)
        self.step(E.ActorCreated(now=0.0, stimulus_id=self.sid(), spec=spec, node=HEAD))

    @precondition(lambda self: self.actor is not None)
    @rule()
    def async_actor_terminates(self) -> None:
        if self.actor is None:
            return
        self.step(E.ActorTerminated(now=0.0, stimulus_id=self.sid(), actor=ASYNC_ACTOR))

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def machine_is_consistent(self) -> None:
        self.tm.check_invariants()

    @invariant()
    def agrees_with_the_model(self) -> None:
        tm = self.tm
        for tid, t in self.tasks.items():
            assert tm.state(tid) is STATE_NAMES[t.state], (tid, tm.state(tid), t.state, tm.story(tid))
            assert tm.attempt(tid) == t.attempt, (tid, tm.attempt(tid), t.attempt)
            assert tm.has_lineage(tid) == (t.state in ACTIVE or (t.state == "F" and not t.released)), tid
            reason = tm.pending_reason(tid) or ""
            if t.state == "S" and t.normal:
                assert reason.endswith(f"scheduled at {t.node}") or f"scheduled at {t.node} " in reason, (tid, reason)
            if t.state == "R":
                assert f"running on {t.worker}" in reason, (tid, reason)
            budget = t.spec.max_retries
            assert budget == -1 or t.attempt <= budget + 1, f"{tid}: {t.attempt} attempts, max_retries {budget}"
        for obj, owner in self.owner_of.items():
            assert tm.refcount(obj) == self.refs[obj] + self.users(obj), (obj, tm.refcount(obj), self.refs[obj])
            assert tm.in_scope(obj) == self.needed(obj), (obj, tm.in_scope(obj))
            if is_put(obj):  # a put's owner is known only while the owner counts it
                assert not tm.owner_dead(obj) or owner in self.dead_owners, obj
            else:
                assert tm.owner_dead(obj) == (owner in self.dead_owners), obj
        in_flight = {tid: state for tid, state, _ in tm.attempts_in_flight()}
        expected = {tid: STATE_NAMES[t.state] for tid, t in self.tasks.items() if t.state in ACTIVE}
        if self.actor is not None and self.actor.state == "W":
            expected[ASYNC_CREATION] = TaskState.WAITING_FOR_ARGS
        assert in_flight == expected, (in_flight, expected)
        for tid, t in self.tasks.items():
            waiting = t.state == "W" and not t.args_ready
            assert tm.missing_arguments(tid) == (t.args if waiting else ()), tid

    @invariant()
    def no_task_is_lost(self) -> None:
        for tid, t in self.tasks.items():
            state = self.tm.state(tid)
            if state in (TaskState.WAITING_FOR_ARGS, TaskState.SCHEDULED, TaskState.RUNNING):
                assert self.tm.pending_reason(tid), f"{tid} in flight without a reason"
            elif state is TaskState.FAILED:
                cause = self.tm.failure(tid)
                assert cause is not None and cause.kind is t.kind, (tid, cause, t.kind)
                assert cause.kind in OWN_FAILURE_KINDS or t.from_argument, cause
            elif state is TaskState.CANCELLED:
                cause = self.tm.failure(tid)
                assert cause is not None and cause.kind in CANCELLED_FAILURE_KINDS, cause
            else:
                assert state is TaskState.FINISHED, (tid, state)

    def teardown(self) -> None:
        # Same events, same commands.
        fresh = TaskManager()
        for event, out in self.log:
            assert fresh.handle(event) == out, f"replay diverged at {event}"
        # Nothing leaks: a value nobody needs was freed (unless its owner died).
        leaked = [
            obj
            for obj in sorted(set(self.value_at) | set(self.failed))
            if obj in self.owner_of and not self.needed(obj) and self.owner_of[obj] not in self.dead_owners
        ]
        assert not leaked, f"values nobody needs were never freed: {leaked}"


def _fields(event: E.Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in event.__dataclass_fields__}


TaskManagerMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_task_manager_against_model = TaskManagerMachine.TestCase
