"""A loaded scenario and how it maps onto the simulator's own terms.

Owns: ``Scenario`` (what ``load.py`` produces from a valid file), its
``FaultEntry`` and ``Expectations``, the translation of scenario durations
into the engine's duration specs, and the expansion of fault entries into
``detray.sim.faults`` objects for one seed. Must not: read files, validate
(``load.py`` did; everything here assumes a valid document) or run anything.

Fault entries become engine faults in file order (that order numbers them,
and the engine keys each fault's random stream by that number):

- ``at_s``: one fault at that time;
- ``every_s``: one fault at ``at_s`` (default ``every_s``), then every
  ``every_s``, while ``<= until_s`` and at most ``count`` times;
- ``rate_per_s``: one ``RandomFaults`` (the engine draws the times, and the
  node among live nodes other than the head, when each fault happens).

A ``random`` node of a one-time or periodic fault is drawn here, from the
stream ``(seed, "scenario_fault", entry, occurrence)``, among the nodes other
than the head: the same seed always picks the same nodes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detray.sim import faults as F
from detray.sim import streams

RANDOM = "random"


@dataclass(frozen=True, slots=True)
class NodeGroup:
    """One entry of ``cluster.nodes``: nodes ``first .. first + count - 1``."""

    first: int
    count: int
    name: str
    resources: Mapping[str, float]

    @property
    def label(self) -> str:
        span = f"{self.first}" if self.count == 1 else f"{self.first}-{self.first + self.count - 1}"
        return f"{span} ({self.name})" if self.name else span


@dataclass(frozen=True, slots=True)
class FaultEntry:
    """One validated entry of ``faults``: a timing and exactly one action with its value."""

    index: int
    line: int
    action: str
    value: Any
    at_s: float | None = None
    every_s: float | None = None
    rate_per_s: float | None = None
    until_s: float | None = None
    count: int | None = None
    heal_at_s: float | None = None
    restart_after_s: float | None = None

    def occurrence_times(self, count_default: int) -> list[float]:
        """When a one-time or periodic entry fires (empty for a rate-based one)."""
        if self.rate_per_s is not None:
            return []
        if self.every_s is None:
            assert self.at_s is not None
            return [self.at_s]
        start = self.every_s if self.at_s is None else self.at_s
        times = []
        for k in range(self.count if self.count is not None else count_default):
            t = start + k * self.every_s
            if self.until_s is not None and t > self.until_s:
                break
            times.append(t)
        return times


@dataclass(frozen=True, slots=True)
class Expectations:
    """``expect``: what must hold at the end of the run."""

    exit: str | int = "ok"
    max_makespan_s: float | None = None
    bounds: Mapping[str, tuple[int | None, int | None]] = field(default_factory=dict)
    """``tasks_finished``/``task_retries``/... -> (min, max), either may be None."""
    output_contains: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Scenario:
    """A scenario file, validated, in the simulator's terms."""

    path: Path
    name: str
    seed: int
    cluster: Mapping[str, Any]
    """The ``cluster`` dict ``detray.init(mode="sim", cluster=...)`` takes."""
    node_groups: tuple[NodeGroup, ...]
    script: Path
    """The program file; for a ``function`` workload, the scenario file (its directory is
    where the module is looked for)."""
    args: tuple[str, ...]
    durations: Mapping[str, Any]
    """Duration specs by function name, in the scenario form the engine reads (``detray.sim.durations``)."""
    fault_entries: tuple[FaultEntry, ...]
    expect: Expectations
    function: str | None = None
    """``module:function`` when the workload is a function (``detray.testing`` replays)."""

    @property
    def node_count(self) -> int:
        return sum(group.count for group in self.node_groups)

    def faults(self, seed: int) -> list[F.Fault]:
        """The engine faults of this scenario for run ``seed``, in scheduling order."""
        built: list[F.Fault] = []
        for entry in self.fault_entries:
            built.extend(_expand(entry, seed, self.node_count))
        return built


# --- faults ------------------------------------------------------------------------------------------


