"""Fault injection: what can go wrong in a simulated cluster, scheduled in virtual time.

Owns: the fault types users schedule (``KillNode``, ``RestartNode``,
``KillWorker``, ``Partition``, ``Heal``, ``EvictCopies``, ``SlowNode``,
``LoseNotification``, ``DelayNotification``, ``RestartControlPlane``,
``RandomFaults``) and how each is carried out on the cluster. Must not:
decide the recovery (the core does: retries, reconstruction, restarts) or
draw randomness except from the fault's own stream ``("fault", index)``
(``index`` counts the faults scheduled in this run), so adding a fault never
shifts another fault's choices or any duration.

Usage, from the driver (times are absolute virtual seconds)::

    from detray.sim import faults
    faults.schedule(faults.KillNode(node=3, at_s=1.5), faults.RestartNode(node=3, at_s=4.0))
    # or: detray.sim.current_cluster().schedule(...)

Nodes are named by index (``3``) or id (``"node-00003"``). The head node
(0) runs the driver and the control plane: it cannot be killed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from detray.core import events as E
from detray.core import ids
from detray.core.ids import NodeID
from detray.sim import streams

__all__ = [
    "DelayNotification",
    "EvictCopies",
    "Fault",
    "Heal",
    "KillNode",
    "KillWorker",
    "LoseNotification",
    "Partition",
    "RandomFaults",
    "RestartControlPlane",
    "RestartNode",
    "SlowNode",
    "schedule",
]

NodeRef = int | str

RANDOM_FAULTS_MAX = 10_000


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    at_s: float
    """Absolute virtual time, in seconds, when the fault happens."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KillNode(Fault):
    """The node's processes die at ``at_s``; the cluster learns it after the failure
    detector's timeout (``NodeDied``): its workers, object copies and actors are lost."""

    node: NodeRef


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartNode(Fault):
    """The node comes back as a new incarnation (``NodeJoined``), empty."""

    node: NodeRef


@dataclass(frozen=True, slots=True, kw_only=True)
class KillWorker(Fault):
    """A worker process dies: ``worker`` by id, else one running a task (named
    ``task_name`` if given) on ``node`` (on any node when ``node`` is None), chosen
    from the fault's stream when the fault happens."""

    node: NodeRef | None = None
    worker: str | None = None
    task_name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition(Fault):
    """Split the network into ``groups`` plus one group of every unlisted node; healed at
    ``heal_at_s`` if given. Messages across are held (or dropped, per the cluster's
    ``partition_mode``); nodes cut off from the head longer than the failure detector's
    timeout are declared dead and rejoin (new incarnation) once reachable again."""

    groups: Sequence[Sequence[NodeRef]]
    heal_at_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Heal(Fault):
    """Remove the partition in force."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EvictCopies(Fault):
    """Copies totalling at least ``fraction`` of the in-memory bytes on ``node`` vanish
    (``CopiesEvicted``), chosen from the fault's stream."""

    node: NodeRef
    fraction: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SlowNode(Fault):
    """Tasks on ``node`` take ``factor`` times their duration, and its transfers are
    ``factor`` times slower, until ``until_s`` (forever if None)."""

    node: NodeRef
    factor: float
    until_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class LoseNotification(Fault):
    """The next ``count`` control-plane notifications on ``channel`` are lost (subscribers
    catch up at their next resync of the table)."""

    channel: str = "nodes"
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class DelayNotification(Fault):
    """The next ``count`` notifications on ``channel`` arrive ``delay_s`` late."""

    delay_s: float
    channel: str = "nodes"
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class RestartControlPlane(Fault):
    """The control plane is down for ``downtime_s``: notifications are lost, writes wait,
    lookups from user code block; subscribers resync when it is back."""

    downtime_s: float = 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class RandomFaults(Fault):
    """Faults at ``rate_per_s`` (a Poisson process) from ``at_s`` until ``end_s`` (at
    most ``max_faults``), each of a kind in ``kinds`` (``kill_worker``,
    ``kill_node``, ``evict``, ``slow_node``) on a node other than the head, all
    drawn from this fault's stream. Killed nodes restart ``restart_after_s`` later."""

    rate_per_s: float
    end_s: float
    kinds: tuple[str, ...] = ("kill_worker",)
    max_faults: int = 100
    restart_after_s: float | None = 1.0
    evict_fraction: float = 0.5
    slow_factor: float = 4.0


_RANDOM_KINDS = ("kill_worker", "kill_node", "evict", "slow_node")
_RANDOM_KIND_CLASS = {"kill_worker": "KillWorker", "kill_node": "KillNode", "evict": "EvictCopies", "slow_node": "SlowNode"}


def schedule(*faults: Fault) -> None:
    """Schedule faults on the current simulated cluster."""
    from detray.sim import current_cluster

    current_cluster().schedule(*faults)


# --- carrying faults out (the cluster's side) ---------------------------------------------------


