"""A run as a scenario file that ``detray simulate`` replays.

Owns: ``scenario_yaml(outcome or parts)`` and ``fault_entry(fault)`` (one
``detray.sim.faults`` fault as a ``faults:`` entry of docs/scenarios.md).
Must not: run anything.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml  # type: ignore[import-untyped]

from detray.sim import faults as F


def fault_entry(fault: F.Fault) -> dict[str, Any]:
    """``fault`` as a scenario ``faults:`` entry (nodes by index)."""
    entry: dict[str, Any] = {"at_s": _num(fault.at_s)}
    if isinstance(fault, F.KillNode):
        entry["kill_node"] = _node(fault.node)
    elif isinstance(fault, F.RestartNode):
        entry["restart_node"] = _node(fault.node)
    elif isinstance(fault, F.KillWorker):
        if fault.worker is not None:
            raise ValueError(f"{fault!r}: a worker id cannot be written in a scenario; name its node")
        node = "random" if fault.node is None else _node(fault.node)
        entry["kill_worker"] = node if fault.task_name is None else {"node": node, "task_name": fault.task_name}
    elif isinstance(fault, F.Partition):
        entry["partition"] = [[_node(n) for n in group] for group in fault.groups]
        if fault.heal_at_s is not None:
            entry["heal_at_s"] = _num(fault.heal_at_s)
    elif isinstance(fault, F.Heal):
        entry["heal"] = True
    elif isinstance(fault, F.EvictCopies):
        entry["evict_objects"] = {"node": _node(fault.node), "fraction": _num(fault.fraction)}
    elif isinstance(fault, F.SlowNode):
        slow: dict[str, Any] = {"node": _node(fault.node), "factor": _num(fault.factor)}
        if fault.until_s is not None:
            slow["until_s"] = _num(fault.until_s)
        entry["slow_node"] = slow
    elif isinstance(fault, F.LoseNotification):
        _nodes_channel(fault.channel, fault)
        entry["lose_notifications"] = fault.count
    elif isinstance(fault, F.DelayNotification):
        _nodes_channel(fault.channel, fault)
        entry["delay_notifications"] = {"delay_s": _num(fault.delay_s), "count": fault.count}
    elif isinstance(fault, F.RestartControlPlane):
        entry["restart_control_plane"] = {"downtime_s": _num(fault.downtime_s)}
    elif isinstance(fault, F.RandomFaults):
        if len(fault.kinds) != 1:
            raise ValueError(f"{fault!r}: a scenario entry has one kind; write one RandomFaults per kind")
        action = {"kill_worker": "kill_worker", "kill_node": "kill_node", "evict": "evict_objects", "slow_node": "slow_node"}[fault.kinds[0]]
        entry["rate_per_s"] = _num(fault.rate_per_s)
        entry["until_s"] = _num(fault.end_s)
        entry["count"] = fault.max_faults
        if action == "evict_objects":
            entry[action] = {"node": "random", "fraction": _num(fault.evict_fraction)}
        elif action == "slow_node":
            entry[action] = {"node": "random", "factor": _num(fault.slow_factor)}
        else:
            entry[action] = "random"
        if action == "kill_node" and fault.restart_after_s is not None:
            entry["restart_after_s"] = _num(fault.restart_after_s)
    else:
        raise TypeError(f"no scenario form for {fault!r}")
    return entry


def scenario_yaml(
    outcome: Any = None,
    *,
    program: Callable[[], Any] | None = None,
    cluster: Mapping[str, Any] | None = None,
    faults: Sequence[F.Fault] | None = None,
    seed: int | None = None,
    name: str = "replay",
) -> str:
    """A scenario file replaying a run: from an ``Outcome`` (its cluster, faults and seed),
    or from the parts. The workload names ``program`` as ``module:function`` when it is
    importable that way, else the file must be filled in by hand (a comment says so)."""
    if outcome is not None:
        cluster = outcome.cluster if cluster is None else cluster
        faults = outcome.faults if faults is None else faults
        seed = outcome.seed if seed is None else seed
    document: dict[str, Any] = {
        "name": name,
        "seed": int(seed or 0),
        "cluster": _plain(dict(cluster or {})),
        "workload": {"function": _function_path(program)},
        "faults": [fault_entry(f) for f in (faults or ())],
    }
    text: str = yaml.safe_dump(document, sort_keys=False, default_flow_style=None, width=100)
    if document["workload"]["function"] == "FILL_ME:program":
        text = "# workload.function: give the program as module:function (importable from here)\n" + text
    return text


def _function_path(program: Callable[[], Any] | None) -> str:
    if program is None:
        return "FILL_ME:program"
    module = getattr(program, "__module__", None)
    qualname = getattr(program, "__qualname__", "")
    if not module or "<" in qualname:
        return "FILL_ME:program"
    return f"{module}:{qualname}"


def _nodes_channel(channel: str, fault: F.Fault) -> None:
    if channel != "nodes":
        raise ValueError(f"{fault!r}: scenarios only name the `nodes` notification channel")


def _node(ref: F.NodeRef) -> int:
    if isinstance(ref, int):
        return ref
    return int(str(ref).rsplit("-", 1)[-1])


def _num(value: float) -> float | int:
    number = float(value)
    return int(number) if number.is_integer() else round(number, 9)


def _plain(value: Any) -> Any:
    """Mappings and sequences as dicts and lists (what ``yaml.safe_dump`` writes)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
