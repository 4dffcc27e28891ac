"""The exception a user catches for each failure the simulator can produce that is
not a task's own exception: the class Ray documents for it, and a message that
names what failed and where."""

from __future__ import annotations

import time

import numpy as np
import pytest

import detray as ray
from detray.sim import faults
from detray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity


def two_nodes(**extra: object) -> dict:
    return {"nodes": [{"count": 2, "resources": {"CPU": 2}, **extra}]}


@ray.remote
def slow(i):
    time.sleep(1.0)
    return i


@ray.remote(num_cpus=1)
class Holder:
    def value(self):
        return 1


def test_a_hard_affinity_to_an_unknown_node_is_task_unschedulable():
    ray.init(mode="sim", seed=0, cluster=two_nodes())
    with pytest.raises(ray.exceptions.TaskUnschedulableError, match="hard node affinity to nowhere"):
        ray.get(slow.options(scheduling_strategy=Affinity("nowhere", soft=False)).remote(1))


def test_a_hard_affinity_to_a_dead_node_is_task_unschedulable_and_a_soft_one_runs_elsewhere():
    ray.init(mode="sim", seed=0, cluster=two_nodes())
    faults.schedule(faults.KillNode(node=1, at_s=0.0))
    time.sleep(2.0)  # past the failure detector's timeout: the node is known dead
    with pytest.raises(ray.exceptions.TaskUnschedulableError, match="node-00001"):
        ray.get(slow.options(scheduling_strategy=Affinity("node-00001", soft=False)).remote(1))
    soft = slow.options(scheduling_strategy=Affinity("node-00001", soft=True)).remote(2)
    assert ray.get(soft) == 2


def test_a_task_whose_node_dies_without_retries_raises_node_died():
    ray.init(mode="sim", seed=1, cluster=two_nodes())
    faults.schedule(faults.KillNode(node=1, at_s=0.5))
    ref = slow.options(max_retries=0, scheduling_strategy=Affinity("node-00001", soft=False)).remote(1)
    with pytest.raises(ray.exceptions.NodeDiedError, match="node-00001 died") as caught:
        ray.get(ref)
    assert not isinstance(caught.value, ray.exceptions.WorkerCrashedError)


def test_an_actor_with_a_hard_affinity_to_a_dead_node_is_actor_unschedulable():
    ray.init(mode="sim", seed=0, cluster=two_nodes())
    faults.schedule(faults.KillNode(node=1, at_s=0.0))
    time.sleep(2.0)
    holder = Holder.options(scheduling_strategy=Affinity("node-00001", soft=False)).remote()
    with pytest.raises(ray.exceptions.ActorUnschedulableError, match="node-00001"):
        ray.get(holder.value.remote())


def test_a_put_larger_than_the_store_raises_object_store_full_naming_the_sizes():
    ray.init(mode="sim", seed=0, cluster=two_nodes(object_store_mb=1))
    with pytest.raises(ray.exceptions.ObjectStoreFullError, match="larger than the object store") as caught:
        ray.get(ray.put(np.zeros(2_000_000, dtype=np.uint8)))
    assert "1048576" in str(caught.value)


def test_a_task_result_larger_than_the_store_raises_object_store_full_at_get():
    @ray.remote
    def big():
        return np.zeros(2_000_000, dtype=np.uint8)

    ray.init(mode="sim", seed=0, cluster=two_nodes(object_store_mb=1))
    with pytest.raises(ray.exceptions.ObjectStoreFullError):
        ray.get(big.remote())
