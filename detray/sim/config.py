"""The simulated cluster's description: nodes, network, limits, and how ``init`` shapes it.

Owns: ``ClusterSpec`` (what ``detray.init(mode="sim", cluster=...)`` accepts,
validated, in normal form with units last) and ``SimSettings`` (the
simulator's own knobs: trace, invariants, limits, durations). Must not:
build anything (``cluster.py`` does) or read a clock.

The ``cluster`` argument of ``init``::

    {"nodes": [{"count": 3, "resources": {"CPU": 4, "GPU": 2}, "object_store_mb": 512,
                "name": "head", "spill": True}, ...],
     "network": {"latency_ms": 0.2, "bandwidth_mb_per_s": 1250, "partition_mode": "hold"},
     "failure_detector_timeout_s": 1.0,
     "resource_report_interval_s": 0.1}

Nodes are numbered in order from 0 (``node-00000`` is the head: the driver
and the control plane run there). Without ``cluster``, ``init(num_cpus=...,
num_gpus=..., resources=..., object_store_memory=...)`` shapes one node.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from detray.core import resources as res
from detray.runtime import InitOptions
from detray.settings import IGNORED_INIT_KEYWORDS

DEFAULT_NODE_CPUS = 8
"""CPUs of the one node ``init()`` makes without ``num_cpus`` (Ray would use the machine's
CPU count; a fixed number keeps runs identical on every machine)."""
DEFAULT_OBJECT_STORE_MB = 1024
DEFAULT_FAILURE_DETECTOR_TIMEOUT_S = 1.0
DEFAULT_RESOURCE_REPORT_INTERVAL_S = 0.1
"""Ray's resource broadcast period is of this order (100 ms)."""
DEFAULT_RESYNC_INTERVAL_S = 5.0
"""Subscribers re-read the node table this often after missing a notification."""
DEFAULT_MAX_VIRTUAL_TIME_S = 1e7
DEFAULT_MAX_EVENTS = 200_000_000
CHECK_INVARIANTS_ENV = "DETRAY_SIM_CHECK_INVARIANTS"
"""``1``: check every core invariant after every step (the test suites set it)."""
MB = 1024 * 1024

_NODE_KEYS = frozenset({"count", "resources", "object_store_mb", "name", "spill"})
_NETWORK_KEYS = frozenset({"latency_ms", "bandwidth_mb_per_s", "partition_mode"})
_CLUSTER_KEYS = frozenset(
    {
        "nodes",
        "network",
        "failure_detector_timeout_s",
        "resource_report_interval_s",
        "resync_interval_s",
        "worker_start_s",
    }
)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    resources: Mapping[str, float]
    object_store_bytes: int
    spill_enabled: bool = True


@dataclass(frozen=True, slots=True)
class NetworkSpec:
    latency_s: float = 0.0002
    bandwidth_bytes_per_s: float = 1.25e9
    partition_mode: str = "hold"


@dataclass(frozen=True, slots=True)
class ClusterSpec:
    nodes: tuple[NodeSpec, ...]
    network: NetworkSpec = field(default_factory=NetworkSpec)
    failure_detector_timeout_s: float = DEFAULT_FAILURE_DETECTOR_TIMEOUT_S
    resource_report_interval_s: float = DEFAULT_RESOURCE_REPORT_INTERVAL_S
    resync_interval_s: float = DEFAULT_RESYNC_INTERVAL_S
    worker_start_s: float = 0.0

    def describe(self) -> dict[str, Any]:
        """A JSON-able form (for the trace header and a fresh process)."""
        return {
            "nodes": [
                {
                    "count": 1,
                    "name": n.name,
                    "resources": dict(sorted(n.resources.items())),
                    "object_store_mb": n.object_store_bytes / MB,
                    "spill": n.spill_enabled,
                }
                for n in self.nodes
            ],
            "network": {
                "latency_ms": self.network.latency_s * 1000.0,
                "bandwidth_mb_per_s": self.network.bandwidth_bytes_per_s / MB,
                "partition_mode": self.network.partition_mode,
            },
            "failure_detector_timeout_s": self.failure_detector_timeout_s,
            "resource_report_interval_s": self.resource_report_interval_s,
            "resync_interval_s": self.resync_interval_s,
            "worker_start_s": self.worker_start_s,
        }