def node_of(cluster: Any, ref: NodeRef) -> NodeID:
    if isinstance(ref, bool):
        raise TypeError(f"a node is an index or a node id, got {ref!r}")
    node = ids.node_id(ref) if isinstance(ref, int) else NodeID(ref)
    if node not in cluster.nodes:
        raise ValueError(f"no node {ref!r} in this cluster (it has {len(cluster.nodes)} nodes)")
    return node


def validate(cluster: Any, fault: Fault) -> None:
    """Refuse a fault that cannot happen, at scheduling time, with a message naming it."""
    if not isinstance(fault, Fault):
        raise TypeError(f"schedule() takes faults from detray.sim.faults, got {type(fault).__name__}")
    if not (isinstance(fault.at_s, (int, float)) and math.isfinite(fault.at_s)):
        raise ValueError(f"{fault}: at_s must be a finite number of seconds")
    if fault.at_s < cluster.now():
        raise ValueError(f"{fault}: at_s={fault.at_s} is in the past (now is {cluster.now()} s)")
    if isinstance(fault, (KillNode, RestartNode, EvictCopies, SlowNode)):
        node = node_of(cluster, fault.node)
        if isinstance(fault, KillNode) and node == cluster.head:
            raise ValueError(f"{fault}: the head node runs the driver and the control plane; it cannot be killed")
    if isinstance(fault, KillWorker):
        if fault.node is not None:
            node_of(cluster, fault.node)
    if isinstance(fault, Partition):
        seen: set[str] = set()
        for group in fault.groups:
            for ref in group:
                node = node_of(cluster, ref)
                if node in seen:
                    raise ValueError(f"{fault}: node {node} is in two groups")
                seen.add(node)
    if isinstance(fault, EvictCopies) and not 0.0 <= fault.fraction <= 1.0:
        raise ValueError(f"{fault}: fraction must be within [0, 1]")
    if isinstance(fault, SlowNode) and not fault.factor > 0:
        raise ValueError(f"{fault}: factor must be > 0")
    if isinstance(fault, (LoseNotification, DelayNotification)) and fault.channel not in ("nodes", "*"):
        raise ValueError(f"{fault}: only the 'nodes' channel carries notifications the simulator acts on")
    if isinstance(fault, RandomFaults):
        unknown = sorted(set(fault.kinds) - set(_RANDOM_KINDS))
        if unknown or not fault.kinds:
            raise ValueError(f"{fault}: kinds must be among {_RANDOM_KINDS}, got {list(fault.kinds)}")
        if not fault.rate_per_s > 0 or fault.end_s < fault.at_s:
            raise ValueError(f"{fault}: needs rate_per_s > 0 and end_s >= at_s")
        if len(cluster.nodes) < 2:
            raise ValueError(f"{fault}: random faults need a node other than the head")


def apply(cluster: Any, fault: Fault, index: int) -> None:
    """Carry out ``fault`` now (``index``: its number, which keys its random stream)."""
    kind = type(fault).__name__
    cluster.emit(None, "fault", fault=kind, index=index, detail=_describe(fault))
    if not isinstance(fault, RandomFaults):  # its draws are counted as the faults they become
        cluster.count(f"fault.{kind}")
    if isinstance(fault, KillNode):
        cluster.node_down(node_of(cluster, fault.node), "killed by a fault")
    elif isinstance(fault, RestartNode):
        node = node_of(cluster, fault.node)
        rec = cluster.nodes[node]
        if rec.up:
            cluster.node_down(node, "restarted by a fault")
        cluster.node_up(node)
        cluster._drain_notifications()
    elif isinstance(fault, KillWorker):
        _kill_worker(cluster, fault, index)
    elif isinstance(fault, Partition):
        groups = [[node_of(cluster, ref) for ref in group] for group in fault.groups]
        cluster.network.partition(groups)
        cluster.topology_changed()
        if fault.heal_at_s is not None:
            cluster.later(max(0.0, fault.heal_at_s - cluster.now()), apply, cluster, Heal(at_s=fault.heal_at_s), index)
    elif isinstance(fault, Heal):
        cluster.network.heal()
        cluster.topology_changed()
    elif isinstance(fault, EvictCopies):
        evict(cluster, node_of(cluster, fault.node), fault.fraction, streams.stream(cluster.seed, "fault", index))
    elif isinstance(fault, SlowNode):
        node = node_of(cluster, fault.node)
        _slow(cluster, node, fault.factor)
        if fault.until_s is not None:
            cluster.later(max(0.0, fault.until_s - cluster.now()), _slow, cluster, node, 1.0)
    elif isinstance(fault, LoseNotification):
        cluster.add_notification_fault(fault.channel, "lose", fault.count, 0.0)
    elif isinstance(fault, DelayNotification):
        cluster.add_notification_fault(fault.channel, "delay", fault.count, fault.delay_s)
    elif isinstance(fault, RestartControlPlane):
        cluster.plane_down(fault.downtime_s)
    elif isinstance(fault, RandomFaults):
        _next_random(cluster, fault, index, 0)
    else:
        raise TypeError(f"unknown fault {fault!r}")


