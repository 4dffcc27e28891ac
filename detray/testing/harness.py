"""Run a program on a simulated cluster under a fault schedule and keep what a test checks.

Owns: ``run(program, cluster=..., faults=..., seed=...) -> Outcome``: start a
simulation (invariants checked after every step), call ``program()``, keep
its result or exception, every value a ``get`` returned anywhere in the run
(by object id, as stored bytes), the faults injected and the recovery paths
that ran, then shut the simulation down. Must not: judge the outcome (that
is ``oracle.py``) or print.

Object ids are derived from the submitter and a counter, so the same program
creates the same ids in every run, and a rebuilt object keeps its id: two
runs of one program can be compared object by object.
"""

from __future__ import annotations

import time as _time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from detray import runtime as _runtime_mod
from detray.core.ids import ObjectID

DEFAULT_CLUSTER: dict[str, Any] = {"nodes": [{"count": 1, "resources": {"CPU": 4}}]}
DEFAULT_MAX_VIRTUAL_TIME_S = 3600.0
"""A test run that has not ended after an hour of virtual time is stuck."""

RECOVERY_STATS: dict[str, tuple[str, ...]] = {
    "task retries": ("tasks:retries_",),
    "reconstructions (lineage)": ("tasks:reconstructions",),
    "actor restarts": ("actors:restarts",),
    "actors dead after their restarts": ("actors:restarts_exhausted",),
    "objects spilled": ("directory:spills",),
    "objects restored from spill": ("directory:restores",),
    "argument refetches": ("directory:refetches",),
    "pull failures retried": ("directory:pull_failures",),
    "stale events dropped": (
        "tasks:stale_", "actors:stale_", "directory:stale_", "router:stale_", "scheduler:stale_",
        "tasks:superseded_",
    ),
}
"""Recovery paths a team wants its tests to reach, and the core counters that show them
(a key ending in ``_`` sums every counter it prefixes)."""

FAULT_KINDS = (
    "KillNode", "RestartNode", "KillWorker", "Partition", "EvictCopies", "SlowNode",
    "LoseNotification", "DelayNotification", "RestartControlPlane",
)


@dataclass
class Outcome:
    """What one run did."""

    result: Any
    """``program()``'s return value (None when it raised)."""
    error: BaseException | None
    values: dict[ObjectID, Any]
    """Every object a ``get`` returned, anywhere in the run: its stored value (None when
    the bytes were gone), first read only."""
    cluster: Mapping[str, Any]
    faults: tuple[Any, ...]
    seed: int
    faults_injected: Counter[str] = field(default_factory=Counter)
    """Fault kinds carried out (random faults counted as the kinds they drew)."""
    recovery: Counter[str] = field(default_factory=Counter)
    """``RECOVERY_STATS`` names -> how often that path ran."""
    stats: dict[str, int] = field(default_factory=dict)
    """Every counter of the core machines and the simulator, ``machine:name``."""
    makespan_s: float = 0.0
    wall_s: float = 0.0
    trace_digest: str = ""
    actors_dead_after_restarts: int = 0
    rebuildable: set[ObjectID] = field(default_factory=set)
    """Of the object the run's error names (if any): those that had lineage at the end."""