def _number(where: str, value: Any, *, minimum: float = 0.0, strict: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{where} must be a finite number, got {value!r}")
    if value < minimum or (strict and value == minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"{where} must be {relation} {minimum}, got {value!r}")
    return float(value)


def _unknown(where: str, given: Mapping[str, Any], known: frozenset[str]) -> None:
    extra = sorted(str(k) for k in given if k not in known)
    if extra:
        raise ValueError(f"{where}: unknown keys {extra}; known keys are {sorted(known)}")


def _node_specs(entry: Any, index: int) -> list[NodeSpec]:
    where = f"cluster['nodes'][{index}]"
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where} must be a dict, got {type(entry).__name__}")
    _unknown(where, entry, _NODE_KEYS)
    count = entry.get("count", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"{where}['count'] must be an int >= 1, got {count!r}")
    quantities = entry.get("resources", {"CPU": DEFAULT_NODE_CPUS})
    if not isinstance(quantities, Mapping):
        raise TypeError(f"{where}['resources'] must be a dict, got {type(quantities).__name__}")
    try:
        res.units_of(quantities)  # validates names and quantities
    except res.ResourceError as error:
        raise ValueError(f"{where}['resources']: {error}") from None
    gpus = quantities.get(res.GPU, 0)
    if gpus != int(gpus):
        raise ValueError(f"{where}['resources']['GPU'] must be whole, got {gpus}")
    store_mb = _number(f"{where}['object_store_mb']", entry.get("object_store_mb", DEFAULT_OBJECT_STORE_MB), strict=True)
    name = entry.get("name", "")
    if not isinstance(name, str):
        raise TypeError(f"{where}['name'] must be a str, got {type(name).__name__}")
    spill = entry.get("spill", True)
    if not isinstance(spill, bool):
        raise TypeError(f"{where}['spill'] must be a bool, got {type(spill).__name__}")
    resources = {str(k): float(v) for k, v in sorted(quantities.items())}
    return [
        NodeSpec(
            name=name,
            resources=resources,
            object_store_bytes=int(store_mb * MB),
            spill_enabled=spill,
        )
        for _ in range(count)
    ]


def parse_cluster(description: Any) -> ClusterSpec:
    """Validate a cluster description (a dict as in the module docstring, or a ``ClusterSpec``)."""
    if isinstance(description, ClusterSpec):
        return description
    if not isinstance(description, Mapping):
        raise TypeError(f"cluster must be a dict, got {type(description).__name__}")
    _unknown("cluster", description, _CLUSTER_KEYS)
    entries = description.get("nodes")
    if not isinstance(entries, (list, tuple)) or not entries:
        raise ValueError("cluster['nodes'] must be a non-empty list of node groups")
    nodes: list[NodeSpec] = []
    for index, entry in enumerate(entries):
        nodes.extend(_node_specs(entry, index))
    net = description.get("network", {})
    if not isinstance(net, Mapping):
        raise TypeError(f"cluster['network'] must be a dict, got {type(net).__name__}")
    _unknown("cluster['network']", net, _NETWORK_KEYS)
    mode = net.get("partition_mode", "hold")
    if mode not in ("hold", "drop"):
        raise ValueError(f"cluster['network']['partition_mode'] must be 'hold' or 'drop', got {mode!r}")
    network = NetworkSpec(
        latency_s=_number("cluster['network']['latency_ms']", net.get("latency_ms", 0.2)) / 1000.0,
        bandwidth_bytes_per_s=_number(
            "cluster['network']['bandwidth_mb_per_s']", net.get("bandwidth_mb_per_s", 1.25e9 / MB), strict=True
        )
        * MB,
        partition_mode=mode,
    )
    return ClusterSpec(
        nodes=tuple(nodes),
        network=network,
        failure_detector_timeout_s=_number(
            "cluster['failure_detector_timeout_s']",
            description.get("failure_detector_timeout_s", DEFAULT_FAILURE_DETECTOR_TIMEOUT_S),
        ),
        resource_report_interval_s=_number(
            "cluster['resource_report_interval_s']",
            description.get("resource_report_interval_s", DEFAULT_RESOURCE_REPORT_INTERVAL_S),
            strict=True,
        ),
        resync_interval_s=_number(
            "cluster['resync_interval_s']",
            description.get("resync_interval_s", DEFAULT_RESYNC_INTERVAL_S),
            strict=True,
        ),
        worker_start_s=_number("cluster['worker_start_s']", description.get("worker_start_s", 0.0)),
    )


