"""The simulator's control plane (fakeredis, same layout as production): functions once,
nodes, actors and names; nothing per task on the hot path."""

from __future__ import annotations

import time

import detray as ray
import detray.sim
from detray.sim import faults


@ray.remote
def work(i):
    return i


def plane():
    return detray.sim.current_cluster().plane


def test_a_function_is_registered_once_however_often_it_runs():
    ray.init(mode="sim")
    ray.get([work.remote(i) for i in range(20)])
    keys = sorted(k.decode() for k in plane().client.keys("*:fn:*"))
    assert len(keys) == 1 and "work" in keys[0]
    assert plane().get_function(keys[0].split(":fn:")[1].replace("%3A", ":")) is not None


def test_no_control_plane_commands_per_task():
    ray.init(mode="sim", cluster={"nodes": [{"count": 2, "resources": {"CPU": 2}}]})
    ray.get(work.remote(0))  # registers the function
    client = plane().client
    calls = []
    original = client.execute_command

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    client.execute_command = counting
    try:
        ray.get([work.remote(i) for i in range(200)])
    finally:
        client.execute_command = original
    assert calls == []
    assert not client.keys("*:task:*")


def test_the_node_table_follows_membership():
    ray.init(mode="sim", cluster={"nodes": [{"count": 3, "resources": {"CPU": 1}}], "failure_detector_timeout_s": 0.5})
    records = {r.node_id: r for r in plane().get_nodes()}
    assert sorted(records) == ["node-00000", "node-00001", "node-00002"]
    assert all(r.state == "ALIVE" and r.incarnation == 1 for r in records.values())
    faults.schedule(faults.KillNode(node=2, at_s=0.0))
    time.sleep(1.0)
    assert plane().get_node("node-00002").state == "DEAD"


def test_the_actor_table_and_names_follow_actors():
    ray.init(mode="sim")

    @ray.remote
    class Named:
        def ping(self):
            return 1

    named = Named.options(name="n1").remote()
    ray.get(named.ping.remote())
    record = plane().get_actor(named.actor_id)
    assert record.state == "ALIVE" and record.name == "n1"
    assert plane().lookup_actor_name("default", "n1") == named.actor_id
    ray.kill(named)
    time.sleep(0.01)
    assert plane().get_actor(named.actor_id).state == "DEAD"
    assert plane().lookup_actor_name("default", "n1") is None
