"""The per-node scheduler, one story per test: what a user of the cluster would notice."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detray.core import commands as C
from detray.core import events as E
from detray.core.errors import ErrorKind, InvalidTransition, failure
from detray.core.ids import (
    NodeID,
    ObjectID,
    WorkerID,
    actor_id,
    driver_task_id,
    job_id,
    node_id,
    put_object_id,
    task_id,
    worker_id,
)
from detray.core.policy import (
    ClusterView,
    DefaultPolicy,
    Placement,
    PlacementKind,
    PlacementRequest,
    ResourceTable,
)
from detray.core.resources import CPU, GPU, UNIT, NodeResources, units_of
from detray.core.scheduler import (
    TRANSITIONS,
    WORKER_TRANSITIONS,
    Scheduler,
    SchedulerState,
    TaskState,
    WorkerState,
)
from detray.core.specs import (
    NodeAffinityStrategy,
    SchedulingStrategy,
    SpreadStrategy,
    TaskKind,
    TaskSpec,
    DEFAULT_STRATEGY,
)

N0, N1, N2, N3 = node_id(0), node_id(1), node_id(2), node_id(3)
JOB = job_id(1)
DRIVER = driver_task_id(JOB)
OWNER = WorkerID(f"{N0}/driver")
CommandT = TypeVar("CommandT", bound=C.Command)


def spec(
    index: int,
    *,
    cpus: float = 1,
    gpus: float = 0,
    args: tuple[ObjectID, ...] = (),
    strategy: SchedulingStrategy = DEFAULT_STRATEGY,
    **custom: float,
) -> TaskSpec:
    quantities: dict[str, float] = {CPU: cpus, GPU: gpus, **custom}
    return TaskSpec(
        task_id=task_id(JOB, DRIVER, index),
        job_id=JOB,
        owner=OWNER,
        name=f"f{index}",
        args=args,
        resources=units_of(quantities),
        strategy=strategy,
    )


def actor_spec(index: int, *, placement_cpus: float = 1, held_cpus: float = 0) -> TaskSpec:
    creation = task_id(JOB, DRIVER, 1000 + index)
    return TaskSpec(
        task_id=creation,
        job_id=JOB,
        owner=OWNER,
        name=f"Actor{index}.__init__",
        kind=TaskKind.ACTOR_CREATION,
        resources=units_of({CPU: held_cpus}),
        placement_resources=units_of({CPU: placement_cpus}),
        actor_id=actor_id(creation),
    )


class Node:
    """One scheduler under test, with the other nodes it knows about.

    Every event goes through ``handle``; after each, the invariants are
    checked and every command is checked to carry the event's stimulus id.
    """

    def __init__(
        self,
        node: NodeID = N0,
        resources: Mapping[str, float] | None = None,
        others: Mapping[NodeID, Mapping[str, float]] | None = None,
        **kwargs: Any,
    ) -> None:
        self.node = node
        self.scheduler = Scheduler(node, **kwargs)
        self.steps = 0
        self.commands: list[C.Command] = []
        self.join(node, resources if resources is not None else {CPU: 4})
        for other, total in (others or {}).items():
            self.join(other, total)

    def send(self, cls: type[E.Event], **fields: Any) -> list[C.Command]:
        self.steps += 1
        sid = f"s{self.steps}"
        out = self.scheduler.handle(cls(now=float(self.steps), stimulus_id=sid, **fields))
        for command in out:
            assert command.stimulus_id == sid, command
        self.scheduler.check_invariants()
        self.commands.extend(out)
        return out

    def join(self, node: NodeID, total: Mapping[str, float], incarnation: int = 0) -> list[C.Command]:
        return self.send(
            E.NodeJoined,
            node=node,
            incarnation=incarnation,
            resources=units_of(total),
            object_store_bytes=1 << 30,
        )

    def arrive(self, s: TaskSpec, attempt: int = 1, **fields: Any) -> list[C.Command]:
        return self.send(E.TaskArrived, spec=s, attempt=attempt, node=self.node, **fields)

    def fetched(self, s: TaskSpec, attempt: int = 1, **fields: Any) -> list[C.Command]:
        return self.send(E.ArgumentsFetched, task=s.task_id, attempt=attempt, node=self.node, **fields)

    def started(self, worker: WorkerID) -> list[C.Command]:
        return self.send(E.WorkerStarted, worker=worker, node=self.node)

    def finish(self, s: TaskSpec, worker: WorkerID, attempt: int = 1) -> list[C.Command]:
        return self.send(E.TaskFinished, task=s.task_id, attempt=attempt, node=self.node, worker=worker)

    def fail(self, s: TaskSpec, worker: WorkerID, attempt: int = 1) -> list[C.Command]:
        return self.send(E.TaskFailed, task=s.task_id, attempt=attempt, node=self.node, worker=worker)

    def run(self, s: TaskSpec, attempt: int = 1) -> tuple[WorkerID, C.StartTask]:
        """Arrive (fetching arguments if any), start a worker if asked: the StartTask."""
        out = self.arrive(s, attempt)
        if s.args:
            assert one(out, C.FetchArguments).objects == s.args
            out = self.fetched(s, attempt)
        starts = of(out, C.StartTask)
        if not starts:
            out = self.started(one(out, C.StartWorker).worker)
            starts = of(out, C.StartTask)
        start = one(starts, C.StartTask)
        assert start.spec == s and start.attempt == attempt
        return start.worker, start


def of(commands: Sequence[C.Command], cls: type[CommandT]) -> list[CommandT]:
    return [c for c in commands if isinstance(c, cls)]


def one(commands: Sequence[C.Command], cls: type[CommandT]) -> CommandT:
    found = of(commands, cls)
    assert len(found) == 1, (cls.__name__, commands)
    return found[0]


def cpus(n: float) -> int:
    return int(n * UNIT)


# --- running here ----------------------------------------------------------------------


def test_task_runs_here_on_a_new_worker_and_gives_everything_back_when_it_finishes() -> None:
    node = Node(resources={CPU: 4})
    s = spec(1)
    out = node.arrive(s)
    assert [type(c) for c in out] == [C.StartWorker]
    worker = one(out, C.StartWorker).worker
    assert worker == worker_id(N0, 0)
    start = one(node.started(worker), C.StartTask)
    assert (start.spec, start.worker, start.node, start.gpu_ids) == (s, worker, N0, ())
    assert node.scheduler.available()[CPU] == cpus(3)
    assert node.scheduler.worker_of(s.task_id) == worker
    assert node.finish(s, worker) == []
    assert node.scheduler.available()[CPU] == cpus(4)
    assert node.scheduler.workers() == {worker: WorkerState.IDLE}
    assert node.scheduler.state_of(s.task_id, 1) is None


def test_arguments_are_fetched_to_this_node_before_the_task_may_start() -> None:
    node = Node()
    arg = put_object_id(DRIVER, 1)
    s = spec(1, args=(arg,))
    out = node.arrive(s)
    fetch = one(out, C.FetchArguments)
    assert (fetch.task, fetch.attempt, fetch.node, fetch.objects) == (s.task_id, 1, N0, (arg,))
    assert of(out, C.StartWorker) == []
    assert node.scheduler.state_of(s.task_id, 1) is TaskState.FETCHING
    assert node.scheduler.queue_length() == 1
    out = node.fetched(s)
    assert of(out, C.StartWorker)


def test_an_idle_worker_is_reused_lowest_id_first_instead_of_starting_another() -> None:
    node = Node(resources={CPU: 2})
    a, b = spec(1), spec(2)
    wa, _ = node.run(a)
    wb, _ = node.run(b)
    assert (wa, wb) == (worker_id(N0, 0), worker_id(N0, 1))
    node.finish(b, wb)
    node.finish(a, wa)
    out = node.arrive(spec(3))
    assert of(out, C.StartWorker) == []
    assert one(out, C.StartTask).worker == wa


def test_workers_started_never_outnumber_the_attempts_that_have_room_to_run() -> None:
    node = Node(resources={CPU: 2})
    for i in range(6):
        node.arrive(spec(i))
    assert len(of(node.commands, C.StartWorker)) == 2
    assert node.scheduler.queue_length() == 6
    assert node.scheduler.available()[CPU] == 0


def test_queued_tasks_run_in_arrival_order_as_resources_free_up() -> None:
    node = Node(resources={CPU: 1})
    first, second, third = spec(1), spec(2), spec(3)
    worker, _ = node.run(first)
    node.arrive(second)
    node.arrive(third)
    start = one(node.finish(first, worker), C.StartTask)
    assert start.spec == second and start.worker == worker


# --- placement: hybrid, locality, spread, affinity ---------------------------------------


def test_local_node_is_preferred_until_it_is_half_loaded_then_the_task_spills_back() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4}})
    assert of(node.arrive(spec(1)), C.ForwardTask) == []
    assert of(node.arrive(spec(2)), C.ForwardTask) == []
    forward = one(node.arrive(spec(3)), C.ForwardTask)
    assert (forward.from_node, forward.to_node, forward.hops, forward.attempt) == (N0, N1, 1, 1)
    assert node.scheduler.stats["forwarded"] == 1
    # The forward is counted against N1 until N1 reports again.
    assert node.scheduler.view()[N1].available[CPU] == cpus(3)


def test_spillback_picks_the_least_utilized_node_and_breaks_ties_by_node_id() -> None:
    node = Node(resources={CPU: 2}, others={N2: {CPU: 4}, N1: {CPU: 4}})
    node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 1}))
    node.arrive(spec(1))  # local: 0 % -> here
    to = [one(node.arrive(spec(i)), C.ForwardTask).to_node for i in (2, 3)]
    # Local is at 50 % (not below the threshold); N1 at 75 %; N2 at 0 % then 25 %.
    assert to == [N2, N2]


def test_a_forwarded_attempt_runs_where_it_landed_instead_of_bouncing() -> None:
    node = Node(node=N1, resources={CPU: 2}, others={N0: {CPU: 8}})
    node.arrive(spec(1), hops=1)
    out = node.arrive(spec(2), hops=1)
    out += node.arrive(spec(3), hops=1)
    assert of(out, C.ForwardTask) == []
    assert node.scheduler.queue_length() == 3


def test_a_forwarded_attempt_stuck_behind_busy_cpus_spills_to_a_node_with_room() -> None:
    # Regression (found by the simulator): pinned where it landed, an attempt waited
    # forever behind actors holding every CPU of the node while other nodes were idle.
    node = Node(node=N1, resources={CPU: 1}, others={N0: {CPU: 2}, N2: {CPU: 2}})
    node.send(E.NodeResourcesReported, node=N0, incarnation=0, available=units_of({CPU: 0}))
    node.send(E.NodeResourcesReported, node=N2, incarnation=0, available=units_of({CPU: 0}))
    holder = actor_spec(1, placement_cpus=1, held_cpus=1)
    worker, _ = node.run(holder)
    node.finish(holder, worker)  # the actor now holds the node's only CPU for good
    stuck = spec(2)
    assert of(node.arrive(stuck, hops=1), C.ForwardTask) == []  # placed where it landed
    out = node.send(E.NodeResourcesReported, node=N2, incarnation=0, available=units_of({CPU: 2}))
    forward = one(out, C.ForwardTask)
    assert (forward.spec, forward.to_node, forward.hops) == (stuck, N2, 2)


def test_an_attempt_spilled_back_to_a_node_it_left_is_taken_again() -> None:
    # Regression (found by the simulator): the node that had forwarded the attempt took
    # its return (more hops) for a duplicate and dropped it, so it ran nowhere.
    node = Node(resources={CPU: 1}, others={N1: {CPU: 1}})
    node.run(spec(1))  # the only CPU here is busy
    leaving = spec(2)
    assert one(node.arrive(leaving), C.ForwardTask).hops == 1
    assert node.arrive(leaving) == []  # the same arrival again: a duplicate
    assert node.scheduler.stats["duplicate_task_arrived"] == 1
    node.arrive(leaving, hops=2)  # spilled back from N1
    assert node.scheduler.state_of(leaving.task_id, 1) is TaskState.QUEUED


def test_large_arguments_attract_the_task_to_the_node_holding_most_of_their_bytes() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4}, N2: {CPU: 4}})
    arg_a, arg_b = put_object_id(DRIVER, 1), put_object_id(DRIVER, 2)
    s = spec(1, args=(arg_a, arg_b))
    forward = one(
        node.arrive(s, arg_bytes_by_node=((N0, 10), (N1, 5_000_000), (N2, 9_000_000))),
        C.ForwardTask,
    )
    assert forward.to_node == N2


def test_small_arguments_do_not_attract_the_task() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4}})
    s = spec(1, args=(put_object_id(DRIVER, 1),))
    out = node.arrive(s, arg_bytes_by_node=((N1, 50_000),))
    assert of(out, C.ForwardTask) == []


def test_locality_yields_when_the_node_holding_the_arguments_has_no_room() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4}})
    node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 0}))
    s = spec(1, args=(put_object_id(DRIVER, 1),))
    out = node.arrive(s, arg_bytes_by_node=((N1, 9_000_000),))
    assert of(out, C.ForwardTask) == [] and of(out, C.FetchArguments)


def test_locality_is_ignored_for_actors() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4}})
    out = node.arrive(actor_spec(1), arg_bytes_by_node=((N1, 9_000_000),))
    assert of(out, C.ForwardTask) == []


def test_spread_tasks_go_round_robin_over_the_nodes_in_id_order() -> None:
    node = Node(resources={CPU: 4}, others={N2: {CPU: 4}, N1: {CPU: 4}})
    placed = []
    for i in range(6):
        out = node.arrive(spec(i, strategy=SpreadStrategy()))
        forwards = of(out, C.ForwardTask)
        placed.append(forwards[0].to_node if forwards else N0)
    assert placed == [N0, N1, N2, N0, N1, N2]


def test_spread_skips_a_node_without_room_now() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4}, N2: {CPU: 4}})
    node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 0}))
    placed = []
    for i in range(4):
        forwards = of(node.arrive(spec(i, strategy=SpreadStrategy())), C.ForwardTask)
        placed.append(forwards[0].to_node if forwards else N0)
    assert placed == [N0, N2, N0, N2]


def test_hard_affinity_to_a_dead_node_is_reported_unschedulable() -> None:
    node = Node(others={N1: {CPU: 4}})
    node.send(E.NodeDied, node=N1, incarnation=0)
    s = spec(1, strategy=NodeAffinityStrategy(node=N1, soft=False))
    report = one(node.arrive(s), C.ReportUnschedulable)
    assert (report.task, report.attempt) == (s.task_id, 1)
    assert report.failure.kind is ErrorKind.TASK_UNSCHEDULABLE
    assert report.failure.detail("node") == N1
    assert node.scheduler.queue_length() == 0


def test_hard_affinity_to_a_node_never_seen_is_unschedulable_too() -> None:
    node = Node()
    s = spec(1, strategy=NodeAffinityStrategy(node=N3, soft=False))
    assert one(node.arrive(s), C.ReportUnschedulable).failure.kind is ErrorKind.TASK_UNSCHEDULABLE


def test_hard_affinity_goes_to_its_node_even_when_that_node_is_busy() -> None:
    node = Node(others={N1: {CPU: 1}})
    node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 0}))
    forward = one(node.arrive(spec(1, strategy=NodeAffinityStrategy(node=N1))), C.ForwardTask)
    assert forward.to_node == N1


def test_soft_affinity_to_a_dead_node_falls_back_to_the_default_policy() -> None:
    node = Node(others={N1: {CPU: 4}})
    node.send(E.NodeDied, node=N1, incarnation=0)
    out = node.arrive(spec(1, strategy=NodeAffinityStrategy(node=N1, soft=True)))
    assert of(out, C.ReportUnschedulable) == [] and of(out, C.ForwardTask) == []
    assert of(out, C.StartWorker)


def test_soft_affinity_to_a_live_feasible_node_waits_there_rather_than_elsewhere() -> None:
    node = Node(resources={CPU: 1}, others={N1: {CPU: 8}})
    node.run(spec(1))
    out = node.arrive(spec(2, strategy=NodeAffinityStrategy(node=N0, soft=True)))
    assert of(out, C.ForwardTask) == []
    # A report of room elsewhere does not move it either.
    out = node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 8}))
    assert of(out, C.ForwardTask) == []


def test_actor_creation_with_hard_affinity_to_a_dead_node_is_actor_unschedulable() -> None:
    node = Node()
    creation = actor_spec(1)
    creation = dataclasses.replace(creation, strategy=NodeAffinityStrategy(node=N2))
    assert one(node.arrive(creation), C.ReportUnschedulable).failure.kind is ErrorKind.ACTOR_UNSCHEDULABLE


# --- infeasible ---------------------------------------------------------------------------------


def test_infeasible_task_pends_with_one_warning_and_runs_when_a_node_that_fits_joins() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4}})
    s = spec(1, gpus=1)
    warn = one(node.arrive(s), C.Warn)
    assert (warn.code, warn.subject) == ("infeasible_task", s.task_id)
    assert "GPU" in warn.message
    assert node.scheduler.state_of(s.task_id, 1) is TaskState.INFEASIBLE
    # More news that does not help: still pending, no second warning.
    node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 4}))
    assert node.join(N2, {CPU: 16}) == []
    assert node.scheduler.state_of(s.task_id, 1) is TaskState.INFEASIBLE
    forward = one(node.join(N3, {CPU: 4, GPU: 1}), C.ForwardTask)
    assert forward.to_node == N3 and forward.spec == s
    assert len(of(node.commands, C.Warn)) == 1
    assert node.scheduler.queue_length() == 0


def test_custom_resources_are_scheduled_like_any_other() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4, "accelerator": 2}})
    forward = one(node.arrive(spec(1, accelerator=0.5)), C.ForwardTask)
    assert forward.to_node == N1
    assert node.scheduler.view()[N1].available["accelerator"] == int(1.5 * UNIT)


# --- GPUs -----------------------------------------------------------------------------------------


def test_fractional_gpu_requests_are_packed_onto_one_gpu() -> None:
    node = Node(resources={CPU: 8, GPU: 2})
    ids = [node.run(spec(i, cpus=1, gpus=0.25))[1].gpu_ids for i in range(4)]
    assert ids == [(0,), (0,), (0,), (0,)]
    assert node.scheduler.gpu_free() == [0, UNIT]
    assert node.run(spec(9, cpus=1, gpus=0.5))[1].gpu_ids == (1,)


def test_whole_gpu_requests_get_distinct_gpu_ids() -> None:
    node = Node(resources={CPU: 8, GPU: 4})
    first = node.run(spec(1, gpus=1))[1].gpu_ids
    second = node.run(spec(2, gpus=2))[1].gpu_ids
    assert first == (0,) and second == (1, 2)
    assert node.scheduler.gpu_free() == [0, 0, 0, UNIT]


def test_a_whole_gpu_waits_when_only_fractions_are_free() -> None:
    node = Node(resources={CPU: 8, GPU: 1})
    node.run(spec(1, gpus=0.5))
    node.arrive(spec(2, gpus=1))
    assert node.scheduler.state_of(spec(2).task_id, 1) is TaskState.QUEUED
    assert node.scheduler.available()[GPU] == int(0.5 * UNIT)


# --- blocked workers -----------------------------------------------------------------------------


def test_a_worker_blocked_in_get_lends_its_cpu_but_not_its_gpu_so_a_nested_task_runs() -> None:
    node = Node(resources={CPU: 1, GPU: 1})
    parent = spec(1, cpus=1, gpus=1)
    parent_worker, _ = node.run(parent)
    child = spec(2, cpus=1)
    gpu_child = spec(3, cpus=0, gpus=1)
    assert of(node.arrive(child), C.StartWorker) == []
    node.arrive(gpu_child)
    out = node.send(E.WorkerBlocked, worker=parent_worker, node=N0)
    child_worker = one(out, C.StartWorker).worker
    assert node.scheduler.available() == {CPU: 0, GPU: 0}
    assert one(node.started(child_worker), C.StartTask).spec == child
    assert node.scheduler.state_of(gpu_child.task_id, 1) is TaskState.QUEUED
    node.finish(child, child_worker)
    node.send(E.WorkerUnblocked, worker=parent_worker, node=N0)
    assert node.scheduler.available() == {CPU: 0, GPU: 0}
    assert node.scheduler.holdings()[f"task:{parent.task_id}:1"] == {CPU: UNIT, GPU: UNIT}
    node.finish(parent, parent_worker)
    assert node.scheduler.state_of(gpu_child.task_id, 1) is TaskState.RUNNING


def test_an_unblocked_worker_takes_back_only_what_is_free_and_the_shortfall_is_counted() -> None:
    node = Node(resources={CPU: 1})
    parent = spec(1)
    parent_worker, _ = node.run(parent)
    node.arrive(spec(2))
    node.send(E.WorkerBlocked, worker=parent_worker, node=N0)
    node.started(worker_id(N0, 1))
    node.send(E.WorkerUnblocked, worker=parent_worker, node=N0)
    assert node.scheduler.stats["unblock_cpu_short"] == 1
    assert node.scheduler.holdings()[f"task:{parent.task_id}:1"] == {}
    node.finish(parent, parent_worker)
    assert node.scheduler.available()[CPU] == 0  # the child still holds its CPU


def test_a_duplicate_block_is_counted_not_applied_twice() -> None:
    node = Node(resources={CPU: 2})
    worker, _ = node.run(spec(1, cpus=2))
    node.send(E.WorkerBlocked, worker=worker, node=N0)
    node.send(E.WorkerBlocked, worker=worker, node=N0)
    assert node.scheduler.stats["duplicate_worker_blocked"] == 1
    assert node.scheduler.available()[CPU] == cpus(2)


# --- actors ---------------------------------------------------------------------------------------


def test_an_actor_needs_one_cpu_to_be_placed_but_holds_none_while_alive() -> None:
    node = Node(resources={CPU: 1})
    creation = actor_spec(1)
    worker, _ = node.run(creation)
    assert node.scheduler.available()[CPU] == cpus(1)  # holds 0 CPU even while constructing
    assert node.finish(creation, worker) == []
    assert node.scheduler.workers() == {worker: WorkerState.ACTOR}
    # A second actor fits too (needs 1 free CPU to place, holds 0).
    second_worker, _ = node.run(actor_spec(2))
    assert second_worker != worker
    # A normal task does not reuse the actor's dedicated worker.
    task_worker, _ = node.run(spec(5))
    assert task_worker not in (worker, second_worker)
    # With the CPU taken, a third actor cannot be placed.
    node.arrive(actor_spec(3))
    assert node.scheduler.state_of(actor_spec(3).task_id, 1) is TaskState.QUEUED


def test_an_actor_holds_what_it_asked_for_until_its_worker_dies() -> None:
    node = Node(resources={CPU: 4})
    creation = actor_spec(1, placement_cpus=2, held_cpus=2)
    worker, _ = node.run(creation)
    node.finish(creation, worker)
    assert node.scheduler.available()[CPU] == cpus(2)
    assert node.scheduler.holdings() == {f"actor:{worker}": {CPU: cpus(2)}}
    node.send(E.WorkerDied, worker=worker, node=N0)
    assert node.scheduler.available()[CPU] == cpus(4)
    assert node.scheduler.workers() == {}


def test_a_failed_actor_creation_releases_and_kills_its_worker() -> None:
    node = Node(resources={CPU: 4})
    creation = actor_spec(1, held_cpus=1)
    worker, _ = node.run(creation)
    kill = one(node.fail(creation, worker), C.KillWorker)
    assert (kill.worker, kill.node) == (worker, N0)
    assert node.scheduler.available()[CPU] == cpus(4)
    assert node.scheduler.workers() == {worker: WorkerState.DRAINING}
    node.send(E.WorkerDied, worker=worker, node=N0)
    assert node.scheduler.workers() == {}


def test_results_of_actor_tasks_on_an_actor_worker_are_not_counted_as_stale() -> None:
    node = Node()
    creation = actor_spec(1)
    worker, _ = node.run(creation)
    node.finish(creation, worker)
    method = spec(50)
    assert node.finish(method, worker) == []
    assert node.scheduler.stats["actor_task_event_ignored"] == 1
    assert node.scheduler.stats["stale_task_finished"] == 0


# --- late, duplicate and withdrawn -----------------------------------------------------------------


def test_a_stale_finish_is_dropped_and_counted() -> None:
    node = Node(resources={CPU: 2})
    s = spec(1)
    worker, _ = node.run(s, attempt=2)
    before = node.scheduler.available()
    assert node.finish(s, worker, attempt=1) == []  # an older attempt's late result
    assert node.finish(s, worker_id(N0, 99), attempt=2) == []  # the wrong worker
    assert node.scheduler.stats["stale_task_finished"] == 2
    assert node.scheduler.available() == before
    node.finish(s, worker, attempt=2)
    assert node.finish(s, worker, attempt=2) == []  # a duplicate
    assert node.scheduler.stats["stale_task_finished"] == 3
    assert node.scheduler.available()[CPU] == cpus(2)


def test_a_duplicate_or_older_arrival_is_dropped() -> None:
    node = Node()
    s = spec(1, args=(put_object_id(DRIVER, 1),))
    node.arrive(s, attempt=2)
    assert node.arrive(s, attempt=2) == []
    assert node.arrive(s, attempt=1) == []
    assert node.scheduler.stats["duplicate_task_arrived"] == 1
    assert node.scheduler.stats["stale_task_arrived"] == 1
    assert node.scheduler.queue_length() == 1


def test_with_several_attempts_of_a_task_here_the_latest_live_one_is_the_tasks() -> None:
    node = Node(done_attempts_max=0)  # no memory of attempts gone: only the live ones tell
    s = spec(1)
    workers = {attempt: node.run(s, attempt)[0] for attempt in (1, 2, 3)}
    assert node.scheduler.worker_of(s.task_id) == workers[3]
    node.finish(s, workers[1], attempt=1)  # an older one leaves: the latest stays
    assert node.scheduler.worker_of(s.task_id) == workers[3]
    node.finish(s, workers[3], attempt=3)  # the latest leaves: the one before is the task's
    assert node.scheduler.worker_of(s.task_id) == workers[2]
    assert node.arrive(s, attempt=1) == [] and node.scheduler.stats["stale_task_arrived"] == 1
    node.finish(s, workers[2], attempt=2)
    assert node.scheduler.worker_of(s.task_id) is None
    assert node.scheduler.available()[CPU] == cpus(4)


def test_withdrawing_a_queued_attempt_forgets_it_and_frees_what_it_held() -> None:
    node = Node(resources={CPU: 1})
    s = spec(1)
    worker_cmd = one(node.arrive(s), C.StartWorker)  # allocated, waiting for a worker
    assert node.scheduler.available()[CPU] == 0
    assert node.send(E.TaskWithdrawn, task=s.task_id, attempt=1, node=N0) == []
    assert node.scheduler.available()[CPU] == cpus(1)
    assert node.scheduler.state_of(s.task_id, 1) is None
    # The worker that was starting for it becomes idle, and nothing runs.
    assert node.started(worker_cmd.worker) == []
    assert node.scheduler.workers() == {worker_cmd.worker: WorkerState.IDLE}


def test_withdrawing_a_running_attempt_is_ignored_the_task_manager_interrupts_it() -> None:
    node = Node()
    s = spec(1)
    worker, _ = node.run(s)
    assert node.send(E.TaskWithdrawn, task=s.task_id, attempt=1, node=N0) == []
    assert node.scheduler.stats["withdraw_running_ignored"] == 1
    assert node.scheduler.worker_of(s.task_id) == worker
    node.fail(s, worker)
    assert node.scheduler.available()[CPU] == cpus(4)


def test_a_failed_argument_drops_the_attempt_and_reports_its_failure() -> None:
    node = Node()
    arg = put_object_id(DRIVER, 1)
    s = spec(1, args=(arg,))
    node.arrive(s)
    lost = failure(ErrorKind.OBJECT_LOST, "no copy left", obj=arg)
    report = one(node.fetched(s, failure=lost), C.ReportUnschedulable)
    assert (report.task, report.attempt, report.failure) == (s.task_id, 1, lost)
    assert node.scheduler.queue_length() == 0
    assert node.fetched(s) == []
    assert node.scheduler.stats["stale_arguments_fetched"] == 1


def releases(commands: Sequence[C.Command]) -> list[tuple[str, int, NodeID]]:
    return [(c.task, c.attempt, c.node) for c in of(commands, C.ReleaseArguments)]


def test_a_fetched_attempt_releases_its_arguments_only_when_it_finishes() -> None:
    node = Node(resources={CPU: 1})
    arg = put_object_id(DRIVER, 1)
    blocker, s = spec(1), spec(2, args=(arg,))
    blocker_worker, _ = node.run(blocker)
    node.arrive(s)
    assert releases(node.fetched(s)) == []  # queued behind the blocker: arguments stay held
    out = node.finish(blocker, blocker_worker)
    assert one(out, C.StartTask).spec == s and releases(out) == []
    assert releases(node.finish(s, blocker_worker)) == [(s.task_id, 1, N0)]


@pytest.mark.parametrize("way_out", ["withdrawn while fetching", "withdrawn while queued", "spilled", "worker died", "failed"])
def test_every_way_an_attempt_leaves_releases_its_arguments_once(way_out: str) -> None:
    node = Node(resources={CPU: 1}, others={N1: {CPU: 2}})
    node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 0}))
    arg = put_object_id(DRIVER, 1)
    blocker, s = spec(1), spec(2, args=(arg,))
    blocker_worker, _ = node.run(blocker)
    node.arrive(s)
    if way_out == "withdrawn while fetching":
        out = node.send(E.TaskWithdrawn, task=s.task_id, attempt=1, node=N0)
    else:
        node.fetched(s)
        if way_out == "withdrawn while queued":
            out = node.send(E.TaskWithdrawn, task=s.task_id, attempt=1, node=N0)
        elif way_out == "spilled":
            out = node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 2}))
            assert one(out, C.ForwardTask).spec == s
        else:
            worker = one(node.finish(blocker, blocker_worker), C.StartTask).worker
            if way_out == "worker died":
                out = node.send(E.WorkerDied, worker=worker, node=N0)
            else:
                out = node.fail(s, worker)
    assert releases(out) == [(s.task_id, 1, N0)]
    assert node.scheduler.state_of(s.task_id, 1) is None
    assert releases(node.commands) == [(s.task_id, 1, N0)]


def test_a_failed_fetch_releases_nothing_the_directory_already_forgot_it() -> None:
    node = Node()
    s = spec(1, args=(put_object_id(DRIVER, 1),))
    node.arrive(s)
    out = node.fetched(s, failure=failure(ErrorKind.OBJECT_LOST, "gone"))
    assert releases(out) == [] and of(out, C.ReportUnschedulable)


def test_a_missing_argument_sends_an_attempt_waiting_for_a_worker_back_to_fetching() -> None:
    node = Node(resources={CPU: 1})
    arg = put_object_id(DRIVER, 1)
    s = spec(1, args=(arg,))
    node.arrive(s)
    worker = one(node.fetched(s), C.StartWorker).worker  # resources taken, a worker starting
    assert node.scheduler.state_of(s.task_id, 1) is TaskState.WAITING_FOR_WORKER
    out = node.send(E.ArgumentsMissing, task=s.task_id, attempt=1, node=N0, objects=(arg,))
    fetch = one(out, C.FetchArguments)
    assert (fetch.task, fetch.attempt, fetch.objects) == (s.task_id, 1, (arg,))
    assert node.scheduler.state_of(s.task_id, 1) is TaskState.FETCHING
    assert node.scheduler.available()[CPU] == cpus(1)  # it gave its resources back
    assert of(node.started(worker), C.StartTask) == []  # and may not start without its argument
    assert one(node.fetched(s), C.StartTask).worker == worker


def test_a_missing_argument_of_a_running_attempt_is_ignored_it_has_read_them() -> None:
    node = Node()
    arg = put_object_id(DRIVER, 1)
    s = spec(1, args=(arg,))
    worker, _ = node.run(s)
    assert node.send(E.ArgumentsMissing, task=s.task_id, attempt=1, node=N0, objects=(arg,)) == []
    assert node.scheduler.stats["arguments_missing_while_running"] == 1
    assert releases(node.finish(s, worker)) == [(s.task_id, 1, N0)]
    assert node.send(E.ArgumentsMissing, task=s.task_id, attempt=1, node=N0, objects=(arg,)) == []
    assert node.scheduler.stats["stale_arguments_missing"] == 1


def test_a_worker_death_frees_what_it_held_and_forgets_its_attempt() -> None:
    node = Node(resources={CPU: 2, GPU: 1})
    s = spec(1, cpus=2, gpus=1)
    worker, _ = node.run(s)
    waiting = spec(2)
    node.arrive(waiting)
    out = node.send(E.WorkerDied, worker=worker, node=N0)
    assert node.scheduler.state_of(s.task_id, 1) is None
    assert node.scheduler.gpu_free() == [UNIT]
    assert of(out, C.StartWorker)  # the waiting task gets a fresh worker
    assert node.finish(s, worker) == []
    assert node.scheduler.stats["stale_task_finished"] == 1
    assert node.send(E.WorkerDied, worker=worker, node=N0) == []
    assert node.scheduler.stats["unknown_worker_died"] == 1


# --- spilling queued work ---------------------------------------------------------------------------


def test_queued_tasks_spill_to_a_node_that_reports_room_newest_first() -> None:
    node = Node(resources={CPU: 1}, others={N1: {CPU: 2}})
    node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 0}))
    first, second, third = spec(1), spec(2), spec(3)
    node.run(first)
    node.arrive(second)
    node.arrive(third)
    assert node.scheduler.queue_length() == 2
    out = node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 1}))
    forward = one(out, C.ForwardTask)
    assert forward.spec == third and forward.to_node == N1 and forward.hops == 1
    assert node.scheduler.state_of(second.task_id, 1) is TaskState.QUEUED


# --- membership and incarnations -------------------------------------------------------------------


def test_a_node_back_with_a_new_incarnation_replaces_its_old_view() -> None:
    node = Node(others={N1: {CPU: 2}})
    node.join(N1, {CPU: 2}, incarnation=0)
    assert node.scheduler.stats["duplicate_node_joined"] == 1
    node.join(N1, {CPU: 8, GPU: 1}, incarnation=1)
    assert node.scheduler.view()[N1].incarnation == 1
    assert node.scheduler.view()[N1].total == units_of({CPU: 8, GPU: 1})
    node.send(E.NodeDied, node=N1, incarnation=0)  # the old life's death, reported late
    assert node.scheduler.stats["stale_node_died"] == 1
    assert N1 in node.scheduler.view()
    node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 0}))
    assert node.scheduler.stats["stale_resources_report"] == 1
    assert node.scheduler.view()[N1].available[CPU] == cpus(8)
    node.send(E.NodeDied, node=N1, incarnation=1)
    assert N1 not in node.scheduler.view()
    node.join(N1, {CPU: 8}, incarnation=1)  # a join of the life that died: late
    assert N1 not in node.scheduler.view()
    assert node.scheduler.stats["stale_node_joined"] == 1


def test_this_nodes_death_ends_the_scheduler_and_later_events_are_counted() -> None:
    node = Node(resources={CPU: 2})
    s = spec(1)
    worker, _ = node.run(s)
    node.arrive(spec(2))
    assert node.send(E.NodeDied, node=N0, incarnation=0) == []
    assert node.scheduler.state is SchedulerState.DEAD
    assert node.scheduler.queue_length() == 0 and node.scheduler.workers() == {}
    assert node.finish(s, worker) == []
    assert node.scheduler.stats["dropped_dead_TaskFinished"] == 1


def test_worker_ids_of_a_new_incarnation_never_collide_with_the_old_ones() -> None:
    node = Node(resources={CPU: 1})
    old_worker, _ = node.run(spec(1))
    fresh = Scheduler(N0)
    fresh.handle(
        E.NodeJoined(
            now=0, stimulus_id="j", node=N0, incarnation=1, resources=units_of({CPU: 1}),
            object_store_bytes=0,
        )
    )
    out = fresh.handle(E.TaskArrived(now=1, stimulus_id="a", spec=spec(1), attempt=2, node=N0))
    assert one(out, C.StartWorker).worker != old_worker
    assert fresh.handle(E.WorkerDied(now=2, stimulus_id="d", worker=old_worker, node=N0)) == []
    assert fresh.stats["unknown_worker_died"] == 1


# --- policy is pluggable and decisions are deterministic -------------------------------------------


class AlwaysTo:
    def __init__(self, target: NodeID) -> None:
        self.target = target

    def place(self, request: PlacementRequest, view: ClusterView) -> Placement:
        if request.spill_only:
            return Placement(PlacementKind.STAY)
        return Placement(PlacementKind.FORWARD, node=self.target, reason="test")


def test_the_placement_policy_is_pluggable() -> None:
    node = Node(others={N2: {CPU: 1}}, policy=AlwaysTo(N2))
    assert one(node.arrive(spec(1)), C.ForwardTask).to_node == N2


def test_the_default_policy_threshold_is_configurable() -> None:
    node = Node(resources={CPU: 4}, others={N1: {CPU: 4}}, policy=DefaultPolicy(spread_threshold=1.0))
    for i in range(4):
        assert of(node.arrive(spec(i)), C.ForwardTask) == []


def test_same_events_give_the_same_commands() -> None:
    def story() -> list[C.Command]:
        node = Node(resources={CPU: 2, GPU: 1}, others={N1: {CPU: 2}, N2: {CPU: 1, GPU: 2}})
        for i in range(12):
            strategy: SchedulingStrategy = SpreadStrategy() if i % 3 == 0 else DEFAULT_STRATEGY
            node.arrive(spec(i, gpus=0.5 if i % 4 == 0 else 0, strategy=strategy))
        for command in list(node.commands):
            if isinstance(command, C.StartWorker):
                node.started(command.worker)
        return node.commands

    assert story() == story()


# --- the tables and the story -----------------------------------------------------------------------


def test_terminal_task_states_have_no_way_out_and_every_live_state_can_be_lost() -> None:
    sources = {a for a, _ in TRANSITIONS}
    for terminal in (TaskState.FORWARDED, TaskState.FINISHED, TaskState.FAILED, TaskState.WITHDRAWN,
                     TaskState.UNSCHEDULABLE, TaskState.ARGS_FAILED, TaskState.LOST):
        assert terminal not in sources
    for live in (TaskState.INFEASIBLE, TaskState.FETCHING, TaskState.QUEUED,
                 TaskState.WAITING_FOR_WORKER, TaskState.RUNNING):
        assert (live, TaskState.LOST) in TRANSITIONS
    assert all(label.strip() for label in WORKER_TRANSITIONS.values())


def test_story_tells_an_attempts_history() -> None:
    node = Node()
    s = spec(1)
    worker, _ = node.run(s)
    node.finish(s, worker)
    lines = node.scheduler.story(s.task_id)
    assert [line.split(": ", 1)[1].split(":")[0] for line in lines] == [
        "attempt 1 arrived (hops 0)",
        "#1 QUEUED",
        "#1 WAITING_FOR_WORKER",
        "#1 RUNNING",
        "#1 FINISHED",
    ]


def test_an_event_the_scheduler_does_not_handle_is_refused_loudly() -> None:
    node = Node()
    with pytest.raises(TypeError):
        node.scheduler.handle(E.ObjectFreed(now=0, stimulus_id="x", obj=put_object_id(DRIVER, 1)))


def test_an_actor_task_sent_to_the_scheduler_is_a_wiring_bug_and_crashes_loudly() -> None:
    node = Node()
    method = TaskSpec(
        task_id=task_id(JOB, DRIVER, 7), job_id=JOB, owner=OWNER, name="A.m", kind=TaskKind.ACTOR_TASK
    )
    with pytest.raises(InvalidTransition):
        node.arrive(method)


def test_misrouted_task_is_counted_not_run() -> None:
    node = Node()
    out = node.send(E.TaskArrived, spec=spec(1), attempt=1, node=N1)
    assert out == [] and node.scheduler.stats["misrouted_task_arrived"] == 1


def test_units_are_exact_for_many_fractional_tasks() -> None:
    node = Node(resources={CPU: 1})
    workers = []
    for i in range(10):
        out = node.arrive(spec(i, cpus=0.1))
        for start in of(out, C.StartWorker):
            workers.append(start.worker)
    assert node.scheduler.available()[CPU] == 0
    assert len(workers) == 10


def test_an_attempt_forwarded_too_often_that_cannot_run_here_is_unschedulable() -> None:
    node = Node(resources={CPU: 1}, others={N1: {CPU: 8}})
    report = one(node.arrive(spec(1, cpus=4), hops=8), C.ReportUnschedulable)
    assert report.failure.kind is ErrorKind.TASK_UNSCHEDULABLE
    assert report.failure.detail("hops") == "8"


def test_a_worker_that_dies_while_starting_is_replaced() -> None:
    node = Node(resources={CPU: 1})
    s = spec(1)
    first = one(node.arrive(s), C.StartWorker).worker
    second = one(node.send(E.WorkerDied, worker=first, node=N0), C.StartWorker).worker
    assert second != first
    assert one(node.started(second), C.StartTask).spec == s


def _corrupt_available(s: Scheduler) -> None:
    s._ledger.available[CPU] -= 1


def _corrupt_idle(s: Scheduler) -> None:
    s._idle.append((99, worker_id(N0, 99)))


def _corrupt_demand(s: Scheduler) -> None:
    s._demand[CPU] = s._demand.get(CPU, 0) + 1


def _corrupt_running_count(s: Scheduler) -> None:
    s._running += 1


def _corrupt_queue(s: Scheduler) -> None:
    next(iter(s._queues.values())).clear()


def _corrupt_gpu(s: Scheduler) -> None:
    s._ledger.gpu_free[0] -= 1


@pytest.mark.parametrize(
    "corrupt",
    [_corrupt_available, _corrupt_idle, _corrupt_demand, _corrupt_running_count, _corrupt_queue, _corrupt_gpu],
)
def test_check_invariants_notices_a_corrupted_index(corrupt: Any) -> None:
    node = Node(resources={CPU: 1, GPU: 1})
    worker, _ = node.run(spec(1, gpus=0.5))
    node.arrive(spec(2))
    node.scheduler.check_invariants()
    corrupt(node.scheduler)
    with pytest.raises(AssertionError):
        node.scheduler.check_invariants()


def test_draining_a_long_queue_costs_the_same_per_task_at_its_end() -> None:
    # Regression (found by the simulator's benchmark): queues were plain dicts whose head
    # was taken with next(iter()), which walks every entry deleted from the front, so
    # draining 100,000 queued tasks was quadratic.
    import time

    def drain_costs(count: int, window: int) -> tuple[float, float]:
        node = Node(resources={CPU: 1})
        specs = [spec(i) for i in range(count)]
        out: list[C.Command] = []
        for s in specs:
            out += node.scheduler.handle(E.TaskArrived(now=0.0, stimulus_id="a", spec=s, attempt=1, node=N0))
        worker = one(out, C.StartWorker).worker
        out = node.scheduler.handle(E.WorkerStarted(now=0.0, stimulus_id="w", worker=worker, node=N0))
        marks = []
        for index in range(count - 1):
            if index in (0, window, count - 1 - window, count - 2):
                marks.append(time.perf_counter())
            start = one(out, C.StartTask)
            out = node.scheduler.handle(
                E.TaskFinished(now=0.0, stimulus_id="f", task=start.spec.task_id, attempt=1, node=N0, worker=worker)
            )
        return marks[1] - marks[0], marks[3] - marks[2]

    ratios = []
    for _ in range(2):
        first, last = drain_costs(12_000, 1_500)
        ratios.append(last / first)
    assert min(ratios) < 1.5, ratios


# --- fetches waiting for room in the object store (the directory's admission control) --------------


def test_an_attempt_whose_fetch_waits_for_room_holds_nothing_and_a_later_one_runs_meanwhile() -> None:
    """The directory may keep a fetch waiting for room (it answers later): the attempt
    stays FETCHING without resources, an attempt whose arguments are local runs, and
    its ReleaseArguments when it finishes is what frees the room the first one waits for."""
    node = Node(resources={CPU: 1})
    waiting = spec(1, args=(put_object_id(DRIVER, 1),))
    local = spec(2, args=(put_object_id(DRIVER, 2),))
    node.arrive(waiting)  # FetchArguments: the directory puts it in line (no answer yet)
    assert node.scheduler.state_of(waiting.task_id, 1) is TaskState.FETCHING
    assert node.scheduler.available()[CPU] == cpus(1)  # a fetching attempt holds no CPU
    worker, start = node.run(local)
    assert start.spec == local
    out = node.finish(local, worker)
    assert one(out, C.ReleaseArguments).task == local.task_id  # room for the one in line
    start = one(node.fetched(waiting), C.StartTask)
    assert start.spec == waiting and start.worker == worker


class _GeneralPolicy(DefaultPolicy):
    """The default policy, but not exactly ``DefaultPolicy``: the spill asks ``place`` always."""


@pytest.mark.parametrize("threshold", [0.5, 1.0])
def test_the_spill_fast_path_answers_as_the_policy_would(threshold: float) -> None:
    # ``_spill`` skips ``place`` when the policy names a sole target (one node with room
    # besides this one): same commands, stats and stories as asking ``place`` every time.
    def script(policy: DefaultPolicy) -> Node:
        others = {N1: {CPU: 4}, N2: {CPU: 4}, N3: {CPU: 2, GPU: 1}}
        node = Node(resources={CPU: 1}, others=others, policy=policy)
        for other in others:
            node.send(E.NodeResourcesReported, node=other, incarnation=0, available=units_of({CPU: 0}))
        node.run(spec(100))  # the only CPU here is busy: the rest queue
        for i in range(12):
            node.arrive(spec(i, cpus=2 if i % 5 == 4 else 1), hops=i % 3)
        node.arrive(spec(50), arg_bytes_by_node=((N1, 1 << 30),))  # locality: asks ``place``
        node.arrive(spec(51, gpus=1))
        for other, room in [(N1, {CPU: 1}), (N2, {CPU: 3}), (N1, {CPU: 4}), (N3, {CPU: 2, GPU: 1})]:
            node.send(E.NodeResourcesReported, node=other, incarnation=0, available=units_of(room))
        node.send(E.NodeResourcesReported, node=N1, incarnation=0, available=units_of({CPU: 2}))
        node.send(E.NodeResourcesReported, node=N2, incarnation=0, available=units_of({CPU: 2}))
        return node

    fast = script(DefaultPolicy(spread_threshold=threshold))
    general = script(_GeneralPolicy(spread_threshold=threshold))
    assert fast.commands == general.commands
    assert of(fast.commands, C.ForwardTask)  # the scenario spills
    assert fast.scheduler.stats == general.scheduler.stats
    for key in [N0, *(spec(i).task_id for i in (*range(12), 50, 51))]:
        assert fast.scheduler.story(key) == general.scheduler.story(key)


def test_the_arrival_fast_path_does_what_placing_and_dispatching_do(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``_start_at_once`` fuses queue, allocate and start for an arrival placed here
    # (by ``places_here`` or by the policy) with nothing queued ahead, room and an idle
    # worker: same commands, stats and stories as the general code (forced by
    # ``_starts_at_once`` answering False).
    def script() -> Node:
        node = Node(resources={CPU: 3, GPU: 1}, others={N1: {CPU: 4}})

        def finish(index: int) -> None:
            started = [c for c in node.commands if isinstance(c, C.StartTask) and c.spec.name == f"f{index}"]
            node.finish(spec(index), started[-1].worker)

        for i in range(3):
            node.arrive(spec(i), hops=1)  # no idle worker yet: general
        for i in range(3):
            node.started(worker_id(N0, i))
        for i in range(3):
            finish(i)
        node.arrive(spec(10), hops=1)  # pinned, idle worker: fast
        node.arrive(spec(11, gpus=0.5), hops=2)  # GPU ids: fast
        node.arrive(spec(12, cpus=2), hops=1)  # does not fit: general (queued)
        node.arrive(spec(13), hops=1)  # queued ahead: general
        finish(10)  # 12 still does not fit
        finish(11)  # 12 runs, then 13
        finish(12)
        finish(13)
        node.arrive(spec(14, args=(put_object_id(DRIVER, 1),)), hops=1)  # to fetch: general
        node.arrive(spec(15), hops=0)  # the policy asked (N1 has room too), LOCAL: fast
        node.arrive(spec(16, strategy=NodeAffinityStrategy(node=N0, soft=True)), hops=1)  # asked: fast
        node.arrive(actor_spec(1), hops=1)  # placement resources: fast
        node.arrive(spec(17, strategy=SpreadStrategy()), hops=0)  # spread: the policy forwards it
        node.arrive(spec(18), hops=1)  # no idle worker: general
        return node

    fast_calls: list[str] = []
    fused = Scheduler._start_at_once

    def counted(scheduler: Scheduler, rec: Any, sid: str, out: list[C.Command]) -> None:
        fast_calls.append(rec.spec.name)
        fused(scheduler, rec, sid, out)

    monkeypatch.setattr(Scheduler, "_start_at_once", counted)
    fast = script()
    assert fast_calls == ["f10", "f11", "f15", "f16", "Actor1.__init__"]
    monkeypatch.setattr(Scheduler, "_starts_at_once", lambda *args: False)
    general = script()
    assert len(fast_calls) == 5
    assert fast.commands == general.commands
    assert fast.scheduler.stats == general.scheduler.stats
    keys = [N0, *(spec(i).task_id for i in (*range(3), *range(10, 19))), actor_spec(1).task_id]
    keys += [worker_id(N0, i) for i in range(4)]
    for key in keys:
        assert fast.scheduler.story(key) == general.scheduler.story(key)
    assert fast.scheduler._story == general.scheduler._story


@settings(max_examples=300, deadline=None)
@given(
    totals=st.lists(st.integers(0, 4), min_size=1, max_size=5),
    free=st.lists(st.integers(0, 4), min_size=5, max_size=5),
    local_used=st.integers(0, 4),
    demand=st.integers(0, 3),
    cpus=st.sampled_from([0, 0.5, 1, 2, 5]),
    hops=st.integers(0, 9),
    strategy=st.sampled_from([DEFAULT_STRATEGY, SpreadStrategy(), NodeAffinityStrategy(node=N1, soft=True)]),
    holder=st.sampled_from([None, N0, N1]),
    max_hops=st.integers(0, 2),
)
def test_places_here_only_when_place_answers_local(
    totals: list[int],
    free: list[int],
    local_used: int,
    demand: int,
    cpus: float,
    hops: int,
    strategy: SchedulingStrategy,
    holder: NodeID | None,
    max_hops: int,
) -> None:
    # ``DefaultPolicy.places_here`` lets the scheduler skip ``place``: it may say True
    # only where ``place`` answers LOCAL, whatever the argument bytes.
    table = ResourceTable()
    local_total = units_of({CPU: 4})
    table.join(N0, 0, local_total)
    for index, total in enumerate(totals):
        other = node_id(index + 1)
        table.join(other, 0, units_of({CPU: total}))
        table.report(other, 0, units_of({CPU: min(free[index], total)}))
    ledger = NodeResources.of(local_total)
    ledger.allocate(units_of({CPU: local_used}))
    view = ClusterView(N0, table, ledger, units_of({CPU: demand}))
    policy = DefaultPolicy(max_hops=max_hops)
    s = spec(1, cpus=cpus, strategy=strategy)
    if not policy.places_here(s, hops, view):
        return
    arg_bytes = () if holder is None else ((holder, 1 << 30),)
    for request in (PlacementRequest(s, hops), PlacementRequest(s, hops, arg_bytes)):
        assert policy.place(request, view).kind is PlacementKind.LOCAL


def test_story_lines_of_an_attempt_and_its_worker_from_arrival_to_the_end() -> None:
    # The text the fused and inlined hot paths write (``_start_at_once``, the finish in
    # ``_on_result``), pinned as the general code writes it.
    node = Node(resources={CPU: 2})
    a, b, c = spec(1), spec(2), spec(3)
    wa, _ = node.run(a)
    wb, _ = node.run(b)
    node.finish(a, wa)
    node.fail(b, wb)
    node.arrive(c, hops=1)  # the fused path: idle worker, room, nothing queued
    story = node.scheduler.story
    assert story(a.task_id) == [
        "s2: attempt 1 arrived (hops 0)",
        "s2: #1 QUEUED: placed here",
        "s2: #1 WAITING_FOR_WORKER: resources allocated",
        f"s3: #1 RUNNING: started on {wa}",
        f"s6: #1 FINISHED: finished on {wa}",
    ]
    assert story(b.task_id)[-1] == f"s7: #1 FAILED: failed on {wb}"
    assert story(c.task_id) == [
        "s8: attempt 1 arrived (hops 1)",
        "s8: #1 QUEUED: placed here",
        "s8: #1 WAITING_FOR_WORKER: resources allocated",
        f"s8: #1 RUNNING: started on {wa}",
    ]
    assert story(wa) == [
        "s2: starting",
        "s3: IDLE: idle",
        f"s3: LEASED: runs {a.task_id} attempt 1",
        "s6: IDLE: idle",
        f"s8: LEASED: runs {c.task_id} attempt 1",
    ]
    assert story(wb)[-1] == "s7: IDLE: idle"


def test_story_entries_are_flat_tuples_and_the_bound_counts_entries() -> None:
    # One flat tuple per entry (no nested args tuple for the garbage collector to visit);
    # the bound keeps the newest ``story_lines_max`` entries, one line each.
    node = Node(resources={CPU: 2})
    a, b = spec(1), spec(2)
    wa, _ = node.run(a)
    node.finish(a, wa)
    node.arrive(b, hops=1)
    entries = list(node.scheduler._story)
    assert entries and all(not isinstance(field, tuple) for entry in entries for field in entry)
    lines = [line for key in dict.fromkeys(e[0] for e in entries) for line in node.scheduler.story(key)]
    assert len(lines) == len(entries)
