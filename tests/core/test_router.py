"""The machines together through the router and the instant driver, one story per test.

Each story drives a small cluster with ``InstantDriver`` and runs the
cross-machine invariants after every step; a start check asserts what a
worker relies on: every argument of an attempt is in its node's store when
the attempt starts.
"""

from __future__ import annotations

import pytest

from detray.core import commands as C
from detray.core import directory as D
from detray.core import events as E
from detray.core import ids
from detray.core.directory import CopyState
from detray.core.instant import InstantDriver
from detray.core.invariants import check_all
from detray.core.resources import units_of
from detray.core.router import Router
from detray.core.scheduler import TaskState as AttemptState
from detray.core.specs import NodeAffinityStrategy, TaskSpec
from detray.core.tasks import TaskState

JOB = ids.job_id(1)
DRIVER_TASK = ids.driver_task_id(JOB)
N0, N1 = ids.node_id(0), ids.node_id(1)
OWNER = ids.WorkerID(f"{N0}/driver")
STORE_BYTES = 1_000


class Cluster:
    """Two nodes of one CPU each (store 1000 bytes, spilling on); the driver owns everything."""

    def __init__(self) -> None:
        self.driver = InstantDriver(return_size_bytes=lambda spec, obj: 300)
        self.driver.start_checks.append(self._arguments_are_local)
        self.counter = 0
        self.puts = 0
        for node in (N0, N1):
            self.feed(
                E.NodeJoined(
                    now=0.0,
                    stimulus_id=self.driver.stimulus("join"),
                    node=node,
                    incarnation=1,
                    resources=units_of({"CPU": 1}),
                    object_store_bytes=STORE_BYTES,
                )
            )

    @property
    def router(self) -> Router:
        return self.driver.router

    def feed(self, event: E.Event) -> None:
        self.driver.feed(event)
        check_all(self.driver.router)

    def _arguments_are_local(self, start: C.StartTask) -> None:
        for arg in start.spec.args:
            assert self.router.directory.copy_state(arg, start.node) is CopyState.IN_MEMORY, (
                f"{start.spec.task_id} started on {start.node} without its argument {arg}"
            )

    def submit(self, node: ids.NodeID, *args: ids.ObjectID) -> TaskSpec:
        """A one-CPU task pinned to ``node`` (hard affinity), with one 300-byte return."""
        task = ids.task_id(JOB, DRIVER_TASK, self.counter)
        self.counter += 1
        ret = ids.return_object_id(task, 1)
        spec = TaskSpec(
            task_id=task,
            job_id=JOB,
            owner=OWNER,
            name=f"f{self.counter}",
            args=args,
            return_ids=(ret,),
            resources=units_of({"CPU": 1}),
            strategy=NodeAffinityStrategy(node=node, soft=False),
        )
        self.feed(E.RefsAdded(now=0.0, stimulus_id=self.driver.stimulus("ref"), owner=OWNER, objects=(ret,)))
        self.feed(E.TaskSubmitted(now=0.0, stimulus_id=self.driver.stimulus("submit"), spec=spec, node=N0))
        return spec

    def put(self, node: ids.NodeID, size_bytes: int) -> ids.ObjectID:
        self.puts += 1
        obj = ids.put_object_id(DRIVER_TASK, self.puts)
        self.feed(E.RefsAdded(now=0.0, stimulus_id=self.driver.stimulus("ref"), owner=OWNER, objects=(obj,)))
        self.feed(
            E.ObjectPut(
                now=0.0, stimulus_id=self.driver.stimulus("put"), obj=obj, node=node, size_bytes=size_bytes, owner=OWNER
            )
        )
        return obj

    def finish(self, spec: TaskSpec) -> None:
        self.driver.finish(spec.task_id, 1)
        check_all(self.router)

    def attempt_state(self, node: ids.NodeID, spec: TaskSpec) -> AttemptState | None:
        return self.router.schedulers[node].state_of(spec.task_id, 1)


@pytest.fixture
def cluster() -> Cluster:
    return Cluster()


def fetched_and_waiting_for_a_cpu(cluster: Cluster) -> tuple[TaskSpec, TaskSpec, ids.ObjectID]:
    """X made on N1; a blocker holds N0's CPU; the consumer of X fetched it to N0 and waits."""
    producer = cluster.submit(N1)
    cluster.finish(producer)
    x = producer.return_ids[0]
    blocker = cluster.submit(N0)
    consumer = cluster.submit(N0, x)
    assert cluster.attempt_state(N0, consumer) is AttemptState.QUEUED
    assert cluster.router.directory.locations(x) == (N0, N1)
    return blocker, consumer, x


