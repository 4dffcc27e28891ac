"""The deterministic simulator: a virtual cluster running user code in virtual time.

``detray.init(mode="sim", seed=..., cluster={...})`` (or ``DETRAY_MODE=sim``
with ``DETRAY_SEED``) runs an unmodified blocking program on a simulated
cluster of any size, one piece of user code at a time, in virtual time
(SimPy), with faults, reproducibly: the same program, cluster and seed give
the same trace (``check_determinism`` proves it in a fresh process).

What this package exposes:

- ``start(options)``: the driver entry point ``detray.init`` calls.
- ``set_durations({...})``: per-function virtual durations (see
  ``durations.py``) for the running simulation, or the next one.
- ``current_cluster()``: the running ``SimCluster`` (``schedule(*faults)``,
  ``now()``, ``trace``, ``stats``); ``now()``: virtual time.
- ``faults``: the fault kinds and ``faults.schedule``.
- ``check_determinism(target, cluster=..., seed=...)``: run twice, the second
  time in a fresh process with another ``PYTHONHASHSEED``, and report the
  first trace line that differs.
- ``DeadlockError``, ``SimulationLimitError``.

``init`` keywords of the sim driver: ``seed``, ``cluster``, ``durations``,
``check_invariants`` (default: ``DETRAY_SIM_CHECK_INVARIANTS``),
``trace_path``, ``trace_level`` (``off``/``events``/``debug``),
``max_virtual_time_s``, ``max_events``, ``faults`` (a list, scheduled at
start). Ray's dashboard and logging knobs are accepted and ignored.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from detray import runtime as _runtime_mod
from detray.runtime import InitOptions
from detray.sim import faults
from detray.sim.errors import DeadlockError, SimulationLimitError

__all__ = [
    "DeadlockError",
    "SimulationLimitError",
    "check_determinism",
    "current_cluster",
    "faults",
    "now",
    "scenario",
    "set_durations",
    "start",
]

_pending_durations: dict[str, Any] = {}
_override: dict[str, Any] | None = None


def start(options: InitOptions) -> Any:
    """Start a simulated cluster for ``detray.init`` (the ``Driver`` protocol)."""
    from dataclasses import replace

    from detray.sim.config import cluster_of, sim_settings
    from detray.sim.durations import DurationModel
    from detray.sim.runtime import SimRuntime

    extra = dict(options.extra)
    fault_list = extra.pop("faults", None) or []
    seed = options.seed
    override = _override
    if override is not None and override.get("once") and override.get("started"):
        raise RuntimeError("one simulation per scenario: the program called init() again after shutdown()")
    if override is not None:
        seed = override.get("seed", seed)
        if override.get("cluster") is not None:
            options = replace(options, cluster=override["cluster"], num_cpus=None, num_gpus=None, resources=None, object_store_memory=None)
        if override.get("trace_path") is not None:
            extra["trace_path"] = override["trace_path"]
    settings = sim_settings(extra)
    durations: dict[str, Any] = dict(settings.durations or {})
    if _pending_durations:
        durations = {**_pending_durations, **durations}
        _pending_durations.clear()
    if durations:
        DurationModel(seed, durations)  # validate before starting anything
        settings = replace(settings, durations=durations)
    spec = cluster_of(options)
    runtime = SimRuntime(options, spec, settings, seed)
    if fault_list:
        try:
            runtime.cluster.schedule(*fault_list)
        except BaseException:
            runtime.shutdown()  # a bad fault refuses init without leaving a cluster running
            raise
    if override is not None:
        override["started"] = True
        if override.get("on_start") is not None:
            try:
                override["on_start"](runtime.cluster)
            except BaseException:
                runtime.shutdown()  # nothing may be left running when init fails
                raise
    return runtime


def _sim_runtime() -> Any:
    from detray.sim.runtime import SimRuntime

    current = _runtime_mod.current()
    if isinstance(current, SimRuntime) and current.is_initialized():
        return current
    return None


def set_durations(specs: Mapping[str, Any]) -> None:
    """Virtual durations by function name (``"default"`` for the rest): for the running
    simulation, else for the next ``init``. See ``detray.sim.durations`` for specs."""
    from detray.sim.durations import DurationModel

    DurationModel(0, specs)  # validate
    running = _sim_runtime()
    if running is not None:
        running.cluster.durations.update(specs)
    else:
        _pending_durations.update(specs)


def current_cluster() -> Any:
    """The running simulated cluster (``RuntimeError`` when none runs)."""
    running = _sim_runtime()
    if running is None:
        raise RuntimeError("no simulated cluster is running: call detray.init(mode='sim') first")
    return running.cluster


def now() -> float:
    """Virtual time of the running simulation, in seconds."""
    return float(current_cluster().now())


@contextlib.contextmanager
def scenario(
    *,
    seed: int | None = None,
    cluster: Any = None,
    trace_path: str | None = None,
    on_start: Callable[[Any], None] | None = None,
    once: bool = False,
) -> Iterator[None]:
    """Within the block, ``init(mode="sim")`` uses this seed, cluster and trace path,
    whatever the program asks (``detray simulate``: the scenario wins). ``on_start``
    is called with the ``SimCluster`` once it is up, before ``init`` returns (in the
    driver, at virtual time 0: ``detray simulate`` schedules its faults there; if it
    raises, the cluster is shut down and ``init`` raises). ``once``: a second ``init``
    in the block raises ``RuntimeError`` (it would overwrite the first one's trace)."""
    global _override
    previous = _override
    given = {"seed": seed, "cluster": cluster, "trace_path": trace_path, "on_start": on_start, "once": once or None}
    _override = {k: v for k, v in given.items() if v is not None}
    try:
        yield
    finally:
        _override = previous


def check_determinism(target: Any, cluster: Any = None, seed: int = 0, **kwargs: Any) -> Any:
    """Run ``target`` twice (the second time in a fresh process with another
    ``PYTHONHASHSEED``) and compare the traces; see ``detray.sim.determinism``."""
    from detray.sim.determinism import check_determinism as check

    return check(target, cluster=cluster, seed=seed, **kwargs)
