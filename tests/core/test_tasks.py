"""Stories of the task manager: one behaviour a user would care about per test."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest

from detray.core import commands as C
from detray.core import events as E
from detray.core.errors import ErrorKind, Failure, InvalidTransition, failure
from detray.core.ids import (
    ActorID,
    NodeID,
    ObjectID,
    TaskID,
    WorkerID,
    actor_id,
    driver_task_id,
    job_id,
    node_id,
    put_object_id,
    return_object_id,
    task_id,
    worker_id,
)
from detray.core.specs import ActorSpec, TaskKind, TaskSpec
from detray.core.tasks import TRANSITIONS, TaskManager, TaskState

JOB = job_id(1)
DRIVER_TASK = driver_task_id(JOB)
HEAD = node_id(0)
N1 = node_id(1)
N2 = node_id(2)
OWNER = worker_id(HEAD, 0)
OTHER_OWNER = worker_id(N2, 7)
W1 = worker_id(N1, 1)
W2 = worker_id(N1, 2)
W3 = worker_id(N2, 3)


class Story:
    """A task manager plus a tiny driver: events in, commands out, invariants after each."""

    def __init__(self) -> None:
        self.tm = TaskManager()
        self._counter = itertools.count(1)
        self._sids = itertools.count(1)

    def __call__(self, event_type: type[E.Event], **fields: object) -> list[C.Command]:
        sid = f"s{next(self._sids)}"
        event = event_type(now=0.0, stimulus_id=sid, **fields)
        out = self.tm.handle(event)
        assert all(command.stimulus_id == sid for command in out), out
        self.tm.check_invariants()
        return out

    def spec(
        self,
        *,
        args: Sequence[ObjectID] = (),
        returns: int = 1,
        owner: WorkerID = OWNER,
        kind: TaskKind = TaskKind.NORMAL,
        actor: ActorID | None = None,
        seq: int = 0,
        **options: object,
    ) -> TaskSpec:
        tid = task_id(JOB, DRIVER_TASK, next(self._counter))
        return TaskSpec(
            task_id=tid,
            job_id=JOB,
            owner=owner,
            name=f"f{tid[-4:]}",
            kind=kind,
            args=tuple(args),
            return_ids=tuple(return_object_id(tid, i) for i in range(1, returns + 1)),
            actor_id=actor,
            caller_seq=seq,
            **options,  # type: ignore[arg-type]
        )

    def submit(self, spec: TaskSpec, *, node: NodeID = HEAD, refs: bool = True) -> list[C.Command]:
        """Submit as the API does: the owner counts its handles first."""
        if refs:
            self(E.RefsAdded, owner=spec.owner, objects=spec.return_ids)
        return self(E.TaskSubmitted, spec=spec, node=node)

    def ready(self, spec: TaskSpec, failed: tuple[tuple[ObjectID, Failure], ...] = ()) -> list[C.Command]:
        failed_ids = {obj for obj, _ in failed}
        ready = tuple(obj for obj in spec.args if obj not in failed_ids)
        return self(E.ArgumentsReady, waiter=f"task:{spec.task_id}", ready=ready, failed=failed)

    def start(self, spec: TaskSpec, attempt: int = 1, worker: WorkerID = W1) -> list[C.Command]:
        node = NodeID(worker.partition("/")[0])
        return self(E.TaskStarted, task=spec.task_id, attempt=attempt, node=node, worker=worker)

    def finish(self, spec: TaskSpec, attempt: int = 1, worker: WorkerID = W1) -> list[C.Command]:
        node = NodeID(worker.partition("/")[0])
        sizes = tuple((obj, 8) for obj in spec.return_ids)
        return self(
            E.TaskFinished, task=spec.task_id, attempt=attempt, node=node, worker=worker, return_sizes=sizes
        )

    def raise_(
        self, spec: TaskSpec, attempt: int = 1, worker: WorkerID = W1, types: tuple[str, ...] = ("builtins.ValueError",)
    ) -> list[C.Command]:
        node = NodeID(worker.partition("/")[0])
        sizes = tuple((obj, 8) for obj in spec.return_ids)
        return self(
            E.TaskFailed,
            task=spec.task_id,
            attempt=attempt,
            node=node,
            worker=worker,
            error_types=types + ("builtins.Exception", "builtins.BaseException"),
            return_sizes=sizes,
        )

    def run(self, spec: TaskSpec, worker: WorkerID = W1) -> None:
        """Submit with no args and finish attempt 1."""
        self.submit(spec)
        self.start(spec, worker=worker)
        self.finish(spec, worker=worker)


def of(commands: list[C.Command], kind: type[C.Command]) -> list[C.Command]:
    return [c for c in commands if isinstance(c, kind)]


def fails(commands: list[C.Command]) -> dict[ObjectID, ErrorKind]:
    return {c.obj: c.failure.kind for c in commands if isinstance(c, C.FailObject)}


def freed(commands: list[C.Command]) -> list[ObjectID]:
    return [c.obj for c in commands if isinstance(c, C.FreeObject)]


def scheduled(commands: list[C.Command]) -> list[tuple[TaskID, int]]:
    return [(c.spec.task_id, c.attempt) for c in commands if isinstance(c, (C.ScheduleTask, C.SubmitActorTask))]


@pytest.fixture
def s() -> Story:
    return Story()


# --- arguments and scheduling -------------------------------------------------------------


def test_task_without_arguments_is_scheduled_at_its_submitter_node(s: Story) -> None:
    spec = s.spec()
    out = s.submit(spec, node=HEAD)
    assert out == [C.ScheduleTask(stimulus_id=out[0].stimulus_id, spec=spec, attempt=1, node=HEAD)]
    assert s.tm.state(spec.task_id) is TaskState.SCHEDULED


def test_task_runs_only_once_its_arguments_exist(s: Story) -> None:
    upstream = s.spec()
    s.submit(upstream)
    spec = s.spec(args=upstream.return_ids)
    out = s.submit(spec)
    assert of(out, C.RequestObjects) == [
        C.RequestObjects(
            stimulus_id=out[0].stimulus_id, waiter=f"task:{spec.task_id}", node=HEAD, objects=upstream.return_ids
        )
    ]
    assert scheduled(out) == []
    assert s.tm.state(spec.task_id) is TaskState.WAITING_FOR_ARGS
    assert "waiting for arguments" in (s.tm.pending_reason(spec.task_id) or "")
    assert scheduled(s.ready(spec)) == [(spec.task_id, 1)]
    assert s.tm.state(spec.task_id) is TaskState.SCHEDULED


def test_failed_argument_fails_the_dependent_with_that_failure(s: Story) -> None:
    upstream = s.spec()
    s.submit(upstream)
    spec = s.spec(args=upstream.return_ids, returns=2)
    s.submit(spec)
    cause = failure(ErrorKind.WORKER_CRASHED, "upstream crashed")
    out = s.ready(spec, failed=((upstream.return_ids[0], cause),))
    assert scheduled(out) == []
    assert [c.failure for c in of(out, C.FailObject)] == [cause, cause]
    assert fails(out) == {obj: ErrorKind.WORKER_CRASHED for obj in spec.return_ids}
    assert s.tm.state(spec.task_id) is TaskState.FAILED
    assert s.tm.failure(spec.task_id) == cause


def test_task_moves_from_scheduled_to_running_to_finished(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    assert s.start(spec) == []
    assert s.tm.state(spec.task_id) is TaskState.RUNNING
    assert "running on" in (s.tm.pending_reason(spec.task_id) or "")
    assert s.finish(spec) == []
    assert s.tm.state(spec.task_id) is TaskState.FINISHED
    assert s.tm.pending_reason(spec.task_id) is None


# --- retries ------------------------------------------------------------------------------


def test_worker_death_retries_with_attempt_2_then_fails_worker_crashed(s: Story) -> None:
    spec = s.spec(max_retries=1)
    s.submit(spec)
    s.start(spec, worker=W1)
    out = s(E.WorkerDied, worker=W1, node=N1)
    assert scheduled(out) == [(spec.task_id, 2)]
    assert s.tm.attempt(spec.task_id) == 2
    s.start(spec, attempt=2, worker=W2)
    out = s(E.WorkerDied, worker=W2, node=N1)
    assert scheduled(out) == []
    assert fails(out) == {spec.return_ids[0]: ErrorKind.WORKER_CRASHED}
    assert s.tm.state(spec.task_id) is TaskState.FAILED
    assert s.tm.stats["retries_worker_crashed"] == 1


def test_default_budget_is_three_retries(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    for attempt, worker in zip(range(1, 5), (W1, W2, W3, W1)):
        s.start(spec, attempt=attempt, worker=worker)
        out = s(E.WorkerDied, worker=worker, node=NodeID(worker.partition("/")[0]))
    assert s.tm.attempt(spec.task_id) == 4
    assert fails(out) == {spec.return_ids[0]: ErrorKind.WORKER_CRASHED}


def test_infinite_retries_never_give_up(s: Story) -> None:
    spec = s.spec(max_retries=-1)
    s.submit(spec)
    for attempt in range(1, 30):
        worker = worker_id(N1, attempt)
        s.start(spec, attempt=attempt, worker=worker)
        assert scheduled(s(E.WorkerDied, worker=worker, node=N1)) == [(spec.task_id, attempt + 1)]


def test_node_death_retries_running_task_then_fails_node_died(s: Story) -> None:
    spec = s.spec(max_retries=1)
    s.submit(spec)
    s.start(spec, worker=W1)
    out = s(E.NodeDied, node=N1, incarnation=0)
    assert scheduled(out) == [(spec.task_id, 2)]
    s(E.NodeJoined, node=N1, incarnation=1, resources={}, object_store_bytes=1)
    s(E.TaskArrived, spec=spec, attempt=2, node=N2)
    out = s(E.NodeDied, node=N2, incarnation=0)
    assert fails(out) == {spec.return_ids[0]: ErrorKind.NODE_DIED}
    assert s.tm.failure(spec.task_id) is not None
    assert s.tm.failure(spec.task_id).kind is ErrorKind.NODE_DIED  # type: ignore[union-attr]


def test_duplicate_node_death_does_not_spend_another_retry(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    s.start(spec, worker=W1)
    s(E.NodeDied, node=N1, incarnation=0)
    assert s(E.NodeDied, node=N1, incarnation=0) == []
    assert s.tm.attempt(spec.task_id) == 2
    assert s.tm.stats["stale_node_died"] == 1


def test_newer_incarnation_joining_proves_the_old_one_died(s: Story) -> None:
    spec = s.spec()
    s(E.NodeJoined, node=N1, incarnation=0, resources={}, object_store_bytes=1)
    s.submit(spec)
    s.start(spec, worker=W1)
    out = s(E.NodeJoined, node=N1, incarnation=1, resources={}, object_store_bytes=1)
    assert scheduled(out) == [(spec.task_id, 2)]


def test_application_error_without_retry_exceptions_fails_at_once(s: Story) -> None:
    spec = s.spec(returns=2)
    s.submit(spec)
    s.start(spec)
    out = s.raise_(spec)
    assert scheduled(out) == []
    # The driver stored the error as the return values: the directory has them already.
    assert fails(out) == {}
    assert s.tm.state(spec.task_id) is TaskState.FAILED
    assert s.tm.failure(spec.task_id).kind is ErrorKind.TASK_ERROR  # type: ignore[union-attr]


def test_application_error_fails_returns_the_driver_did_not_store(s: Story) -> None:
    spec = s.spec(returns=2)
    s.submit(spec)
    s.start(spec)
    out = s(E.TaskFailed, task=spec.task_id, attempt=1, node=N1, worker=W1, error_types=("x.E",))
    assert fails(out) == {obj: ErrorKind.TASK_ERROR for obj in spec.return_ids}


def test_retry_exceptions_true_retries_any_error(s: Story) -> None:
    spec = s.spec(retry_exceptions=True, max_retries=1)
    s.submit(spec)
    s.start(spec)
    assert scheduled(s.raise_(spec)) == [(spec.task_id, 2)]
    s.start(spec, attempt=2, worker=W2)
    out = s.raise_(spec, attempt=2, worker=W2)
    assert scheduled(out) == []
    assert s.tm.failure(spec.task_id).kind is ErrorKind.TASK_ERROR  # type: ignore[union-attr]


def test_retry_exceptions_by_type_name_matches_the_type_or_a_base(s: Story) -> None:
    spec = s.spec(retry_exceptions=("mymod.Flaky",))
    s.submit(spec)
    s.start(spec)
    assert scheduled(s.raise_(spec, types=("mymod.Timeout", "mymod.Flaky"))) == [(spec.task_id, 2)]
    s.start(spec, attempt=2, worker=W2)
    out = s.raise_(spec, attempt=2, worker=W2, types=("builtins.KeyError",))
    assert scheduled(out) == []
    assert s.tm.state(spec.task_id) is TaskState.FAILED


def test_late_result_of_attempt_1_after_attempt_2_started_is_dropped_and_counted(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    s.start(spec, worker=W1)
    s(E.WorkerDied, worker=W1, node=N1)
    s.start(spec, attempt=2, worker=W3)
    assert s.finish(spec, attempt=1, worker=W1) == []
    assert s.tm.stats["stale_task_finished"] == 1
    assert s.tm.state(spec.task_id) is TaskState.RUNNING
    assert s.finish(spec, attempt=2, worker=W3) == []
    assert s.tm.state(spec.task_id) is TaskState.FINISHED


def test_result_from_a_dead_node_after_its_attempt_was_retried_is_dropped(s: Story) -> None:
    spec = s.spec(max_retries=0)
    s.submit(spec)
    s.start(spec, worker=W1)
    s(E.NodeDied, node=N1, incarnation=0)
    assert s.tm.state(spec.task_id) is TaskState.FAILED
    assert s.finish(spec, worker=W1) == []
    assert s.tm.stats["stale_task_finished"] == 1
    assert s.tm.state(spec.task_id) is TaskState.FAILED


def test_start_reported_from_a_dead_node_loses_the_attempt(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    s(E.NodeDied, node=N1, incarnation=0)
    out = s.start(spec, worker=W1)
    assert scheduled(out) == [(spec.task_id, 2)]
    assert s.tm.stats["task_started_on_dead_node"] == 1


def test_finish_reported_from_a_dead_node_loses_the_attempt(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)  # its forward to N1 was never reported
    s(E.NodeDied, node=N1, incarnation=0)
    out = s.finish(spec, worker=W1)
    assert scheduled(out) == [(spec.task_id, 2)]
    assert s.tm.stats["task_finished_on_dead_node"] == 1
    assert s.tm.state(spec.task_id) is TaskState.SCHEDULED


def test_late_start_of_a_superseded_attempt_is_dropped(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    s.start(spec, worker=W1)
    s(E.WorkerDied, worker=W1, node=N1)
    assert s.start(spec, attempt=1, worker=W1) == []
    assert s.tm.state(spec.task_id) is TaskState.SCHEDULED
    assert s.tm.stats["stale_task_started"] == 1


def test_an_older_forward_arriving_late_does_not_move_the_attempt_back(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    s(E.TaskArrived, spec=spec, attempt=1, node=N1, hops=1)
    s(E.TaskArrived, spec=spec, attempt=1, node=N2, hops=2)
    assert s(E.TaskArrived, spec=spec, attempt=1, node=N1, hops=1) == []
    assert s.tm.stats["stale_task_arrived"] == 1
    assert scheduled(s(E.NodeDied, node=N2, incarnation=0)) == [(spec.task_id, 2)]


def test_attempt_forwarded_to_a_node_that_dies_is_retried(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    s(E.TaskArrived, spec=spec, attempt=1, node=N2)
    out = s(E.NodeDied, node=N2, incarnation=0)
    assert scheduled(out) == [(spec.task_id, 2)]


def test_unschedulable_task_fails_with_task_unschedulable(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    cause = failure(ErrorKind.TASK_UNSCHEDULABLE, "hard affinity to a dead node")
    out = s(E.TaskUnschedulable, task=spec.task_id, attempt=1, failure=cause)
    assert fails(out) == {spec.return_ids[0]: ErrorKind.TASK_UNSCHEDULABLE}
    assert s.tm.state(spec.task_id) is TaskState.FAILED


# --- cancellation ---------------------------------------------------------------------------


def test_cancel_queued_task_withdraws_it_and_fails_returns_cancelled(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    out = s(E.CancelRequested, task=spec.task_id)
    assert of(out, C.WithdrawTask) == [C.WithdrawTask(stimulus_id=out[0].stimulus_id, task=spec.task_id, attempt=1, node=HEAD)]
    assert fails(out) == {spec.return_ids[0]: ErrorKind.TASK_CANCELLED}
    assert s.tm.state(spec.task_id) is TaskState.CANCELLED


def test_cancelled_task_is_never_retried_and_a_late_start_is_interrupted(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    s(E.CancelRequested, task=spec.task_id)
    out = s.start(spec, worker=W1)
    assert [type(c) for c in out] == [C.InterruptTask]
    assert s(E.WorkerDied, worker=W1, node=N1) == []
    assert s.tm.state(spec.task_id) is TaskState.CANCELLED
    assert s.tm.attempt(spec.task_id) == 1


def test_cancel_while_waiting_for_arguments_forgets_the_waiter(s: Story) -> None:
    upstream = s.spec()
    s.submit(upstream)
    spec = s.spec(args=upstream.return_ids)
    s.submit(spec)
    out = s(E.CancelRequested, task=spec.task_id)
    assert of(out, C.ForgetWaiter) == [C.ForgetWaiter(stimulus_id=out[0].stimulus_id, waiter=f"task:{spec.task_id}")]
    assert s.ready(spec) == []
    assert s.tm.stats["stale_arguments_ready"] == 1


def test_force_cancel_of_a_running_task_kills_its_worker_and_fails_it_as_a_crash_not_retried(s: Story) -> None:
    # Ray: get of a running task cancelled with force=True raises WorkerCrashedError.
    spec = s.spec(max_retries=3)
    s.submit(spec)
    s.start(spec, worker=W1)
    out = s(E.CancelRequested, task=spec.task_id, force=True)
    assert out == [C.InterruptTask(stimulus_id=out[0].stimulus_id, task=spec.task_id, attempt=1, worker=W1, force=True)]
    out = s(E.WorkerDied, worker=W1, node=N1)
    assert scheduled(out) == []
    assert fails(out) == {spec.return_ids[0]: ErrorKind.WORKER_CRASHED}
    assert s.tm.state(spec.task_id) is TaskState.CANCELLED
    cause = s.tm.failure(spec.task_id)
    assert cause is not None and "force=True" in cause.message and cause.detail("worker") == W1


def test_cancel_without_force_of_a_running_task_whose_worker_dies_is_cancelled_not_retried(s: Story) -> None:
    spec = s.spec(max_retries=3)
    s.submit(spec)
    s.start(spec, worker=W1)
    out = s(E.CancelRequested, task=spec.task_id)
    assert of(out, C.InterruptTask)[0].force is False
    out = s(E.WorkerDied, worker=W1, node=N1)
    assert scheduled(out) == []
    assert fails(out) == {spec.return_ids[0]: ErrorKind.TASK_CANCELLED}
    assert s.tm.state(spec.task_id) is TaskState.CANCELLED


def test_force_cancel_of_a_queued_task_fails_it_cancelled(s: Story) -> None:
    # Ray: TaskCancelledError when the task was only scheduled; nothing ran, no worker was killed.
    spec = s.spec()
    s.submit(spec)
    out = s(E.CancelRequested, task=spec.task_id, force=True)
    assert of(out, C.InterruptTask) == []
    assert fails(out) == {spec.return_ids[0]: ErrorKind.TASK_CANCELLED}
    assert s.tm.state(spec.task_id) is TaskState.CANCELLED


def test_running_task_that_raises_after_cancel_is_cancelled_not_retried(s: Story) -> None:
    spec = s.spec(retry_exceptions=True)
    s.submit(spec)
    s.start(spec)
    s(E.CancelRequested, task=spec.task_id)
    out = s(E.TaskFailed, task=spec.task_id, attempt=1, node=N1, worker=W1, cancelled=True)
    assert scheduled(out) == []
    assert s.tm.state(spec.task_id) is TaskState.CANCELLED


def test_cancel_of_a_finished_task_has_no_effect(s: Story) -> None:
    spec = s.spec()
    s.run(spec)
    assert s(E.CancelRequested, task=spec.task_id) == []
    assert s.tm.state(spec.task_id) is TaskState.FINISHED


# --- lineage and reconstruction --------------------------------------------------------------


def test_lost_output_of_finished_task_is_rebuilt_with_the_same_ids(s: Story) -> None:
    upstream = s.spec()
    s.run(upstream)
    spec = s.spec(args=upstream.return_ids, returns=2)
    s.submit(spec)
    s.ready(spec)
    s.start(spec)
    s.finish(spec)
    out = s(E.ObjectLost, obj=spec.return_ids[1])
    assert of(out, C.RequestObjects)[0].objects == upstream.return_ids  # type: ignore[attr-defined]
    assert s.tm.state(spec.task_id) is TaskState.WAITING_FOR_ARGS
    out = s.ready(spec)
    (command,) = of(out, C.ScheduleTask)
    assert command.spec == spec and command.attempt == 2  # type: ignore[attr-defined]
    assert s.tm.stats["reconstructions"] == 1


def test_lost_put_fails_object_lost(s: Story) -> None:
    put = put_object_id(DRIVER_TASK, 1)
    s(E.RefsAdded, owner=OWNER, objects=(put,))
    out = s(E.ObjectLost, obj=put)
    (command,) = of(out, C.FailObject)
    assert command.failure.kind is ErrorKind.OBJECT_LOST  # type: ignore[attr-defined]
    assert put in command.failure.message and "put" in command.failure.message  # type: ignore[attr-defined]


def test_reconstruction_is_bounded_by_max_retries(s: Story) -> None:
    spec = s.spec(max_retries=1)
    s.run(spec)
    obj = spec.return_ids[0]
    assert scheduled(s(E.ObjectLost, obj=obj)) == [(spec.task_id, 2)]
    s.start(spec, attempt=2)
    s.finish(spec, attempt=2)
    out = s(E.ObjectLost, obj=obj)
    assert scheduled(out) == []
    (command,) = of(out, C.FailObject)
    assert command.failure.kind is ErrorKind.OBJECT_LOST  # type: ignore[attr-defined]
    assert "retries" in command.failure.message  # type: ignore[attr-defined]


def test_retries_on_worker_death_and_reconstruction_share_one_budget(s: Story) -> None:
    spec = s.spec(max_retries=1)
    s.submit(spec)
    s.start(spec, worker=W1)
    s(E.WorkerDied, worker=W1, node=N1)
    s.start(spec, attempt=2, worker=W2)
    s.finish(spec, attempt=2, worker=W2)
    out = s(E.ObjectLost, obj=spec.return_ids[0])
    assert fails(out) == {spec.return_ids[0]: ErrorKind.OBJECT_LOST}


def test_two_losses_of_one_task_outputs_give_one_resubmission(s: Story) -> None:
    spec = s.spec(returns=2)
    s.run(spec)
    first = s(E.ObjectLost, obj=spec.return_ids[0])
    second = s(E.ObjectLost, obj=spec.return_ids[1])
    again = s(E.ObjectLost, obj=spec.return_ids[0])
    assert scheduled(first) == [(spec.task_id, 2)]
    assert second == [] and again == []
    assert s.tm.stats["lost_while_rebuilding"] == 2


def test_failed_reconstruction_fails_only_the_lost_outputs(s: Story) -> None:
    spec = s.spec(returns=2, max_retries=1)
    s.run(spec)
    s(E.ObjectLost, obj=spec.return_ids[1])
    s.start(spec, attempt=2, worker=W2)
    out = s(E.WorkerDied, worker=W2, node=N1)
    assert fails(out) == {spec.return_ids[1]: ErrorKind.WORKER_CRASHED}


def test_actor_task_output_is_not_rebuilt(s: Story) -> None:
    spec = s.spec(kind=TaskKind.ACTOR_TASK, actor=actor_id(TaskID("x")))
    s.submit(spec)
    s.start(spec)
    s.finish(spec)
    out = s(E.ObjectLost, obj=spec.return_ids[0])
    assert fails(out) == {spec.return_ids[0]: ErrorKind.OBJECT_LOST}
    assert scheduled(out) == []


def test_lineage_is_released_when_nothing_references_the_outputs(s: Story) -> None:
    spec = s.spec()
    s.run(spec)
    assert s.tm.has_lineage(spec.task_id)
    out = s(E.RefsRemoved, owner=OWNER, objects=spec.return_ids)
    assert freed(out) == list(spec.return_ids)
    assert not s.tm.has_lineage(spec.task_id)
    out = s(E.ObjectLost, obj=spec.return_ids[0])
    (command,) = of(out, C.FailObject)
    assert "lineage" in command.failure.message  # type: ignore[attr-defined]


def test_lineage_of_an_argument_lives_while_a_downstream_output_is_referenced(s: Story) -> None:
    upstream = s.spec()
    s.run(upstream)
    spec = s.spec(args=upstream.return_ids)
    s.submit(spec)
    s.ready(spec)
    s.start(spec)
    s.finish(spec)
    # The user drops its handle to the upstream value: it is freed, its lineage kept.
    out = s(E.RefsRemoved, owner=OWNER, objects=upstream.return_ids)
    assert freed(out) == list(upstream.return_ids)
    assert s.tm.has_lineage(upstream.task_id)
    # The downstream value is lost: rebuilding it needs the upstream value, itself rebuilt.
    s(E.ObjectLost, obj=spec.return_ids[0])
    assert scheduled(s(E.ObjectLost, obj=upstream.return_ids[0])) == [(upstream.task_id, 2)]
    # Dropping the downstream handle releases both lineages once nothing is pending.
    s(E.RefsRemoved, owner=OWNER, objects=spec.return_ids)
    assert s.tm.has_lineage(upstream.task_id)
    s.start(upstream, attempt=2)
    s.finish(upstream, attempt=2)
    s.ready(spec)
    s.start(spec, attempt=2)
    out = s.finish(spec, attempt=2)
    assert set(freed(out)) == {upstream.return_ids[0], spec.return_ids[0]}
    assert not s.tm.has_lineage(spec.task_id) and not s.tm.has_lineage(upstream.task_id)


# --- reference counts ---------------------------------------------------------------------------


def test_refcount_zero_frees_the_object(s: Story) -> None:
    put = put_object_id(DRIVER_TASK, 1)
    s(E.RefsAdded, owner=OWNER, objects=(put, put))
    assert s.tm.refcount(put) == 2
    assert freed(s(E.RefsRemoved, owner=OWNER, objects=(put,))) == []
    assert freed(s(E.RefsRemoved, owner=OWNER, objects=(put,))) == [put]
    assert s.tm.refcount(put) == 0


def test_object_is_not_freed_while_a_pending_task_uses_it(s: Story) -> None:
    put = put_object_id(DRIVER_TASK, 1)
    s(E.RefsAdded, owner=OWNER, objects=(put,))
    spec = s.spec(args=(put, put))
    s.submit(spec)
    assert s.tm.refcount(put) == 2  # the handle and the pending task
    assert freed(s(E.RefsRemoved, owner=OWNER, objects=(put,))) == []
    s.ready(spec)
    s.start(spec)
    assert freed(s.finish(spec)) == [put]


def test_unreferenced_return_is_freed_when_its_task_finishes_not_before(s: Story) -> None:
    spec = s.spec()
    s.submit(spec)
    assert freed(s(E.RefsRemoved, owner=OWNER, objects=spec.return_ids)) == []
    s.start(spec)
    assert freed(s.finish(spec)) == list(spec.return_ids)


def test_removing_more_refs_than_added_is_counted_not_applied(s: Story) -> None:
    put = put_object_id(DRIVER_TASK, 1)
    assert s(E.RefsRemoved, owner=OWNER, objects=(put,)) == []
    assert s.tm.stats["refs_removed_unknown"] == 1


def test_owner_death_cancels_its_tasks_and_fails_what_it_owns(s: Story) -> None:
    put = put_object_id(DRIVER_TASK, 1)
    s(E.RefsAdded, owner=OTHER_OWNER, objects=(put,))
    done = s.spec(owner=OTHER_OWNER)
    s.run(done)
    queued = s.spec(owner=OTHER_OWNER)
    s.submit(queued)
    running = s.spec(owner=OTHER_OWNER)
    s.submit(running)
    s.start(running, worker=W1)
    mine = s.spec(args=(put,))
    s.submit(mine)
    out = s(E.OwnerDied, owner=OTHER_OWNER)
    assert fails(out) == {
        done.return_ids[0]: ErrorKind.OWNER_DIED,
        queued.return_ids[0]: ErrorKind.OWNER_DIED,
        running.return_ids[0]: ErrorKind.OWNER_DIED,
        put: ErrorKind.OWNER_DIED,
    }
    assert freed(out) == []
    assert [type(c) for c in out if not isinstance(c, C.FailObject)] == [C.WithdrawTask, C.InterruptTask]
    assert s.tm.state(queued.task_id) is TaskState.CANCELLED
    assert s.tm.state(mine.task_id) is TaskState.WAITING_FOR_ARGS
    assert s(E.OwnerDied, owner=OTHER_OWNER) == []
    assert s(E.TaskSubmitted, spec=s.spec(owner=OTHER_OWNER), node=N2) == []


def test_worker_death_of_an_owner_is_its_owners_death(s: Story) -> None:
    owner = W3
    spec = s.spec(owner=owner)
    s.submit(spec, node=N2)
    out = s(E.WorkerDied, worker=owner, node=N2)
    assert fails(out) == {spec.return_ids[0]: ErrorKind.OWNER_DIED}


# --- actors ----------------------------------------------------------------------------------


def actor_spec(s: Story, args: Sequence[ObjectID] = (), **options: object) -> ActorSpec:
    creation = s.spec(args=args, kind=TaskKind.ACTOR_CREATION, returns=0)
    return ActorSpec(actor_id=actor_id(creation.task_id), creation=creation, **options)  # type: ignore[arg-type]


def test_actor_constructor_arguments_are_resolved_then_create_actor_once(s: Story) -> None:
    put = put_object_id(DRIVER_TASK, 1)
    s(E.RefsAdded, owner=OWNER, objects=(put,))
    spec = actor_spec(s, args=(put,))
    out = s(E.ActorCreated, spec=spec, node=HEAD)
    assert [type(c) for c in out] == [C.RequestObjects]
    out = s(E.ArgumentsReady, waiter=f"task:{spec.creation.task_id}", ready=(put,))
    assert out == [C.CreateActor(stimulus_id=out[0].stimulus_id, spec=spec)]
    assert s(E.ArgumentsReady, waiter=f"task:{spec.creation.task_id}", ready=(put,)) == []
    # The constructor's argument stays referenced for restarts...
    assert freed(s(E.RefsRemoved, owner=OWNER, objects=(put,))) == []
    # ...until the actor is dead for good.
    assert freed(s(E.ActorTerminated, actor=spec.actor_id)) == [put]


def test_actor_task_is_retried_when_its_actor_restarts_and_budget_allows(s: Story) -> None:
    actor = actor_id(TaskID("a"))
    spec = s.spec(kind=TaskKind.ACTOR_TASK, actor=actor, max_retries=1)
    out = s.submit(spec)
    assert out == [C.SubmitActorTask(stimulus_id=out[0].stimulus_id, spec=spec, attempt=1)]
    s.start(spec)
    died = failure(ErrorKind.ACTOR_DIED, "actor died")
    out = s(E.ActorTaskAborted, task=spec.task_id, attempt=1, actor=actor, actor_restarting=True, failure=died)
    assert scheduled(out) == [(spec.task_id, 2)]
    out = s(E.ActorTaskAborted, task=spec.task_id, attempt=2, actor=actor, actor_restarting=True, failure=died)
    assert fails(out) == {spec.return_ids[0]: ErrorKind.ACTOR_DIED}


def test_actor_task_fails_when_its_actor_is_dead_for_good(s: Story) -> None:
    actor = actor_id(TaskID("a"))
    spec = s.spec(kind=TaskKind.ACTOR_TASK, actor=actor, max_retries=-1)
    s.submit(spec)
    died = failure(ErrorKind.ACTOR_DIED, "actor died")
    out = s(E.ActorTaskAborted, task=spec.task_id, attempt=1, actor=actor, actor_restarting=False, failure=died)
    assert fails(out) == {spec.return_ids[0]: ErrorKind.ACTOR_DIED}
    assert s.tm.state(spec.task_id) is TaskState.FAILED


def test_actor_task_is_not_retried_on_worker_death_the_actor_manager_decides(s: Story) -> None:
    spec = s.spec(kind=TaskKind.ACTOR_TASK, actor=actor_id(TaskID("a")))
    s.submit(spec)
    s.start(spec, worker=W1)
    assert s(E.WorkerDied, worker=W1, node=N1) == []
    assert s.tm.state(spec.task_id) is TaskState.RUNNING


def test_calls_to_a_sync_actor_are_submitted_in_caller_order(s: Story) -> None:
    actor = actor_id(TaskID("a"))
    upstream = s.spec()
    s.submit(upstream)
    first = s.spec(kind=TaskKind.ACTOR_TASK, actor=actor, args=upstream.return_ids, seq=1)
    second = s.spec(kind=TaskKind.ACTOR_TASK, actor=actor, seq=2)
    s.submit(first)
    assert scheduled(s.submit(second)) == []
    assert "earlier calls" in (s.tm.pending_reason(second.task_id) or "")
    assert scheduled(s.ready(first)) == [(first.task_id, 1), (second.task_id, 1)]


def test_a_failed_earlier_call_releases_the_later_ones(s: Story) -> None:
    actor = actor_id(TaskID("a"))
    upstream = s.spec()
    s.submit(upstream)
    first = s.spec(kind=TaskKind.ACTOR_TASK, actor=actor, args=upstream.return_ids, seq=1)
    second = s.spec(kind=TaskKind.ACTOR_TASK, actor=actor, seq=2)
    s.submit(first)
    s.submit(second)
    out = s(E.CancelRequested, task=first.task_id)
    assert scheduled(out) == [(second.task_id, 1)]


# --- the machine itself -------------------------------------------------------------------------


def test_stale_events_never_raise_and_are_counted(s: Story) -> None:
    spec = s.spec()
    unknown = TaskID("nope")
    assert s(E.TaskStarted, task=unknown, attempt=1, node=N1, worker=W1) == []
    assert s(E.TaskFinished, task=unknown, attempt=1, node=N1, worker=W1) == []
    assert s(E.TaskFailed, task=unknown, attempt=1, node=N1, worker=W1) == []
    s.submit(spec)
    assert s.start(spec, attempt=5) == []
    s.start(spec)
    assert s.start(spec) == []
    assert s.tm.stats["stale_task_started"] == 3
    assert s.tm.stats["stale_task_finished"] == 1


def test_story_tells_a_task_history(s: Story) -> None:
    spec = s.spec()
    s.run(spec)
    story = "\n".join(s.tm.story(spec.task_id))
    assert "submitted" in story and "SCHEDULED -> RUNNING" in story and "RUNNING -> FINISHED" in story


def test_illegal_move_raises_invalid_transition_with_the_story(s: Story) -> None:
    spec = s.spec()
    s.run(spec)
    rec = s.tm._tasks[spec.task_id]
    with pytest.raises(InvalidTransition) as info:
        s.tm._move(rec, TaskState.RUNNING, "bad", "test")
    assert "FINISHED -> RUNNING" in str(info.value) and "submitted" in str(info.value)


def test_transitions_table_reaches_every_state_from_waiting_for_args() -> None:
    reached = {TaskState.WAITING_FOR_ARGS}
    frontier = [TaskState.WAITING_FOR_ARGS]
    while frontier:
        state = frontier.pop()
        for (src, dst) in TRANSITIONS:
            if src is state and dst not in reached:
                reached.add(dst)
                frontier.append(dst)
    assert reached == set(TaskState)
    assert all(label for label in TRANSITIONS.values())


def test_unknown_event_type_is_a_programming_error(s: Story) -> None:
    with pytest.raises(TypeError):
        s.tm.handle(E.TimerFired(now=0.0, stimulus_id="x", timer="t"))