def test_arguments_stay_local_while_a_fetched_task_waits_for_a_worker(cluster: Cluster) -> None:
    blocker, consumer, x = fetched_and_waiting_for_a_cpu(cluster)
    waiter = D.fetch_waiter_id(consumer.task_id, 1, N0)
    assert cluster.router.directory.held_arguments(waiter) == (x,)
    # New primaries need room on N0 (300 + 400 + 400 > 1000): the fetched copy of X is
    # held, so an unheld primary spills instead of X being evicted.
    first = cluster.put(N0, 400)
    cluster.put(N0, 400)
    assert cluster.router.directory.copy_state(x, N0) is CopyState.IN_MEMORY
    assert cluster.router.directory.copy_state(first, N0) is CopyState.SPILLED
    cluster.finish(blocker)  # the CPU frees: the consumer starts with X local (start check)
    assert (consumer.task_id, 1) in cluster.driver.running
    cluster.finish(consumer)
    assert cluster.router.tasks.state(consumer.task_id) is TaskState.FINISHED
    assert cluster.router.directory.held_fetches() == ()  # released when it left


def test_a_held_argument_taken_by_a_fault_is_fetched_again_before_the_task_starts(cluster: Cluster) -> None:
    blocker, consumer, x = fetched_and_waiting_for_a_cpu(cluster)
    pulls_before = sum(isinstance(c, C.PullObject) for c in cluster.driver.commands)
    cluster.feed(E.CopiesEvicted(now=0.0, stimulus_id=cluster.driver.stimulus("evict"), node=N0, objects=(x,)))
    assert cluster.router.schedulers[N0].stats["refetches"] == 1
    assert sum(isinstance(c, C.PullObject) for c in cluster.driver.commands) == pulls_before + 1
    assert cluster.attempt_state(N0, consumer) is AttemptState.QUEUED  # the instant pull brought it back
    cluster.finish(blocker)
    assert (consumer.task_id, 1) in cluster.driver.running


def test_a_withdrawn_fetch_leaves_no_waiter_and_no_hold_behind(cluster: Cluster) -> None:
    blocker, consumer, x = fetched_and_waiting_for_a_cpu(cluster)
    cluster.feed(E.CancelRequested(now=0.0, stimulus_id=cluster.driver.stimulus("cancel"), task=consumer.task_id))
    assert cluster.router.tasks.state(consumer.task_id) is TaskState.CANCELLED
    assert cluster.router.directory.held_fetches() == ()
    assert cluster.router.directory.fetch_waiters() == ()
    cluster.finish(blocker)


def test_an_error_the_owner_retries_never_becomes_the_value(cluster: Cluster) -> None:
    task = ids.task_id(JOB, DRIVER_TASK, 99)
    ret = ids.return_object_id(task, 1)
    spec = TaskSpec(task_id=task, job_id=JOB, owner=OWNER, name="flaky", return_ids=(ret,),
                    resources=units_of({"CPU": 1}), max_retries=1, retry_exceptions=True)
    cluster.feed(E.RefsAdded(now=0.0, stimulus_id=cluster.driver.stimulus("ref"), owner=OWNER, objects=(ret,)))
    cluster.feed(E.TaskSubmitted(now=0.0, stimulus_id=cluster.driver.stimulus("submit"), spec=spec, node=N0))
    cluster.driver.fail(task, 1, error_types=("builtins.ValueError",))
    check_all(cluster.router)
    # The error value the worker stored is discarded: the object is not available yet.
    assert cluster.router.directory.status(ret) is not D.ObjectStatus.AVAILABLE
    assert any(isinstance(c, C.DeleteCopy) and c.obj == ret and c.reason == "result not accepted"
               for c in cluster.driver.commands)
    cluster.driver.finish(task, 2)
    check_all(cluster.router)
    cluster.feed(E.ObjectsRequested(now=0.0, stimulus_id="get", waiter="get:1", node=N0, objects=(ret,), num_required=1))
    assert cluster.driver.woken["get:1"].ready == (ret,)
    assert cluster.driver.values[ret] == ("flaky", ())


def test_a_stale_result_is_discarded_not_stored(cluster: Cluster) -> None:
    producer = cluster.submit(N0)
    run = cluster.driver.running[(producer.task_id, 1)]
    # The worker dies; attempt 2 starts; then attempt 1's late result arrives.
    cluster.driver.kill_worker(run.worker, run.node)
    assert (producer.task_id, 2) in cluster.driver.running
    ret = producer.return_ids[0]
    cluster.feed(E.TaskFinished(now=0.0, stimulus_id="late", task=producer.task_id, attempt=1, node=N0,
                                worker=run.worker, return_sizes=((ret, 300),)))
    assert cluster.router.directory.status(ret) is not D.ObjectStatus.AVAILABLE
    assert cluster.router.stats["result_returns_discarded"] == 1