def _describe(fault: Fault) -> str:
    fields = {k: getattr(fault, k) for k in fault.__dataclass_fields__ if k != "at_s"}
    return ", ".join(f"{k}={v!r}" for k, v in fields.items())


def _slow(cluster: Any, node: NodeID, factor: float) -> None:
    cluster.nodes[node].slowdown = factor
    cluster.network.set_node_slowdown(node, factor)
    cluster.emit(node, "node.slowdown", factor=factor)


def _kill_worker(cluster: Any, fault: KillWorker, index: int) -> None:
    executor = cluster.executor
    if fault.worker is not None:
        executor.kill_worker(fault.worker, "killed by a fault")
        return
    nodes = [node_of(cluster, fault.node)] if fault.node is not None else sorted(cluster.nodes)
    node = nodes[0] if fault.node is not None else None
    candidates = []
    for where in nodes:
        for worker_id in sorted(cluster.nodes[where].workers):
            worker = executor.workers.get(worker_id)
            if worker is None or not worker.alive or not worker.runs:
                continue
            if fault.task_name is not None and not any(run.spec.name == fault.task_name for run in worker.runs.values()):
                continue
            candidates.append(worker_id)
    if not candidates:
        cluster.count("kill_worker_found_none")
        cluster.emit(node, "fault.no_target", fault="KillWorker")
        return
    rng = streams.stream(cluster.seed, "fault", index)
    executor.kill_worker(candidates[rng.randrange(len(candidates))], "killed by a fault")


def evict(cluster: Any, node: NodeID, fraction: float, rng: Any) -> None:
    copies = cluster.values.in_memory_on(node)
    total = sum(size for _obj, size in copies)
    if not copies or total == 0 or fraction <= 0:
        return
    order = list(range(len(copies)))
    rng.shuffle(order)
    target = fraction * total
    chosen = []
    evicted = 0
    for position in order:
        if evicted >= target:
            break
        obj, size = copies[position]
        chosen.append(obj)
        evicted += size
    chosen.sort()
    for obj in chosen:
        cluster.values.remove_copy(obj, node)
    cluster.emit(node, "object.evicted", count=len(chosen), bytes=evicted)
    cluster.feed(E.CopiesEvicted(now=cluster.now(), stimulus_id=cluster.sid("evict"), node=node, objects=tuple(chosen)))
    for obj in chosen:
        cluster._maybe_drop_value(obj)


def _next_random(cluster: Any, fault: RandomFaults, index: int, count: int) -> None:
    if count >= min(fault.max_faults, RANDOM_FAULTS_MAX):
        return
    rng = streams.stream(cluster.seed, "fault", index, "arrival", count)
    delay_s = rng.expovariate(fault.rate_per_s)
    at = cluster.now() + delay_s
    if at > fault.end_s:
        return
    cluster.later(delay_s, _random_fault, cluster, fault, index, count)


def _random_fault(cluster: Any, fault: RandomFaults, index: int, count: int) -> None:
    rng = streams.stream(cluster.seed, "fault", index, "choice", count)
    kind = fault.kinds[rng.randrange(len(fault.kinds))]
    nodes = [node for node, rec in cluster.nodes.items() if node != cluster.head and rec.up]
    if nodes:
        node = nodes[rng.randrange(len(nodes))]
        cluster.emit(node, "fault.random", fault=kind, index=index, count=count)
        cluster.count(f"fault.{_RANDOM_KIND_CLASS[kind]}")
        if kind == "kill_worker":
            _kill_worker(cluster, KillWorker(at_s=cluster.now(), node=node), _sub_index(index, count))
        elif kind == "kill_node":
            cluster.node_down(node, "killed by a random fault")
            if fault.restart_after_s is not None:
                cluster.later(fault.restart_after_s, _restart, cluster, node)
        elif kind == "evict":
            evict(cluster, node, fault.evict_fraction, rng)
        elif kind == "slow_node":
            _slow(cluster, node, fault.slow_factor)
    _next_random(cluster, fault, index, count + 1)


def _restart(cluster: Any, node: NodeID) -> None:
    if not cluster.nodes[node].up:
        cluster.count("fault.RestartNode")
        cluster.node_up(node)
        cluster._drain_notifications()


def _sub_index(index: int, count: int) -> int:
    # Random faults' own kills draw from a stream apart from every scheduled fault's.
    return -(index * RANDOM_FAULTS_MAX + count + 1)


def check_all(cluster: Any, faults: Iterable[Fault]) -> list[Fault]:
    listed = list(faults)
    for fault in listed:
        validate(cluster, fault)
    return listed