def single_node(options: InitOptions) -> ClusterSpec:
    """The one-node cluster ``init(num_cpus=..., num_gpus=..., resources=...)`` asks for."""
    quantities: dict[str, float] = dict(options.resources or {})
    for name in (res.CPU, res.GPU):
        if name in quantities:
            raise ValueError(f"init(): use num_cpus/num_gpus, not {name!r} in resources")
    quantities[res.CPU] = DEFAULT_NODE_CPUS if options.num_cpus is None else options.num_cpus
    if options.num_gpus:
        quantities[res.GPU] = options.num_gpus
    entry: dict[str, Any] = {"resources": quantities, "name": "head"}
    if options.object_store_memory is not None:
        entry["object_store_mb"] = options.object_store_memory / MB
    return parse_cluster({"nodes": [entry]})


def cluster_of(options: InitOptions) -> ClusterSpec:
    """The cluster an ``init`` call describes (``cluster=`` wins over the one-node keywords)."""
    if options.cluster is None:
        return single_node(options)
    given = [
        name
        for name, value in (
            ("num_cpus", options.num_cpus),
            ("num_gpus", options.num_gpus),
            ("resources", options.resources),
            ("object_store_memory", options.object_store_memory),
        )
        if value is not None
    ]
    if given:
        raise ValueError(f"init(mode='sim'): give either cluster= or {given}, not both")
    return parse_cluster(options.cluster)


@dataclass(frozen=True, slots=True)
class SimSettings:
    """The simulator's own options (``init`` keywords of the sim driver)."""

    check_invariants: bool = False
    trace_path: str | None = None
    trace_level: str = "events"
    max_virtual_time_s: float = DEFAULT_MAX_VIRTUAL_TIME_S
    max_events: int = DEFAULT_MAX_EVENTS
    durations: Mapping[str, Any] | None = None


SIM_KEYWORDS = frozenset(
    {"check_invariants", "trace_path", "trace_level", "max_virtual_time_s", "max_events", "durations"}
)
"""``init`` keywords the sim driver reads."""



def sim_settings(extra: Mapping[str, Any]) -> SimSettings:
    """The sim driver's keywords from ``init``'s extras; anything unknown is a TypeError."""
    unknown = sorted(k for k in extra if k not in SIM_KEYWORDS and k not in IGNORED_INIT_KEYWORDS)
    if unknown:
        raise TypeError(f"init(mode='sim') got unexpected keyword arguments {unknown}")
    check = extra.get("check_invariants")
    if check is None:
        check = os.environ.get(CHECK_INVARIANTS_ENV, "") not in ("", "0")
    level = extra.get("trace_level", "events")
    if level not in ("off", "events", "debug"):
        raise ValueError(f"init(): trace_level must be 'off', 'events' or 'debug', got {level!r}")
    max_events = extra.get("max_events", DEFAULT_MAX_EVENTS)
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
        raise ValueError(f"init(): max_events must be an int >= 1, got {max_events!r}")
    durations = extra.get("durations")
    if durations is not None and not isinstance(durations, Mapping):
        raise TypeError(f"init(): durations must be a dict, got {type(durations).__name__}")
    trace_path = extra.get("trace_path")
    return SimSettings(
        check_invariants=bool(check),
        trace_path=None if trace_path is None else str(trace_path),
        trace_level=level,
        max_virtual_time_s=_number(
            "init(): max_virtual_time_s", extra.get("max_virtual_time_s", DEFAULT_MAX_VIRTUAL_TIME_S), strict=True
        ),
        max_events=max_events,
        durations=durations,
    )
