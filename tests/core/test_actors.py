"""Stories of the actor manager: one behaviour a user would care about per test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import pytest

from detray.core import commands as C
from detray.core import events as E
from detray.core.actors import TRANSITIONS, ActorManager, ActorState
from detray.core.errors import ErrorKind, failure
from detray.core.ids import ActorID, JobID, NodeID, TaskID, WorkerID, job_id, node_id, worker_id
from detray.core.specs import (
    DEFAULT_STRATEGY,
    INFINITE,
    ActorSpec,
    NodeAffinityStrategy,
    SchedulingStrategy,
    TaskKind,
    TaskSpec,
)

N0 = node_id(0)
N1 = node_id(1)
DRIVER = WorkerID("driver-1")
OTHER_DRIVER = WorkerID("driver-2")

Cmd = TypeVar("Cmd", bound=C.Command)


class Story:
    """Drives one ActorManager through events and checks invariants after each."""

    def __init__(self, *nodes: NodeID) -> None:
        self.am = ActorManager()
        self.step = 0
        self.workers = 0
        for node in nodes or (N0, N1):
            self.feed(E.NodeJoined, node=node, incarnation=1, resources={"CPU": 40_000}, object_store_bytes=1)

    def feed(self, kind: type[E.Event], **fields: object) -> list[C.Command]:
        self.step += 1
        stim = f"s{self.step}"
        event = kind(now=float(self.step), stimulus_id=stim, **fields)
        out = self.am.handle(event)
        self.am.check_invariants()
        assert all(c.stimulus_id == stim for c in out), out
        return out

    def new_worker(self, node: NodeID = N0) -> WorkerID:
        self.workers += 1
        return worker_id(node, self.workers)

    # --- actors ---

    def create(
        self,
        label: str = "A",
        *,
        node: NodeID = N0,
        owner: WorkerID = DRIVER,
        ready: bool = True,
        strategy: SchedulingStrategy = DEFAULT_STRATEGY,
        **options: object,
    ) -> tuple[ActorSpec, list[C.Command]]:
        spec = actor_spec(label, owner=owner, strategy=strategy, **options)
        out = self.feed(E.ActorCreated, spec=spec, node=node)
        if ready:
            out += self.feed(E.ActorArgumentsReady, spec=spec)
        return spec, out

    def make_alive(self, spec: ActorSpec, node: NodeID = N0) -> WorkerID:
        """Run the outstanding creation attempt to completion on a fresh worker."""
        attempt = self.am.restarts(spec.actor_id) + 1
        worker = self.new_worker(node)
        task = spec.creation.task_id
        assert self.feed(E.TaskStarted, task=task, attempt=attempt, node=node, worker=worker) == []
        self.finish_creation(spec, attempt, node, worker)
        return worker

    def finish_creation(self, spec: ActorSpec, attempt: int, node: NodeID, worker: WorkerID) -> list[C.Command]:
        return self.feed(E.TaskFinished, task=spec.creation.task_id, attempt=attempt, node=node, worker=worker)

    # --- calls ---

    def call(
        self, spec: ActorSpec, seq: int, *, caller: WorkerID = DRIVER, attempt: int = 1
    ) -> list[C.Command]:
        task = TaskSpec(
            task_id=call_id(spec, caller, seq),
            job_id=_job(),
            owner=caller,
            name="A.method",
            kind=TaskKind.ACTOR_TASK,
            actor_id=spec.actor_id,
            caller_seq=seq,
            max_retries=spec.max_task_retries,
        )
        return self.feed(E.ActorTaskReady, spec=task, attempt=attempt)

    def finish(self, start: C.StartTask) -> list[C.Command]:
        return self.feed(
            E.TaskFinished, task=start.spec.task_id, attempt=start.attempt, node=start.node, worker=start.worker
        )


def _job() -> JobID:
    return job_id(1)


def actor_spec(
    label: str,
    *,
    owner: WorkerID = DRIVER,
    strategy: SchedulingStrategy = DEFAULT_STRATEGY,
    **options: object,
) -> ActorSpec:
    creation = TaskSpec(
        task_id=TaskID(f"create-{label}"),
        job_id=_job(),
        owner=owner,
        name=f"{label}.__init__",
        kind=TaskKind.ACTOR_CREATION,
        actor_id=ActorID(f"A{label}"),
        strategy=strategy,
    )
    return ActorSpec(actor_id=ActorID(f"A{label}"), creation=creation, **options)  # type: ignore[arg-type]


def call_id(spec: ActorSpec, caller: WorkerID, seq: int) -> TaskID:
    return TaskID(f"{spec.actor_id}:{caller}:{seq}")


def only(out: Sequence[C.Command], kind: type[Cmd]) -> list[Cmd]:
    return [c for c in out if isinstance(c, kind)]


def started_seqs(out: Sequence[C.Command]) -> list[int]:
    return [c.spec.caller_seq for c in only(out, C.StartTask)]


# --- creation ------------------------------------------------------------------------------------


def test_actor_is_placed_at_its_creator_node_once_its_arguments_are_ready() -> None:
    s = Story()
    spec, out = s.create(ready=False)
    assert out == []
    assert s.am.state(spec.actor_id) is ActorState.PENDING_CREATION
    out = s.feed(E.ActorArgumentsReady, spec=spec)
    assert out == [C.ScheduleTask(stimulus_id=f"s{s.step}", spec=spec.creation, attempt=1, node=N0)]


def test_actor_becomes_alive_and_runs_queued_calls_in_submission_order() -> None:
    s = Story()
    spec, _ = s.create()
    for seq in (1, 2, 3):
        assert s.call(spec, seq) == []
    worker = s.new_worker()
    s.feed(E.TaskStarted, task=spec.creation.task_id, attempt=1, node=N0, worker=worker)
    out = s.finish_creation(spec, 1, N0, worker)
    assert s.am.state(spec.actor_id) is ActorState.ALIVE
    assert (s.am.worker_of(spec.actor_id), s.am.node_of(spec.actor_id)) == (worker, N0)
    # A synchronous actor runs one call at a time, in the caller's order.
    starts = only(out, C.StartTask)
    assert [(c.spec.caller_seq, c.worker, c.node) for c in starts] == [(1, worker, N0)]
    order = started_seqs(out)
    while starts:
        out = s.finish(starts[0])
        starts = only(out, C.StartTask)
        order += started_seqs(out)
    assert order == [1, 2, 3]


def test_arguments_ready_that_overtakes_actor_created_is_kept_until_then() -> None:
    s = Story()
    early = actor_spec("early")
    assert s.feed(E.ActorArgumentsReady, spec=early) == []
    out = s.feed(E.ActorCreated, spec=early, node=N1)
    assert only(out, C.ScheduleTask) == [
        C.ScheduleTask(stimulus_id=f"s{s.step}", spec=early.creation, attempt=1, node=N1)
    ]


def test_calls_submitted_before_creation_finishes_wait_for_it() -> None:
    s = Story()
    spec, _ = s.create()
    worker = s.new_worker()
    s.feed(E.TaskStarted, task=spec.creation.task_id, attempt=1, node=N0, worker=worker)
    assert s.call(spec, 1) == []
    assert s.am.queued_calls(spec.actor_id) == ((call_id(spec, DRIVER, 1), 1),)
    out = s.finish_creation(spec, 1, N0, worker)
    assert started_seqs(out) == [1]


def test_calls_arriving_out_of_order_start_in_caller_order() -> None:
    s = Story()
    spec, _ = s.create()
    s.call(spec, 2)
    s.call(spec, 1)
    out = s.feed(E.TaskFinished, task=spec.creation.task_id, attempt=1, node=N0, worker=s.new_worker())
    assert started_seqs(out) == [1]


def test_two_callers_keep_their_own_order_and_take_turns() -> None:
    s = Story()
    spec, _ = s.create()
    for seq in (1, 2):
        s.call(spec, seq, caller=DRIVER)
        s.call(spec, seq, caller=OTHER_DRIVER)
    out = s.feed(E.TaskFinished, task=spec.creation.task_id, attempt=1, node=N0, worker=s.new_worker())
    seen = []
    starts = only(out, C.StartTask)
    while starts:
        seen.append((starts[0].spec.owner, starts[0].spec.caller_seq))
        starts = only(s.finish(starts[0]), C.StartTask)
    assert seen == [(DRIVER, 1), (OTHER_DRIVER, 1), (DRIVER, 2), (OTHER_DRIVER, 2)]


def test_constructor_error_kills_the_actor_without_restart() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=3)
    s.call(spec, 1)
    worker = s.new_worker()
    s.feed(E.TaskStarted, task=spec.creation.task_id, attempt=1, node=N0, worker=worker)
    out = s.feed(
        E.TaskFailed,
        task=spec.creation.task_id,
        attempt=1,
        node=N0,
        worker=worker,
        error_types=("builtins.ZeroDivisionError", "builtins.ArithmeticError"),
    )
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    assert s.am.restarts(spec.actor_id) == 0
    cause = s.am.death_cause(spec.actor_id)
    assert cause is not None and cause.kind is ErrorKind.ACTOR_DIED
    assert cause.detail("error_type") == "builtins.ZeroDivisionError"
    assert only(out, C.KillWorker) == [C.KillWorker(stimulus_id=f"s{s.step}", worker=worker, node=N0)]
    [abort] = only(out, C.AbortActorTask)
    assert (abort.actor_restarting, abort.failure) == (False, cause)
    assert only(out, C.ScheduleTask) == []


@pytest.mark.parametrize("kind", [ErrorKind.TASK_UNSCHEDULABLE, ErrorKind.ACTOR_UNSCHEDULABLE])
def test_unschedulable_creation_kills_the_actor_as_unschedulable(kind: ErrorKind) -> None:
    s = Story()
    spec, _ = s.create(max_restarts=2, strategy=NodeAffinityStrategy(node=N1))
    reason = failure(kind, "node-00001 is dead")
    out = s.feed(E.TaskUnschedulable, task=spec.creation.task_id, attempt=1, failure=reason)
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    cause = s.am.death_cause(spec.actor_id)
    assert cause is not None and cause.kind is ErrorKind.ACTOR_UNSCHEDULABLE
    assert "node-00001 is dead" in cause.message
    # Its scheduler already dropped the attempt: nothing to withdraw.
    assert out == [C.ReportActorDead(stimulus_id=f"s{s.step}", actor=spec.actor_id, failure=cause)]


def test_a_failed_constructor_argument_kills_the_actor_with_that_failure() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=2)
    reason = failure(ErrorKind.TASK_ERROR, "upstream task raised ValueError")
    s.feed(E.TaskUnschedulable, task=spec.creation.task_id, attempt=1, failure=reason)
    cause = s.am.death_cause(spec.actor_id)
    assert cause is not None and cause.kind is ErrorKind.ACTOR_DIED
    assert cause.detail("argument_error") == "task_error"


# --- restarts and death -----------------------------------------------------------------------------


def test_worker_death_with_a_restart_left_restarts_and_aborts_the_running_call_as_restarting() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1, max_task_retries=1)
    worker = s.make_alive(spec)
    [running] = only(s.call(spec, 1), C.StartTask)
    assert s.call(spec, 2) == []
    out = s.feed(E.WorkerDied, worker=worker, node=N0)
    assert s.am.state(spec.actor_id) is ActorState.RESTARTING
    assert s.am.restarts(spec.actor_id) == 1
    [abort] = only(out, C.AbortActorTask)
    assert (abort.task, abort.attempt, abort.actor_restarting) == (running.spec.task_id, 1, True)
    assert abort.failure.kind is ErrorKind.ACTOR_DIED
    # The creation task is placed again as attempt 2; the queued call waits for it.
    assert only(out, C.ScheduleTask) == [
        C.ScheduleTask(stimulus_id=f"s{s.step}", spec=spec.creation, attempt=2, node=N0)
    ]
    assert only(out, C.KillWorker) == []  # it is already dead
    assert s.am.queued_calls(spec.actor_id) == ((call_id(spec, DRIVER, 2), 1),)
    # The retried call and the queued one run on the new incarnation.
    s.call(spec, 1, attempt=2)
    new_worker = s.new_worker(N1)
    s.feed(E.TaskStarted, task=spec.creation.task_id, attempt=2, node=N1, worker=new_worker)
    out = s.finish_creation(spec, 2, N1, new_worker)
    assert s.am.state(spec.actor_id) is ActorState.ALIVE
    assert [(c.spec.caller_seq, c.attempt, c.worker) for c in only(out, C.StartTask)] == [(1, 2, new_worker)]


def test_second_death_without_restarts_left_kills_the_actor_and_fails_every_call() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1)
    s.feed(E.WorkerDied, worker=s.make_alive(spec), node=N0)
    worker = s.make_alive(spec)
    [running] = only(s.call(spec, 1), C.StartTask)
    s.call(spec, 2)
    out = s.feed(E.WorkerDied, worker=worker, node=N0)
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    cause = s.am.death_cause(spec.actor_id)
    assert cause is not None and cause.kind is ErrorKind.ACTOR_DIED and cause.detail("cause") == "worker_died"
    aborts = only(out, C.AbortActorTask)
    assert [(a.task, a.actor_restarting, a.failure) for a in aborts] == [
        (running.spec.task_id, False, cause),
        (call_id(spec, DRIVER, 2), False, cause),
    ]
    assert only(out, C.ScheduleTask) == []
    assert only(out, C.ReportActorDead) == [
        C.ReportActorDead(stimulus_id=f"s{s.step}", actor=spec.actor_id, failure=cause)
    ]
    # A call made after death fails at once with the death cause.
    [late] = s.call(spec, 3)
    assert isinstance(late, C.AbortActorTask) and not late.actor_restarting and late.failure == cause


def test_infinite_restarts_never_run_out() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=INFINITE)
    for _ in range(25):
        s.feed(E.WorkerDied, worker=s.make_alive(spec), node=N0)
    assert s.am.state(spec.actor_id) is ActorState.RESTARTING
    assert s.am.restarts(spec.actor_id) == 25
    out = s.feed(E.WorkerDied, worker=s.make_alive(spec), node=N0)
    assert only(out, C.ReportActorDead) == []


def test_kill_with_no_restart_kills_for_good_even_with_restarts_left() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=5)
    worker = s.make_alive(spec)
    [running] = only(s.call(spec, 1), C.StartTask)
    out = s.feed(E.ActorKillRequested, actor=spec.actor_id, no_restart=True)
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    assert only(out, C.KillWorker) == [C.KillWorker(stimulus_id=f"s{s.step}", worker=worker, node=N0)]
    [abort] = only(out, C.AbortActorTask)
    assert abort.task == running.spec.task_id and not abort.actor_restarting
    assert only(out, C.ScheduleTask) == []
    # The worker's death, reported afterwards, is old news.
    assert s.feed(E.WorkerDied, worker=worker, node=N0) == []
    assert s.am.stats["stale_worker_died"] == 1


def test_kill_allowing_restart_restarts_while_budget_lasts() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1)
    worker = s.make_alive(spec)
    out = s.feed(E.ActorKillRequested, actor=spec.actor_id, no_restart=False)
    assert s.am.state(spec.actor_id) is ActorState.RESTARTING
    assert [type(c) for c in out] == [C.KillWorker, C.ScheduleTask]
    s.make_alive(spec)
    s.feed(E.ActorKillRequested, actor=spec.actor_id, no_restart=False)
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    assert worker != s.am.worker_of(spec.actor_id)


def exit_from(s: Story, start: C.StartTask) -> list[C.Command]:
    """The call ``start`` called ``exit_actor()`` on its worker."""
    assert start.spec.actor_id is not None
    return s.feed(
        E.ActorKillRequested,
        actor=start.spec.actor_id,
        exit_call=start.spec.task_id,
        exit_attempt=start.attempt,
        worker=start.worker,
    )


def test_exit_actor_ends_the_actor_for_good_and_fails_the_calling_and_queued_calls() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=2, max_task_retries=2)
    worker = s.make_alive(spec)
    [running] = only(s.call(spec, 1), C.StartTask)
    s.call(spec, 2)
    out = exit_from(s, running)
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    assert s.am.restarts(spec.actor_id) == 0
    cause = s.am.death_cause(spec.actor_id)
    assert cause is not None and cause.kind is ErrorKind.ACTOR_DIED
    assert cause.detail("cause") == "intended_exit" and "exit_actor()" in cause.message
    # The calling call first, then the queued one: both fail for good with the exit as cause.
    assert [(a.task, a.actor_restarting, a.failure) for a in only(out, C.AbortActorTask)] == [
        (running.spec.task_id, False, cause),
        (call_id(spec, DRIVER, 2), False, cause),
    ]
    assert only(out, C.KillWorker) == [C.KillWorker(stimulus_id=f"s{s.step}", worker=worker, node=N0)]
    assert only(out, C.ScheduleTask) == []
    assert only(out, C.ReportActorDead) == [
        C.ReportActorDead(stimulus_id=f"s{s.step}", actor=spec.actor_id, failure=cause)
    ]
    [late] = s.call(spec, 3)
    assert isinstance(late, C.AbortActorTask) and late.failure == cause
    assert s.feed(E.WorkerDied, worker=worker, node=N0) == []


def test_an_exiting_concurrent_actor_lets_running_calls_finish_then_dies() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1, max_concurrency=3)
    worker = s.make_alive(spec)
    starts: list[C.StartTask] = []
    for seq in range(1, 5):
        starts += only(s.call(spec, seq), C.StartTask)
    assert [c.spec.caller_seq for c in starts] == [1, 2, 3]
    out = exit_from(s, starts[1])
    # Still alive while calls 1 and 3 run: nothing new starts, the queued call 4 fails.
    assert s.am.state(spec.actor_id) is ActorState.ALIVE
    assert [a.task for a in only(out, C.AbortActorTask)] == [starts[1].spec.task_id, call_id(spec, DRIVER, 4)]
    assert only(out, C.KillWorker) == [] and only(out, C.StartTask) == []
    [refused] = s.call(spec, 5)
    assert isinstance(refused, C.AbortActorTask) and not refused.actor_restarting
    assert refused.failure.detail("cause") == "intended_exit"
    assert s.finish(starts[0]) == []
    out = s.finish(starts[2])
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    assert only(out, C.KillWorker) == [C.KillWorker(stimulus_id=f"s{s.step}", worker=worker, node=N0)]
    assert only(out, C.ScheduleTask) == [] and only(out, C.AbortActorTask) == []


def test_a_death_while_exiting_is_not_restarted() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=3, max_concurrency=2)
    worker = s.make_alive(spec)
    first, second = only(s.call(spec, 1) + s.call(spec, 2), C.StartTask)
    exit_from(s, first)
    out = s.feed(E.WorkerDied, worker=worker, node=N0)
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    assert only(out, C.ScheduleTask) == []
    [abort] = only(out, C.AbortActorTask)
    assert abort.task == second.spec.task_id and not abort.actor_restarting


def test_a_second_exit_while_exiting_fails_that_call_too() -> None:
    s = Story()
    spec, _ = s.create(is_async=True, max_concurrency=3)
    s.make_alive(spec)
    starts = only(s.call(spec, 1) + s.call(spec, 2) + s.call(spec, 3), C.StartTask)
    exit_from(s, starts[0])
    assert s.am.state(spec.actor_id) is ActorState.ALIVE and len(s.am.running_calls(spec.actor_id)) == 2
    out = exit_from(s, starts[1])
    [abort] = only(out, C.AbortActorTask)
    assert abort.task == starts[1].spec.task_id and abort.failure.detail("cause") == "intended_exit"
    out = s.finish(starts[2])
    assert s.am.state(spec.actor_id) is ActorState.DEAD and len(only(out, C.KillWorker)) == 1


def test_an_exit_request_from_an_old_attempt_or_another_worker_is_dropped() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1)
    old = s.make_alive(spec)
    [running] = only(s.call(spec, 1), C.StartTask)
    s.feed(E.WorkerDied, worker=old, node=N0)
    s.make_alive(spec)
    assert exit_from(s, running) == []  # its worker is gone: the actor restarted meanwhile
    [retry] = only(s.call(spec, 1, attempt=2), C.StartTask)
    wrong = C.StartTask(stimulus_id="x", spec=retry.spec, attempt=1, node=N0, worker=retry.worker)
    assert exit_from(s, wrong) == []
    assert s.am.stats["stale_exit_requested"] == 2
    assert s.am.state(spec.actor_id) is ActorState.ALIVE


def test_node_death_kills_or_restarts_the_actors_on_it() -> None:
    s = Story()
    restartable, _ = s.create("R", max_restarts=1)
    mortal, _ = s.create("M")
    s.make_alive(restartable)
    s.make_alive(mortal)
    assert s.feed(E.NodeDied, node=N0, incarnation=0) == []  # an older incarnation: stale
    assert s.am.stats["stale_node_died"] == 1
    out = s.feed(E.NodeDied, node=N0, incarnation=1)
    assert s.am.state(mortal.actor_id) is ActorState.DEAD
    assert s.am.state(restartable.actor_id) is ActorState.RESTARTING
    # Its creator's node is dead: the creation goes to the lowest live node.
    [again] = only(out, C.ScheduleTask)
    assert (again.spec, again.attempt, again.node) == (restartable.creation, 2, N1)


def test_a_node_rejoining_with_a_new_incarnation_ends_actors_of_the_old_one() -> None:
    s = Story()
    spec, _ = s.create()
    s.make_alive(spec)
    s.feed(E.NodeJoined, node=N0, incarnation=2, resources={}, object_store_bytes=0)
    assert s.am.state(spec.actor_id) is ActorState.DEAD
    assert s.feed(E.NodeDied, node=N0, incarnation=1) == []
    assert s.am.stats["stale_node_died"] == 1


def test_losing_the_creation_while_pending_consumes_a_restart() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1)
    s.feed(
        E.TaskArrived,
        spec=spec.creation,
        attempt=1,
        node=N1,
    )
    out = s.feed(E.NodeDied, node=N1, incarnation=1)
    assert s.am.state(spec.actor_id) is ActorState.RESTARTING
    assert [(c.attempt, c.node) for c in only(out, C.ScheduleTask)] == [(2, N0)]
    worker = s.new_worker(N0)
    s.feed(E.TaskStarted, task=spec.creation.task_id, attempt=2, node=N0, worker=worker)
    s.feed(E.WorkerDied, worker=worker, node=N0)
    assert s.am.state(spec.actor_id) is ActorState.DEAD


def test_restart_waits_for_a_node_when_none_is_alive() -> None:
    s = Story(N0)
    spec, _ = s.create(max_restarts=1)
    s.make_alive(spec)
    assert only(s.feed(E.NodeDied, node=N0, incarnation=1), C.ScheduleTask) == []
    assert s.am.state(spec.actor_id) is ActorState.RESTARTING
    out = s.feed(E.NodeJoined, node=N1, incarnation=1, resources={}, object_store_bytes=0)
    assert [(c.attempt, c.node) for c in only(out, C.ScheduleTask)] == [(2, N1)]


def test_killing_a_pending_actor_withdraws_its_creation_and_kills_a_late_start() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1)
    out = s.feed(E.ActorKillRequested, actor=spec.actor_id, no_restart=False)
    assert only(out, C.WithdrawTask) == [
        C.WithdrawTask(stimulus_id=f"s{s.step}", task=spec.creation.task_id, attempt=1, node=N0)
    ]
    assert [c.attempt for c in only(out, C.ScheduleTask)] == [2]
    late = s.new_worker()
    out = s.feed(E.TaskStarted, task=spec.creation.task_id, attempt=1, node=N0, worker=late)
    assert out == [C.KillWorker(stimulus_id=f"s{s.step}", worker=late, node=N0)]
    assert s.am.stats["stale_creation_started"] == 1
    assert s.am.state(spec.actor_id) is ActorState.RESTARTING


# --- stale reports ----------------------------------------------------------------------------------


def test_a_finish_from_an_old_incarnation_is_dropped_and_counted() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1)
    old = s.make_alive(spec)
    [running] = only(s.call(spec, 1), C.StartTask)
    s.feed(E.WorkerDied, worker=old, node=N0)
    new = s.make_alive(spec)
    [retry] = only(s.call(spec, 1, attempt=2), C.StartTask)
    assert retry.worker == new
    assert s.finish(running) == []
    assert s.am.stats["stale_task_finished"] == 1
    assert s.am.running_calls(spec.actor_id) == ((running.spec.task_id, 2),)
    # A report naming the right attempt but the old worker is stale too.
    s.feed(E.TaskFinished, task=retry.spec.task_id, attempt=2, node=N0, worker=old)
    assert s.am.stats["stale_task_finished"] == 2
    assert s.finish(retry) == []
    assert s.am.running_calls(spec.actor_id) == ()


def test_a_withdrawn_call_never_starts() -> None:
    s = Story()
    spec, _ = s.create()
    s.call(spec, 1)
    s.call(spec, 2)
    s.feed(E.TaskWithdrawn, task=call_id(spec, DRIVER, 1), attempt=1, node=N0)
    out = s.feed(E.TaskFinished, task=spec.creation.task_id, attempt=1, node=N0, worker=s.new_worker())
    assert started_seqs(out) == [2]


def test_reports_about_normal_tasks_are_ignored() -> None:
    s = Story()
    assert s.feed(E.TaskFinished, task=TaskID("t"), attempt=1, node=N0, worker=s.new_worker()) == []
    assert s.feed(E.WorkerDied, worker=s.new_worker(), node=N0) == []
    assert s.am.stats["ignored_task_finished"] == 1 and s.am.stats["ignored_worker_died"] == 1


# --- concurrency -----------------------------------------------------------------------------------


def test_async_actor_with_max_concurrency_three_runs_three_calls_at_once() -> None:
    s = Story()
    spec, _ = s.create(is_async=True, max_concurrency=3)
    s.make_alive(spec)
    starts: list[C.StartTask] = []
    for seq in range(1, 6):
        starts += only(s.call(spec, seq), C.StartTask)
    assert [c.spec.caller_seq for c in starts] == [1, 2, 3]
    assert len(s.am.running_calls(spec.actor_id)) == 3
    out = s.finish(starts[1])
    assert started_seqs(out) == [4]
    assert len(s.am.running_calls(spec.actor_id)) == 3


# --- names and owners -------------------------------------------------------------------------------


def test_named_actor_is_found_by_name_and_frees_it_when_dead() -> None:
    s = Story()
    spec, _ = s.create("C", name="counter", namespace="ns")
    assert s.am.lookup("counter", "ns") == spec.actor_id
    assert s.am.lookup("counter", "other") is None
    s.feed(E.ActorKillRequested, actor=spec.actor_id)
    assert s.am.lookup("counter", "ns") is None
    again, _ = s.create("D", name="counter", namespace="ns")
    assert s.am.lookup("counter", "ns") == again.actor_id


def test_a_duplicate_live_name_is_refused_with_a_failure_and_a_warning() -> None:
    s = Story()
    first, _ = s.create("C", name="counter")
    second, out = s.create("D", name="counter")
    assert s.am.lookup("counter") == first.actor_id
    assert s.am.state(second.actor_id) is ActorState.DEAD
    [warn] = only(out, C.Warn)
    assert warn.code == "actor_name_taken" and warn.subject == second.actor_id
    cause = s.am.death_cause(second.actor_id)
    assert cause is not None and cause.detail("holder") == first.actor_id
    assert only(out, C.ScheduleTask) == []


def test_detached_actor_survives_its_owner_and_a_normal_one_dies_with_it() -> None:
    s = Story()
    normal, _ = s.create("N")
    detached, _ = s.create("D", detached=True, name="service")
    worker = s.make_alive(normal)
    s.make_alive(detached)
    out = s.feed(E.OwnerDied, owner=DRIVER)
    assert s.am.state(normal.actor_id) is ActorState.DEAD
    assert s.am.state(detached.actor_id) is ActorState.ALIVE
    assert s.am.lookup("service") == detached.actor_id
    assert only(out, C.KillWorker) == [C.KillWorker(stimulus_id=f"s{s.step}", worker=worker, node=N0)]
    cause = s.am.death_cause(normal.actor_id)
    assert cause is not None and cause.detail("cause") == "owner_died"


def test_owner_death_is_final_even_with_restarts_left() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=INFINITE, owner=OTHER_DRIVER)
    s.feed(E.OwnerDied, owner=OTHER_DRIVER)
    assert s.am.state(spec.actor_id) is ActorState.DEAD


# --- records -------------------------------------------------------------------------------------


def test_story_tells_the_actor_lifecycle() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1)
    s.feed(E.WorkerDied, worker=s.make_alive(spec), node=N0)
    text = "\n".join(s.am.story(spec.actor_id))
    for needle in ("registered", "creation attempt 1 scheduled", "alive on", "restart 1", "attempt 2 scheduled"):
        assert needle in text


def test_story_tells_a_calls_history() -> None:
    s = Story()
    spec, _ = s.create(max_restarts=1)
    worker = s.make_alive(spec)
    s.call(spec, 1)
    s.feed(E.WorkerDied, worker=worker, node=N0)
    lines = s.am.story(call_id(spec, DRIVER, 1))
    assert [line.split("] ", 1)[1] for line in lines] == [
        f"attempt 1 queued at {spec.actor_id} (ALIVE)",
        f"attempt 1 started on {worker}",
        "attempt 1 aborted (actor_restarting=True)",
    ]


def test_dead_actors_are_forgotten_beyond_the_bound_and_calls_to_them_still_fail() -> None:
    s = Story()
    s.am = ActorManager(dead_actors_max=2)
    s.feed(E.NodeJoined, node=N0, incarnation=1, resources={}, object_store_bytes=0)
    specs = [s.create(str(i))[0] for i in range(3)]
    for spec in specs:
        s.feed(E.ActorKillRequested, actor=spec.actor_id)
    assert s.am.state(specs[0].actor_id) is None and s.am.state(specs[2].actor_id) is ActorState.DEAD
    [abort] = s.call(specs[0], 1)
    assert isinstance(abort, C.AbortActorTask) and abort.failure.kind is ErrorKind.ACTOR_DIED


def test_transition_table_reaches_every_state_and_dead_is_final() -> None:
    targets = {b for _, b in TRANSITIONS}
    assert targets | {ActorState.PENDING_CREATION} == set(ActorState)
    assert not [a for a, _ in TRANSITIONS if a is ActorState.DEAD]


def test_invalid_specs_are_refused_before_any_change() -> None:
    s = Story()
    with pytest.raises(ValueError):
        s.create(max_concurrency=0)
    assert s.am.actor_ids() == ()


def test_same_events_give_same_commands() -> None:
    def run() -> list[C.Command]:
        s = Story()
        spec, out = s.create(max_restarts=1, max_concurrency=2)
        for seq in range(4):
            out += s.call(spec, seq)
            out += s.call(spec, seq, caller=OTHER_DRIVER)
        out += s.feed(E.TaskFinished, task=spec.creation.task_id, attempt=1, node=N0, worker=worker_id(N0, 9))
        out += s.feed(E.WorkerDied, worker=worker_id(N0, 9), node=N0)
        return out

    assert run() == run()



def test_a_creation_forwarded_to_a_node_that_died_meanwhile_is_placed_again() -> None:
    # Regression (found by the simulator): the late arrival at the dead node was dropped
    # as stale, and the actor stayed RESTARTING forever with its creation nowhere.
    story = Story(N0, N1)
    spec, out = story.create(max_restarts=1)
    first = [c for c in out if isinstance(c, C.ScheduleTask)][0]
    assert first.node == N0
    story.feed(E.NodeDied, node=N1, incarnation=1)
    out = story.feed(E.TaskArrived, spec=spec.creation, attempt=1, node=N1, hops=1)
    again = [c for c in out if isinstance(c, C.ScheduleTask)]
    assert [(c.node, c.attempt) for c in again] == [(N0, 2)]
    assert story.am.state(spec.actor_id) is ActorState.RESTARTING