def _expand(entry: FaultEntry, seed: int, node_count: int) -> list[F.Fault]:
    from detray.scenario.schema import RATE_ACTIONS, REPEAT_DEFAULT

    if entry.rate_per_s is not None:
        value = entry.value
        return [
            F.RandomFaults(
                at_s=entry.at_s or 0.0,
                rate_per_s=entry.rate_per_s,
                end_s=math.inf if entry.until_s is None else entry.until_s,
                kinds=(RATE_ACTIONS[entry.action],),
                max_faults=entry.count if entry.count is not None else REPEAT_DEFAULT,
                restart_after_s=entry.restart_after_s,
                evict_fraction=float(value["fraction"]) if entry.action == "evict_objects" else 0.5,
                slow_factor=float(value["factor"]) if entry.action == "slow_node" else 4.0,
            )
        ]
    built: list[F.Fault] = []
    for occurrence, at_s in enumerate(entry.occurrence_times(REPEAT_DEFAULT)):
        draw = _NodeDraw(seed, entry.index, occurrence, node_count)
        built.extend(_one(entry, at_s, draw))
    return built


class _NodeDraw:
    """Resolves ``random`` for one occurrence: a node other than the head, from the seed."""

    def __init__(self, seed: int, entry: int, occurrence: int, node_count: int) -> None:
        self._key = (seed, entry, occurrence)
        self._node_count = node_count
        self._chosen: int | None = None

    def __call__(self, ref: Any) -> int:
        if ref != RANDOM:
            return int(ref)
        if self._chosen is None:
            seed, entry, occurrence = self._key
            rng = streams.stream(seed, "scenario_fault", entry, occurrence)
            self._chosen = rng.randrange(1, self._node_count)
        return self._chosen


def _one(entry: FaultEntry, at_s: float, node: _NodeDraw) -> list[F.Fault]:
    action, value = entry.action, entry.value
    if action == "kill_node":
        target = node(value)
        built: list[F.Fault] = [F.KillNode(at_s=at_s, node=target)]
        if entry.restart_after_s is not None:
            built.append(F.RestartNode(at_s=at_s + entry.restart_after_s, node=target))
        return built
    if action == "restart_node":
        return [F.RestartNode(at_s=at_s, node=int(value))]
    if action == "kill_worker":
        # `random`: any worker running a task anywhere, drawn when the fault happens (a node
        # drawn up front may have nothing running by then).
        ref = value["node"] if isinstance(value, Mapping) else value
        victim_node = None if ref == RANDOM else int(ref)
        task_name = value.get("task_name") if isinstance(value, Mapping) else None
        return [F.KillWorker(at_s=at_s, node=victim_node, task_name=task_name)]
    if action == "partition":
        groups = tuple(tuple(int(n) for n in group) for group in value)
        return [F.Partition(at_s=at_s, groups=groups, heal_at_s=entry.heal_at_s)]
    if action == "heal":
        return [F.Heal(at_s=at_s)]
    if action == "evict_objects":
        return [F.EvictCopies(at_s=at_s, node=node(value["node"]), fraction=float(value["fraction"]))]
    if action == "slow_node":
        until = value.get("until_s")
        return [
            F.SlowNode(
                at_s=at_s,
                node=node(value["node"]),
                factor=float(value["factor"]),
                until_s=None if until is None else float(until),
            )
        ]
    if action == "lose_notifications":
        return [F.LoseNotification(at_s=at_s, count=int(value))]
    if action == "delay_notifications":
        return [F.DelayNotification(at_s=at_s, delay_s=float(value["delay_s"]), count=int(value.get("count", 1)))]
    if action == "restart_control_plane":
        return [F.RestartControlPlane(at_s=at_s, downtime_s=float(value.get("downtime_s", 0.5)))]
    raise AssertionError(f"unvalidated fault action {action!r}")


def expanded_count(entry: FaultEntry, count_default: int) -> int:
    """How many engine faults an entry schedules (a bound for ``FAULTS_EXPANDED_MAX``)."""
    if entry.rate_per_s is not None:
        return 1
    per = 2 if entry.action == "kill_node" and entry.restart_after_s is not None else 1
    return per * len(entry.occurrence_times(count_default))


def node_refs(action: str, value: Any) -> list[tuple[tuple[Any, ...], Any]]:
    """``(sub-path, ref)`` of every node an action names (sub-path below the action key)."""
    if action in ("kill_node", "restart_node"):
        return [((), value)]
    if action == "kill_worker":
        return [(("node",), value["node"])] if isinstance(value, Mapping) else [((), value)]
    if action in ("evict_objects", "slow_node"):
        return [(("node",), value["node"])]
    if action == "partition":
        return [((g, i), ref) for g, group in enumerate(value) for i, ref in enumerate(group)]
    return []


def as_args(values: Sequence[Any]) -> tuple[str, ...]:
    """Workload arguments as strings (``256`` -> ``"256"``; a float keeps its YAML spelling's value)."""
    return tuple(v if isinstance(v, str) else repr(v) if isinstance(v, float) else str(v) for v in values)
