"""Pull admission control on the simulator: a task whose argument does not fit beside
the arguments other queued tasks hold waits for room (as Ray's pull manager does)
instead of failing with ObjectStoreFullError; an argument that can never fit fails at
once, naming the sizes.

The first two tests are the reproducers that found the gap; the values are Ray's.
"""

from __future__ import annotations

import numpy as np
import pytest

import detray as ray
import detray.sim
from detray.sim import DeadlockError
from detray.util.scheduling_strategies import NodeAffinitySchedulingStrategy as Affinity

MIB = 2**20


@ray.remote
def produce(i):
    return np.full(6 * MIB // 8, float(i))  # 6 MiB: two do not fit in a 10 MiB store


@ray.remote
def consume(block):
    return float(block.sum())


def test_three_results_spilled_on_one_node_reach_three_consumers():
    ray.init(mode="sim", seed=0, cluster={"nodes": [{"resources": {"CPU": 1}, "object_store_mb": 10}]})
    blocks = [produce.remote(i) for i in range(3)]
    assert ray.get([consume.remote(b) for b in blocks]) == [0.0, 786432.0, 1572864.0]
    directory = detray.sim.current_cluster().router.directory
    assert directory.stats["fetches_waiting_for_room"] >= 1  # the case did arise
    assert directory.stats["fetches_refused"] == 0


def test_three_blocks_pulled_to_a_small_node_one_after_another():
    ray.init(
        mode="sim",
        seed=0,
        cluster={
            "nodes": [
                {"resources": {"CPU": 1}},
                {"resources": {"CPU": 4}, "object_store_mb": 100},
                {"resources": {"CPU": 1}, "object_store_mb": 10},
            ]
        },
    )
    maker = Affinity("node-00001", soft=False)
    blocks = [produce.options(scheduling_strategy=maker).remote(i) for i in range(3)]
    ray.wait(blocks, num_returns=3, fetch_local=False)
    there = Affinity("node-00002", soft=False)
    assert ray.get([consume.options(scheduling_strategy=there).remote(b) for b in blocks]) == [
        0.0,
        786432.0,
        1572864.0,
    ]
    directory = detray.sim.current_cluster().router.directory
    assert directory.stats["fetches_waiting_for_room"] >= 1
    assert directory.pinned_bytes("node-00002") == 0  # every attempt left: nothing held


@ray.remote
def produce_big():
    return np.zeros(12 * MIB // 8)  # 12 MiB: larger than a 10 MiB store


def test_an_argument_larger_than_the_store_fails_at_once_naming_the_sizes():
    ray.init(
        mode="sim",
        seed=0,
        cluster={
            "nodes": [
                {"resources": {"CPU": 1}, "object_store_mb": 100},
                {"resources": {"CPU": 1, "small": 1}, "object_store_mb": 10},
            ]
        },
    )
    big = produce_big.options(scheduling_strategy=Affinity("node-00000", soft=False)).remote()
    ray.wait([big], fetch_local=False)
    ref = consume.options(resources={"small": 1}).remote(big)
    with pytest.raises(ray.exceptions.ObjectStoreFullError) as caught:
        ray.get(ref)
    text = str(caught.value)
    assert "larger than the object store" in text and "10485760" in text
    assert "spilling is not available" not in text


@ray.remote
def child(block):
    return float(block.sum())


@ray.remote
def parent(block, boxed):
    return float(block.sum()) + ray.get(child.remote(boxed[0]))


def test_a_task_blocked_on_a_child_whose_argument_cannot_fit_beside_its_own_is_a_reported_deadlock():
    """The hazard Ray has too (its pull manager warns the job "may hang"): the parent's
    6 MiB argument stays held while it runs, the child's 6 MiB argument cannot fit
    beside it in 10 MiB, and the parent waits for the child. The simulator stops and
    says why instead of hanging."""
    ray.init(mode="sim", seed=0, cluster={"nodes": [{"resources": {"CPU": 2}, "object_store_mb": 10}]})
    x, y = produce.remote(1), produce.remote(2)
    ray.wait([x, y], num_returns=2, fetch_local=False)
    with pytest.raises(DeadlockError) as raised:
        ray.get(parent.remote(x, [y]))
    text = str(raised.value)
    assert "waits for room in the object store of node-00000" in text
    assert "6291577 bytes" in text and "10485760 bytes" in text
