"""Hypothesis strategies for fault-injection tests: clusters, fault schedules, seeds.

Owns: ``clusters()``, ``fault_schedules(cluster, horizon_s=...)``,
``faults(cluster, ...)`` (one fault), ``seeds()`` and ``scenarios()`` (all
three together). Every fault kind of ``detray.sim.faults`` can be drawn.
Must not: run anything.

Built to shrink well: a schedule is a list (Hypothesis drops elements first,
so a failure shrinks to the fewest faults), times are drawn from 0 upwards
(they shrink to the earliest), node counts and node indices from the
smallest (the smallest cluster; node 1 before node 7), and every choice that
depends on the cluster is drawn after it inside one ``composite``, so a
smaller cluster is tried with the faults redrawn to fit it. The head node
(0) is never killed or restarted: it runs the driver.

Compose with your own strategies::

    from hypothesis import given
    from detray.testing import strategies as ds

    @given(ds.scenarios(max_nodes=20, horizon_s=5.0))
    def test_survives(scenario):
        outcome = detray.testing.run(main, **scenario.run_kwargs())
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from detray.sim import faults as F

ALL_KINDS: tuple[str, ...] = (
    "kill_node",
    "restart_node",
    "kill_worker",
    "partition",
    "evict_objects",
    "slow_node",
    "lose_notifications",
    "delay_notifications",
    "restart_control_plane",
    "random_faults",
)
"""Every fault kind a schedule may hold (scenario-file names)."""
NODE_KINDS = frozenset({"kill_node", "restart_node", "partition", "random_faults"})
"""Kinds that need a node other than the head."""


def node_count(cluster: Mapping[str, Any]) -> int:
    """Nodes in a ``cluster`` description (counts expanded)."""
    return sum(int(group.get("count", 1)) for group in cluster["nodes"])


@st.composite
def clusters(
    draw: st.DrawFn,
    *,
    min_nodes: int = 1,
    max_nodes: int = 8,
    cpus: st.SearchStrategy[int] = st.integers(1, 8),
    gpus: st.SearchStrategy[int] = st.just(0),
    object_store_mb: st.SearchStrategy[int] | None = None,
    head_cpus: int | None = None,
) -> dict[str, Any]:
    """A cluster description for ``detray.init(mode="sim", cluster=...)``: a head node and
    ``min_nodes - 1`` to ``max_nodes - 1`` workers of one drawn shape (shrinks to
    ``min_nodes`` nodes and to the smallest resources)."""
    if not 1 <= min_nodes <= max_nodes:
        raise ValueError(f"clusters(): need 1 <= min_nodes <= max_nodes, got {min_nodes}, {max_nodes}")
    count = draw(st.integers(min_nodes, max_nodes))
    head: dict[str, Any] = {"count": 1, "name": "head", "resources": {"CPU": head_cpus if head_cpus is not None else draw(cpus)}}
    nodes = [head]
    if count > 1:
        resources: dict[str, Any] = {"CPU": draw(cpus)}
        gpu = draw(gpus)
        if gpu:
            resources["GPU"] = gpu
        workers: dict[str, Any] = {"count": count - 1, "resources": resources}
        if object_store_mb is not None:
            workers["object_store_mb"] = draw(object_store_mb)
        nodes.append(workers)
    return {"nodes": nodes}


def _times(horizon_s: float) -> st.SearchStrategy[float]:
    # Milliseconds as integers: shrink to 0 cleanly and print short.
    return st.integers(0, max(0, int(horizon_s * 1000))).map(lambda ms: ms / 1000)


@st.composite
def faults(
    draw: st.DrawFn,
    cluster: Mapping[str, Any],
    *,
    horizon_s: float = 10.0,
    kinds: Sequence[str] = ALL_KINDS,
) -> F.Fault:
    """One fault of a kind in ``kinds``, at a time within ``[0, horizon_s]``, on a node of
    ``cluster``."""
    nodes = node_count(cluster)
    usable = [k for k in kinds if nodes > 1 or k not in NODE_KINDS]
    unknown = sorted(set(kinds) - set(ALL_KINDS))
    if unknown:
        raise ValueError(f"faults(): unknown kinds {unknown}; choose among {list(ALL_KINDS)}")
    if not usable:
        raise ValueError(f"faults(): none of {list(kinds)} fits a cluster of {nodes} node(s)")
    kind = draw(st.sampled_from(usable))
    at_s = draw(_times(horizon_s))
    any_node = st.integers(0, nodes - 1)
    other_node = st.integers(1, max(1, nodes - 1))
    if kind == "kill_node":
        return F.KillNode(at_s=at_s, node=draw(other_node))
    if kind == "restart_node":
        return F.RestartNode(at_s=at_s, node=draw(other_node))
    if kind == "kill_worker":
        # None: any worker running a task, wherever it is when the fault happens.
        return F.KillWorker(at_s=at_s, node=draw(any_node | st.none()))
    if kind == "partition":
        cut = sorted(draw(st.sets(other_node, min_size=1, max_size=nodes - 1)))
        heal = draw(st.none() | _times(horizon_s).map(lambda t: at_s + t))
        return F.Partition(at_s=at_s, groups=[cut], heal_at_s=heal)
    if kind == "evict_objects":
        fraction = draw(st.integers(1, 100)) / 100
        return F.EvictCopies(at_s=at_s, node=draw(any_node), fraction=fraction)
    if kind == "slow_node":
        factor = draw(st.integers(2, 10))
        return F.SlowNode(at_s=at_s, node=draw(any_node), factor=float(factor))
    if kind == "lose_notifications":
        return F.LoseNotification(at_s=at_s, count=draw(st.integers(1, 3)))
    if kind == "delay_notifications":
        delay = draw(st.integers(1, 5000)) / 1000
        return F.DelayNotification(at_s=at_s, delay_s=delay, count=draw(st.integers(1, 3)))
    if kind == "restart_control_plane":
        downtime = draw(st.integers(1, 2000)) / 1000
        return F.RestartControlPlane(at_s=at_s, downtime_s=downtime)
    assert kind == "random_faults", kind
    what = draw(st.sampled_from(("kill_worker", "kill_node", "evict", "slow_node")))
    rate = draw(st.integers(1, 20)) / 2
    return F.RandomFaults(
        at_s=at_s, rate_per_s=rate, end_s=at_s + draw(_times(horizon_s)), kinds=(what,), max_faults=draw(st.integers(1, 10))
    )


def fault_schedules(
    cluster: Mapping[str, Any],
    *,
    horizon_s: float = 10.0,
    kinds: Sequence[str] = ALL_KINDS,
    max_faults: int = 5,
) -> st.SearchStrategy[list[F.Fault]]:
    """A list of 0 to ``max_faults`` faults within ``[0, horizon_s]`` (shrinks to fewer,
    earlier faults)."""
    return st.lists(faults(cluster, horizon_s=horizon_s, kinds=kinds), max_size=max_faults)


def seeds() -> st.SearchStrategy[int]:
    """A simulation seed (shrinks to 0)."""
    return st.integers(0, 2**32 - 1)


@dataclass(frozen=True)
class Scenario:
    """A cluster, a fault schedule and a seed, drawn together."""

    cluster: dict[str, Any]
    faults: list[F.Fault] = field(default_factory=list)
    seed: int = 0

    def run_kwargs(self) -> dict[str, Any]:
        """Keywords for ``detray.testing.run``."""
        return {"cluster": self.cluster, "faults": self.faults, "seed": self.seed}

    def __repr__(self) -> str:
        from detray.testing.replay import scenario_yaml

        return "Scenario, as a scenario file:\n" + scenario_yaml(
            cluster=self.cluster, faults=self.faults, seed=self.seed
        )


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    cluster: Mapping[str, Any] | st.SearchStrategy[dict[str, Any]] | None = None,
    min_nodes: int = 1,
    max_nodes: int = 8,
    horizon_s: float = 10.0,
    kinds: Sequence[str] = ALL_KINDS,
    max_faults: int = 5,
) -> Scenario:
    """A ``Scenario``: ``cluster`` (a fixed description, a strategy, or drawn by
    ``clusters(min_nodes, max_nodes)``), a schedule fitting it, and a seed."""
    if cluster is None:
        shape = draw(clusters(min_nodes=min_nodes, max_nodes=max_nodes))
    elif isinstance(cluster, st.SearchStrategy):
        shape = draw(cluster)
    else:
        shape = dict(cluster)
    schedule = draw(fault_schedules(shape, horizon_s=horizon_s, kinds=kinds, max_faults=max_faults))
    return Scenario(cluster=shape, faults=schedule, seed=draw(seeds()))
