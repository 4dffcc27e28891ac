"""Hypothesis strategies: what they draw fits the cluster, the engine accepts it, and
failures shrink to the smallest schedule."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

import detray
import detray.testing as dt
from detray.sim import faults as F
from detray.testing import strategies as ds

FIXED = {"nodes": [{"count": 1, "resources": {"CPU": 2}}, {"count": 5, "resources": {"CPU": 2}}]}


@detray.remote
def tick(i: int) -> int:
    import time

    time.sleep(0.01)
    return i


def small_program() -> int:
    return sum(detray.get([tick.remote(i) for i in range(8)]))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(ds.scenarios(max_nodes=5, horizon_s=0.1, max_faults=4))
def test_every_drawn_schedule_is_accepted_and_the_run_ends_explained(scenario: ds.Scenario) -> None:
    outcome = dt.run(small_program, **scenario.run_kwargs())  # invariants checked every step
    if outcome.error is None:
        assert outcome.result == sum(range(8))
    else:
        assert dt.explain(outcome) is not None, outcome.error


@given(st.data())
def test_drawn_faults_name_nodes_of_the_cluster_and_never_kill_the_head(data: st.DataObject) -> None:
    cluster = data.draw(ds.clusters(min_nodes=1, max_nodes=6))
    nodes = ds.node_count(cluster)
    for fault in data.draw(ds.fault_schedules(cluster, horizon_s=2.0)):
        assert 0.0 <= fault.at_s <= 2.0
        if hasattr(fault, "node"):
            ref = getattr(fault, "node")
            if ref is not None:
                assert 0 <= ref < nodes
            else:
                assert isinstance(fault, F.KillWorker), f"{fault}: only a worker kill may leave its node open"
        if isinstance(fault, (F.KillNode, F.RestartNode)):
            assert fault.node != 0
        if isinstance(fault, F.Partition):
            assert all(0 < n < nodes for group in fault.groups for n in group)


@given(ds.fault_schedules(FIXED, horizon_s=1.0), ds.seeds())
def test_a_schedule_written_as_a_scenario_keeps_every_fault(schedule: list[F.Fault], seed: int) -> None:
    document = yaml.safe_load(dt.scenario_yaml(cluster=FIXED, faults=schedule, seed=seed))
    assert document["seed"] == seed and document["cluster"] == FIXED
    assert len(document["faults"]) == len(schedule)
    for entry, fault in zip(document["faults"], schedule):
        assert entry["at_s"] == fault.at_s


def test_a_schedule_shrinks_to_one_fault_at_the_earliest_time_on_the_first_node() -> None:
    minimal = find(
        ds.fault_schedules(FIXED, horizon_s=5.0),
        lambda schedule: any(isinstance(f, F.KillNode) for f in schedule),
        settings=settings(database=None, max_examples=500),
    )
    assert minimal == [F.KillNode(at_s=0.0, node=1)]


def test_a_cluster_shrinks_to_the_fewest_nodes_that_still_fail() -> None:
    minimal = find(
        ds.clusters(min_nodes=1, max_nodes=20),
        lambda cluster: ds.node_count(cluster) >= 3,
        settings=settings(database=None, max_examples=500),
    )
    assert ds.node_count(minimal) == 3
    assert minimal["nodes"][1]["resources"] == {"CPU": 1}