def run(
    program: Callable[[], Any],
    *,
    cluster: Mapping[str, Any] | None = None,
    faults: Sequence[Any] = (),
    seed: int = 0,
    durations: Mapping[str, Any] | None = None,
    check_invariants: bool = True,
    max_virtual_time_s: float = DEFAULT_MAX_VIRTUAL_TIME_S,
) -> Outcome:
    """Run ``program()`` (which uses the detray API and does not call ``init``) once on
    a simulated ``cluster`` with ``faults`` scheduled, and return what happened."""
    import detray
    import detray.sim
    from detray.sim.runtime import SimRuntime

    if detray.is_initialized():
        raise RuntimeError(
            "detray.testing.run starts its own simulated cluster: call detray.shutdown() first"
        )
    shape = dict(cluster) if cluster is not None else dict(DEFAULT_CLUSTER)
    extra: dict[str, Any] = {
        "check_invariants": check_invariants,
        "max_virtual_time_s": max_virtual_time_s,
    }
    if durations:
        extra["durations"] = dict(durations)
    started = _time.perf_counter()
    detray.init(mode="sim", seed=seed, cluster=shape, faults=list(faults), **extra)
    runtime = _runtime_mod.current()
    assert isinstance(runtime, SimRuntime), runtime
    values: dict[ObjectID, Any] = {}

    def observe(obj: ObjectID, stored: Any) -> None:
        if obj not in values:
            values[obj] = stored

    runtime.get_observer = observe
    result: Any = None
    error: BaseException | None = None
    try:
        result = program()
    except Exception as exc:  # the program's own failure is part of the outcome
        error = exc
    cluster_obj = runtime.cluster
    outcome = Outcome(
        result=result,
        error=error,
        values=values,
        cluster=shape,
        faults=tuple(faults),
        seed=seed,
        makespan_s=float(cluster_obj.now()),
    )
    try:
        _collect(outcome, cluster_obj)
    finally:
        runtime.get_observer = None
        detray.shutdown()
    outcome.wall_s = _time.perf_counter() - started
    record_coverage(outcome.faults_injected, outcome.recovery)
    return outcome


def collect_stats(cluster: Any) -> dict[str, int]:
    """Every counter of the core machines and the simulator, as ``machine:name``."""
    router = cluster.router
    stats: dict[str, int] = {}
    machines: list[tuple[str, Any]] = [
        ("tasks", router.tasks.stats),
        ("actors", router.actors.stats),
        ("directory", router.directory.stats),
        ("router", router.stats),
        ("sim", cluster.stats),
    ]
    machines += [("scheduler", s.stats) for s in router.schedulers.values()]
    for prefix, counter in machines:
        for name, value in counter.items():
            key = f"{prefix}:{name}"
            stats[key] = stats.get(key, 0) + int(value)
    return dict(sorted(stats.items()))


def faults_injected(stats: Mapping[str, int]) -> Counter[str]:
    """Fault kinds carried out, from ``collect_stats``."""
    prefix = "sim:fault."
    return Counter({name[len(prefix):]: value for name, value in stats.items() if name.startswith(prefix)})


def _collect(outcome: Outcome, cluster: Any) -> None:
    router = cluster.router
    stats = collect_stats(cluster)
    outcome.stats = stats
    outcome.faults_injected = faults_injected(stats)
    outcome.recovery = recovery_counts(stats)
    outcome.actors_dead_after_restarts = stats.get("actors:restarts_exhausted", 0)
    outcome.trace_digest = cluster.trace.digest()
    error = outcome.error
    cause = getattr(error, "cause", None)
    for candidate in (error, cause):
        obj = getattr(candidate, "object_ref_hex", None)
        if isinstance(obj, str) and router.tasks.rebuildable(ObjectID(obj)):
            outcome.rebuildable.add(ObjectID(obj))


def recovery_counts(stats: Mapping[str, int]) -> Counter[str]:
    """``RECOVERY_STATS`` names -> totals, from ``machine:name`` counters."""
    out: Counter[str] = Counter()
    for label, keys in RECOVERY_STATS.items():
        total = 0
        for key in keys:
            if key.endswith("_"):
                total += sum(v for name, v in stats.items() if name.startswith(key))
            else:
                total += stats.get(key, 0)
        out[label] = total
    return out


# -- coverage across a test session (the pytest plugin prints it) ------------------------------------

SESSION_FAULTS: Counter[str] = Counter()
SESSION_RECOVERY: Counter[str] = Counter()
SESSION_RUNS: list[int] = [0]


def record_coverage(faults_injected: Mapping[str, int], recovery: Mapping[str, int]) -> None:
    """Add one run's fault kinds and recovery paths to the session's totals."""
    SESSION_RUNS[0] += 1
    SESSION_FAULTS.update({k: v for k, v in faults_injected.items() if v})
    SESSION_RECOVERY.update({k: v for k, v in recovery.items() if v})
