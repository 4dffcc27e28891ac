"""Faults and the recovery a program relies on: retries, lineage reconstruction, lost
objects, actor restarts, partitions, lost notifications, a control plane restart."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

import detray as ray
import detray.sim
from detray.sim import faults
from detray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity


def nodes(count: int, cpus: float = 2, **extra: object) -> dict:
    return {"nodes": [{"count": count, "resources": {"CPU": cpus}}], **extra}


def trace_kinds(kind: str) -> list[dict]:
    return [json.loads(line) for line in detray.sim.current_cluster().trace.lines if f'"kind":"{kind}"' in line]


@ray.remote
def square_slowly(i):
    time.sleep(1.0)
    return i * i


@ray.remote
def block_of(i):
    return np.full(1000, i)


def test_a_killed_worker_task_is_retried():
    ray.init(mode="sim", seed=1, cluster=nodes(1, cpus=2))
    faults.schedule(faults.KillWorker(node=0, at_s=0.5))
    assert ray.get([square_slowly.remote(i) for i in range(2)]) == [0, 1]
    attempts = [event["attempt"] for event in trace_kinds("task.started")]
    assert attempts.count(2) == 1  # exactly the killed attempt ran again
    assert time.monotonic() == pytest.approx(1.5, abs=0.01)


def test_a_killed_worker_without_retries_fails_with_worker_crashed():
    ray.init(mode="sim", seed=1, cluster=nodes(1, cpus=1))
    faults.schedule(faults.KillWorker(node=0, at_s=0.5))
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(square_slowly.options(max_retries=0).remote(3))


def test_killed_user_code_unwinds_and_what_it_submits_afterwards_is_discarded():
    ray.init(mode="sim", seed=1, cluster=nodes(1, cpus=2))
    cleanup: list[str] = []

    @ray.remote
    def marker():
        return "should not run"

    @ray.remote(max_retries=0)
    def victim():
        try:
            time.sleep(10)
        finally:
            cleanup.append("finally ran")
            try:
                marker.remote()
            except BaseException as error:  # noqa: B036 - the kill, re-raised
                cleanup.append(type(error).__name__)
                raise

    ref = victim.remote()
    faults.schedule(faults.KillWorker(node=0, at_s=1.0))
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(ref)
    assert cleanup == ["finally ran", "WorkerKilled"]
    assert not [e for e in trace_kinds("task.started") if e["name"].endswith("marker")]


def test_a_killed_nodes_objects_are_rebuilt_from_lineage_on_get():
    ray.init(mode="sim", seed=2, cluster=nodes(4, cpus=2))
    refs = [block_of.options(scheduling_strategy="SPREAD").remote(i) for i in range(8)]
    ray.wait(refs, num_returns=len(refs), fetch_local=False)
    directory = detray.sim.current_cluster().router.directory
    on_node_2 = [r for r in refs if directory.locations(r.id) == ("node-00002",)]
    assert on_node_2
    faults.schedule(faults.KillNode(node=2, at_s=time.monotonic() + 0.01))
    time.sleep(2.0)  # past the failure detector's timeout: the copies are known lost
    values = ray.get(refs)
    assert [int(v[0]) for v in values] == list(range(8))
    assert detray.sim.current_cluster().router.tasks.stats["reconstructions"] >= len(on_node_2)


def test_a_lost_put_object_raises_object_lost_error_at_get():
    ray.init(mode="sim", seed=3, cluster=nodes(2))
    ref = ray.put(np.arange(100))
    faults.schedule(faults.EvictCopies(node=0, fraction=1.0, at_s=time.monotonic()))
    time.sleep(0.1)
    with pytest.raises(ray.exceptions.ObjectLostError) as raised:
        ray.get(ref)
    assert ref.hex() in str(raised.value)


def test_a_put_owned_by_a_worker_on_a_killed_node_raises_owner_died():
    ray.init(mode="sim", seed=3, cluster=nodes(2))

    @ray.remote
    def put_there():
        return [ray.put("precious")]

    (inner,) = ray.get(put_there.options(scheduling_strategy=Affinity("node-00001", soft=False)).remote())
    faults.schedule(faults.KillNode(node=1, at_s=time.monotonic() + 0.01))
    time.sleep(2.0)
    with pytest.raises(ray.exceptions.ObjectLostError) as raised:  # OwnerDiedError is one
        ray.get(inner)
    assert isinstance(raised.value, ray.exceptions.OwnerDiedError)


def test_evicted_copies_of_task_results_are_rebuilt():
    ray.init(mode="sim", seed=4, cluster=nodes(1))
    refs = [block_of.remote(i) for i in range(4)]
    ray.wait(refs, num_returns=4)
    faults.schedule(faults.EvictCopies(node=0, fraction=1.0, at_s=time.monotonic()))
    time.sleep(0.1)
    assert [int(v[0]) for v in ray.get(refs)] == [0, 1, 2, 3]
    assert trace_kinds("object.evicted")[0]["count"] == 4


def test_an_actor_on_a_killed_node_restarts_then_dies_for_good():
    ray.init(
        mode="sim",
        seed=5,
        cluster={"nodes": [{"resources": {"CPU": 2}}, {"count": 2, "resources": {"CPU": 2, "spot": 1}}]},
    )

    @ray.remote(max_restarts=1, max_task_retries=-1, resources={"spot": 1})
    class Worker:
        def __init__(self):
            self.calls = 0

        def where(self):
            self.calls += 1
            context = ray.get_runtime_context()
            return context.get_node_id(), self.calls, context.was_current_actor_reconstructed

    worker = Worker.remote()
    first_node, calls, restarted = ray.get(worker.where.remote())
    assert (calls, restarted) == (1, False)
    faults.schedule(faults.KillNode(node=first_node, at_s=time.monotonic() + 0.01))
    time.sleep(0.05)  # the node is down; the cluster learns it after the detector's timeout
    second_node, calls, restarted = ray.get(worker.where.remote())
    assert second_node != first_node and (calls, restarted) == (1, True)
    faults.schedule(faults.KillNode(node=second_node, at_s=time.monotonic() + 0.01))
    time.sleep(0.05)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(worker.where.remote())


def test_a_short_partition_delays_but_does_not_corrupt():
    def run(partition: bool) -> tuple[list[int], float]:
        ray.init(mode="sim", seed=6, cluster=nodes(3, cpus=1, failure_detector_timeout_s=10.0))
        if partition:
            faults.schedule(faults.Partition(groups=[[1], [2]], at_s=0.0, heal_at_s=3.0))
        values = ray.get([square_slowly.remote(i) for i in range(6)])
        finished = time.monotonic()
        ray.shutdown()
        return values, finished

    calm_values, calm_end = run(False)
    split_values, split_end = run(True)
    assert split_values == calm_values == [i * i for i in range(6)]
    assert split_end > calm_end


def test_a_long_partition_declares_the_node_dead_and_work_moves_on():
    ray.init(mode="sim", seed=6, cluster=nodes(3, cpus=1, failure_detector_timeout_s=1.0))
    faults.schedule(faults.Partition(groups=[[2]], at_s=0.1, heal_at_s=5.0))
    assert ray.get([square_slowly.remote(i) for i in range(6)]) == [i * i for i in range(6)]
    time.sleep(10.0)
    node_2 = next(n for n in ray.nodes() if n["NodeID"] == "node-00002")
    assert node_2["Alive"] and node_2["Incarnation"] == 2  # rejoined once reachable
    assert trace_kinds("node.declared_dead")


def test_a_lost_notification_does_not_hang_a_get_forever():
    ray.init(mode="sim", seed=7, cluster=nodes(3, cpus=1, failure_detector_timeout_s=1.0, resync_interval_s=5.0))
    faults.schedule(faults.LoseNotification(at_s=0.0), faults.KillNode(node=1, at_s=0.1))
    assert ray.get([square_slowly.remote(i) for i in range(6)]) == [i * i for i in range(6)]
    assert trace_kinds("plane.notification_lost")
    assert trace_kinds("plane.resync")
    assert time.monotonic() >= 5.0  # the death was only learnt at the resync


def test_a_delayed_notification_delays_recovery():
    ray.init(mode="sim", seed=7, cluster=nodes(2, cpus=1, failure_detector_timeout_s=1.0))
    faults.schedule(faults.DelayNotification(at_s=0.0, delay_s=3.0), faults.KillNode(node=1, at_s=0.1))
    assert ray.get([square_slowly.remote(i) for i in range(2)]) == [0, 1]
    assert time.monotonic() >= 4.1


def test_a_control_plane_restart_makes_lookups_wait():
    ray.init(mode="sim", seed=8, cluster=nodes(2))

    @ray.remote
    class Named:
        def ping(self):
            return "pong"

    named = Named.options(name="svc").remote()
    assert ray.get(named.ping.remote()) == "pong"
    faults.schedule(faults.RestartControlPlane(at_s=time.monotonic(), downtime_s=2.0))
    time.sleep(0.01)
    start = time.monotonic()
    found = ray.get_actor("svc")
    assert time.monotonic() - start == pytest.approx(2.0 - 0.01, abs=0.01)
    assert ray.get(found.ping.remote()) == "pong"


def test_a_slow_node_takes_longer():
    ray.init(mode="sim", seed=9, cluster=nodes(1), durations={"default": 1.0})
    faults.schedule(faults.SlowNode(node=0, factor=3.0, at_s=0.5, until_s=5.0))

    @ray.remote
    def step():
        return 1

    time.sleep(0.5)
    ray.get(step.remote())
    assert time.monotonic() == pytest.approx(3.5)
    time.sleep(5.0)
    start = time.monotonic()
    ray.get(step.remote())
    assert time.monotonic() - start == pytest.approx(1.0)


def test_a_restarted_node_joins_again_and_takes_work():
    ray.init(mode="sim", seed=10, cluster=nodes(2, cpus=1, failure_detector_timeout_s=0.5))
    faults.schedule(faults.KillNode(node=1, at_s=0.0), faults.RestartNode(node=1, at_s=2.0))
    time.sleep(3.0)
    node_1 = ray.nodes()[1]
    assert node_1["Alive"] and node_1["Incarnation"] == 2


    @ray.remote
    def where():
        time.sleep(1.0)
        return ray.get_runtime_context().get_node_id()

    assert set(ray.get([where.remote() for _ in range(2)])) == {"node-00000", "node-00001"}


def test_random_faults_keep_results_correct_and_runs_reproducible():
    def run() -> tuple[list[int], str]:
        ray.init(mode="sim", seed=11, cluster=nodes(4, cpus=2, failure_detector_timeout_s=0.5))
        faults.schedule(
            faults.RandomFaults(at_s=0.0, end_s=20.0, rate_per_s=1.0, kinds=("kill_worker", "kill_node", "evict"))
        )
        values = ray.get([square_slowly.options(max_retries=-1).remote(i) for i in range(24)])
        digest = detray.sim.current_cluster().trace.digest()
        ray.shutdown()
        return values, digest

    first = run()
    assert first[0] == [i * i for i in range(24)]
    assert run() == first


def test_faults_are_checked_when_scheduled():
    ray.init(mode="sim", cluster=nodes(2))
    with pytest.raises(ValueError, match="head"):
        faults.schedule(faults.KillNode(node=0, at_s=1.0))
    time.sleep(1.0)
    with pytest.raises(ValueError, match="past"):
        faults.schedule(faults.KillNode(node=1, at_s=0.5))
    with pytest.raises(ValueError, match="no node"):
        faults.schedule(faults.KillNode(node=7, at_s=2.0))
    with pytest.raises(ValueError, match="fraction"):
        faults.schedule(faults.EvictCopies(node=1, fraction=2.0, at_s=2.0))


def test_faults_can_be_given_to_init():
    ray.init(mode="sim", seed=1, cluster=nodes(1, cpus=2), faults=[faults.KillWorker(node=0, at_s=0.5)])
    assert ray.get(square_slowly.remote(3)) == 9
    assert [e["attempt"] for e in trace_kinds("task.started")] == [1, 2]


def test_rebuilding_an_object_also_rebuilds_its_freed_arguments():
    ray.init(mode="sim", seed=12, cluster=nodes(2, cpus=1))

    @ray.remote
    def combine(part):
        return int(part[0]) + 1

    part = block_of.remote(41)
    total = combine.options(scheduling_strategy=Affinity("node-00001", soft=True)).remote(part)
    del part
    ray.wait([total], fetch_local=False)
    time.sleep(0.1)  # the argument's last use is over: its value is freed, its lineage kept
    faults.schedule(faults.KillNode(node=1, at_s=time.monotonic()))
    time.sleep(2.0)
    assert ray.get(total) == 42


def test_a_bad_fault_given_to_init_leaves_nothing_running() -> None:
    with pytest.raises(ValueError, match="cannot be killed"):
        ray.init(mode="sim", seed=0, cluster={"nodes": [{"count": 2}]}, faults=[faults.KillNode(at_s=0.1, node=0)])
    assert not ray.is_initialized()
    ray.init(mode="sim", seed=0)  # and the next init works
    ray.shutdown()
