"""Placement policies: where one task attempt should run, given a view of the cluster.

Owns: the ``SchedulingPolicy`` protocol and ``DefaultPolicy``, which
implements Ray's documented strategies: the hybrid ``DEFAULT`` policy with
locality, ``SPREAD``, and node affinity (hard and soft). The view a policy
reads (``ClusterView`` over a shared ``ResourceTable``) lives in ``view.py``.

Must not: change the view, read a clock, draw randomness, or know about
workers and queues. A policy may keep its own deterministic state (the
SPREAD cursor); each scheduler gets its own policy object.

Theory of operation (Ray 2.x, docs "Scheduling"):

- A node is *feasible* for a request when its totals fit it, *available*
  when what it has free now fits it. Only feasible nodes are candidates; when
  none is, the attempt is ``INFEASIBLE`` and waits for a node to join.
- Node affinity: while the target node is alive and feasible the attempt
  goes only there, soft or hard, and waits there if it is busy. Otherwise a
  hard affinity is ``UNSCHEDULABLE`` (kind ``TASK_UNSCHEDULABLE``, or
  ``ACTOR_UNSCHEDULABLE`` for an actor) and a soft one falls back to the
  hybrid policy without locality.
- Hops: an attempt that was already forwarded ``max_hops`` times is placed
  where it lands when that node is feasible, so an attempt never ping-pongs
  between nodes whose views disagree; once queued there it may still spill
  to a node available now (else a node whose CPUs actors hold for good would
  keep it forever). Past ``hop_cap`` forwards an attempt that cannot run
  where it is stays there if feasible, else it is unschedulable (a loud bug
  signal).
- Locality (normal tasks under ``DEFAULT`` only): the node holding the most
  argument bytes (at least ``LOCALITY_MIN_BYTES``) wins if it is available
  now, whatever its utilization.
- Hybrid: score = 0 when a node's critical-resource utilization is below
  ``spread_threshold`` (Ray: 0.5), else the utilization. Among available
  nodes the lowest score wins, the local node first, then others by node id
  (Ray picks at random among the top k; with k = 1 this is the best node,
  and ties break by id here instead of at random). When no node is
  available the attempt waits locally if the local node is feasible, else it
  goes to the lowest-scoring feasible node.
- SPREAD: round robin over the live nodes in id order, taking the next
  available node from a cursor, else the next feasible one.
- Spill (``spill_only``): an attempt already queued here, which cannot run
  here now, is asked again when the view changes; the answer is another node
  that is available now, or ``STAY``.

The local node's "available" subtracts the placement demand of attempts
already queued here but not yet holding resources (waiting for arguments or
for room), so a burst of arrivals does not all pick the local node before
any of them allocates.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from detray.core.errors import ErrorKind, Failure, failure
from detray.core.ids import NodeID
from detray.core.resources import as_floats, fits
from detray.core.specs import (
    DefaultStrategy,
    NodeAffinityStrategy,
    SpreadStrategy,
    TaskKind,
    TaskSpec,
)
from detray.core.view import SPREAD_THRESHOLD, ClusterView, NodeView, ResourceTable

__all__ = [
    "HOP_CAP",
    "LOCALITY_MIN_BYTES",
    "MAX_HOPS",
    "SPREAD_THRESHOLD",
    "ClusterView",
    "DefaultPolicy",
    "NodeView",
    "Placement",
    "PlacementKind",
    "PlacementRequest",
    "ResourceTable",
    "SchedulingPolicy",
]

MAX_HOPS = 1
"""Forwards after which an attempt runs where it landed (if feasible there)."""
HOP_CAP = 8
"""Forwards after which an attempt that cannot run where it is, is unschedulable."""
LOCALITY_MIN_BYTES = 100 * 1024
"""Argument bytes a node must hold to attract a task (Ray inlines objects below 100 KiB,
so they have no location that matters)."""


class PlacementKind(enum.Enum):
    LOCAL = "local"
    """Run on the local node (wait there for arguments, room and a worker)."""
    FORWARD = "forward"
    """Send to ``Placement.node`` (spillback)."""
    INFEASIBLE = "infeasible"
    """No live node can ever fit it: keep it pending until a node joins."""
    UNSCHEDULABLE = "unschedulable"
    """It can never run (hard affinity to a dead, unknown or infeasible node)."""
    STAY = "stay"
    """Spill-only answer: no better node now; keep it queued here."""


@dataclass(frozen=True, slots=True)
class Placement:
    kind: PlacementKind
    node: NodeID | None = None
    failure: Failure | None = None
    reason: str = ""


LOCAL = Placement(PlacementKind.LOCAL)
INFEASIBLE = Placement(PlacementKind.INFEASIBLE)
STAY = Placement(PlacementKind.STAY)

_FORWARD = PlacementKind.FORWARD
_NORMAL = TaskKind.NORMAL
_ACTOR_CREATION = TaskKind.ACTOR_CREATION
# (module constants: reading an Enum member off its class costs a descriptor call in 3.11)
_FORWARDS: dict[tuple[NodeID, str], Placement] = {}
"""Forward placements by (node, reason): immutable, so one per pair is shared."""
FORWARDS_REMEMBERED_MAX = 65_536


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """One attempt to place: its spec, how often it was forwarded, its data hint."""

    spec: TaskSpec
    hops: int = 0
    arg_bytes_by_node: tuple[tuple[NodeID, int], ...] = ()
    spill_only: bool = False
    """Asked again while queued here (and unable to run here now)."""


class SchedulingPolicy(Protocol):
    """Decides where one attempt runs. Deterministic: same view, same answer."""

    def place(self, request: PlacementRequest, view: ClusterView) -> Placement: ...


def _to(node: NodeID, view: ClusterView, reason: str) -> Placement:
    if node == view.local:
        return LOCAL
    key = (node, reason)
    placement = _FORWARDS.get(key)
    if placement is None:
        if len(_FORWARDS) >= FORWARDS_REMEMBERED_MAX:
            _FORWARDS.clear()
        placement = _FORWARDS[key] = Placement(_FORWARD, node=node, reason=reason)
    return placement


HYBRID_REASON = "hybrid"
"""The reason of a hybrid placement on a node with room now."""


class DefaultPolicy:
    """Ray's hybrid ``DEFAULT`` policy with locality, plus ``SPREAD`` and node affinity."""

    def __init__(
        self,
        *,
        spread_threshold: float = SPREAD_THRESHOLD,
        max_hops: int = MAX_HOPS,
        hop_cap: int = HOP_CAP,
        locality: bool = True,
        locality_min_bytes: int = LOCALITY_MIN_BYTES,
    ) -> None:
        assert 0.0 <= spread_threshold <= 1.0, spread_threshold
        assert 0 <= max_hops <= hop_cap, (max_hops, hop_cap)
        self.spread_threshold = spread_threshold
        self.max_hops = max_hops
        self.hop_cap = hop_cap
        self.locality = locality
        self.locality_min_bytes = locality_min_bytes
        self.spread_cursor = 0
        """Index into the sorted live nodes where the next SPREAD search starts."""

    def place(self, request: PlacementRequest, view: ClusterView) -> Placement:
        spec = request.spec
        need = spec.placement
        strategy = spec.strategy
        if isinstance(strategy, NodeAffinityStrategy):
            target = strategy.node
            if view.feasible(target, need):
                if request.spill_only:
                    return STAY
                return _to(target, view, "node affinity")
            if not strategy.soft:
                return _unschedulable(spec, target, view)
            # Soft affinity that cannot be honoured: the default policy, without locality.
        if request.hops >= self.hop_cap:
            return self._pinned_by_hops(request, view)
        if request.spill_only and not view.table.has_room_besides(view.local) and _asks_for_something(need):
            # What follows only answers FORWARD to another node available now for ``need``,
            # and a node without room has nothing available: the common answer, at once.
            return STAY
        if request.hops >= self.max_hops and not request.spill_only and view.feasible_here(need):
            # Pinned on arrival (no bouncing between views that disagree); once queued it may
            # still spill to a node available now, or it could wait forever behind work that
            # never ends (actors holding the CPUs) while other nodes idle.
            return LOCAL
        if not view.any_feasible(need):
            return STAY if request.spill_only else INFEASIBLE
        if isinstance(strategy, SpreadStrategy):
            return self._spread(request, view)
        locality = self.locality and isinstance(strategy, DefaultStrategy) and spec.kind is _NORMAL
        return self._hybrid(request, view, locality=locality)

    def sole_spill_target(self, spec: TaskSpec, hops: int, view: ClusterView) -> NodeID | None:
        """For callers that may skip ``place`` (read-only): the node N such that ``place``
        answers every spill-only request like ``spec``'s (same placement and strategy, same
        hops) that carries no argument bytes with FORWARD to N (reason ``HYBRID_REASON``)
        while N is available now for it, else STAY; None when that does not hold.

        It holds when N is the one node with room besides the local one, ``spec`` asks for
        something under the default strategy and is below the hop cap: ``place`` then skips
        affinity, the hop cap and locality, and ``_hybrid`` (spill-only, so not the local
        node) finds N or nothing. Forwarding to N (``reserve``) changes only N: it stays so.
        """
        table = view.table
        if (
            spec.strategy.__class__ is not DefaultStrategy
            or hops >= self.hop_cap
            or table.threshold != self.spread_threshold
            or not _asks_for_something(spec.placement)
        ):
            return None
        local = view.local
        low = table.low
        high = table.high
        if len(low) + len(high) - table.has_room(local) != 1:
            return None
        for node in low:
            if node != local:
                return node
        for _used, node in high:
            if node != local:
                return node
        return None  # unreachable: one node besides the local one has room

    def places_here(self, spec: TaskSpec, hops: int, view: ClusterView) -> bool:
        """For callers that may skip ``place`` (read-only): True when ``place`` answers
        LOCAL to every request that is not spill-only for ``spec`` with ``hops`` (whatever
        its argument bytes); False leaves the answer to ``place``.

        It holds under the default strategy when the local node is feasible and either
        the hops pin the attempt (``max_hops`` forwards; at the hop cap, ``max_hops <=
        hop_cap``, the same test), or no other node has room while ``spec`` asks for
        something: then no other node is available now, so locality and ``_hybrid`` find
        none and pick the local node (available now), or wait there (feasible).
        """
        if spec.strategy.__class__ is not DefaultStrategy:
            return False
        need = spec.placement
        if hops < self.max_hops and (view.table.has_room_besides(view.local) or not _asks_for_something(need)):
            return False  # (the common "no" first: other nodes have room)
        return view.feasible_here(need)

    def _pinned_by_hops(self, request: PlacementRequest, view: ClusterView) -> Placement:
        if view.feasible_here(request.spec.placement):
            return STAY if request.spill_only else LOCAL
        spec = request.spec
        return Placement(
            PlacementKind.UNSCHEDULABLE,
            failure=failure(
                _unschedulable_kind(spec),
                f"{spec.name} was forwarded {request.hops} times and cannot run where it is",
                task=spec.task_id,
                hops=request.hops,
                node=view.local,
            ),
            reason="hop cap",
        )

    def _score(self, node: NodeID, view: ClusterView) -> float:
        used = view.utilization(node)
        return 0.0 if used < self.spread_threshold else used

    def _hybrid(self, request: PlacementRequest, view: ClusterView, *, locality: bool) -> Placement:
        need = request.spec.placement
        spill = request.spill_only
        if locality and request.arg_bytes_by_node:
            holder = _most_bytes(request.arg_bytes_by_node, view, self.locality_min_bytes)
            if holder is not None and view.available_now(holder, need):
                if not (spill and holder == view.local):
                    return _to(holder, view, "locality")
        best: NodeID | None = None
        best_score = 2.0
        local = view.local
        if not spill and view.available_now(local, need):
            best, best_score = local, self._score(local, view)
        if best_score > 0.0:
            other, score = self._first_other_with_room(view, need, best_score)
            if other is not None:
                best, best_score = other, score
        if best is not None:
            return _to(best, view, HYBRID_REASON)
        if spill:
            return STAY
        if view.feasible_here(need):
            return LOCAL
        for node in view.order:
            if not view.feasible(node, need):
                continue
            score = self._score(node, view)
            if score < best_score:
                best, best_score = node, score
        if best is None:
            return INFEASIBLE
        return _to(best, view, "hybrid (busy)")

    def _first_other_with_room(
        self, view: ClusterView, need: Mapping[str, int], best_score: float
    ) -> tuple[NodeID | None, float]:
        """The best node but the local one that is available now for ``need`` and scores
        below ``best_score``, with its score: nodes with room, below the threshold by id,
        then by utilization (``ResourceTable.with_room``); (None, best_score) if none."""
        local = view.local
        threshold = self.spread_threshold
        table = view.table
        if threshold != table.threshold:
            for node, used in table.with_room(threshold):
                if node == local:
                    continue
                score = 0.0 if used < threshold else used
                if score >= best_score:
                    break
                if view.available_now(node, need):
                    return node, score
            return None, best_score
        # The table's own indexes, read in place (no generator): ``low`` scores 0.0 (below
        # ``best_score``, which is positive), ``high`` scores its utilization, ascending.
        nodes = table.nodes
        for node in table.low:
            if node != local and fits(need, nodes[node].available):
                return node, 0.0
        for used, node in table.high:
            if used >= best_score:
                break
            if node != local and fits(need, nodes[node].available):
                return node, used
        return None, best_score

    def _spread(self, request: PlacementRequest, view: ClusterView) -> Placement:
        need = request.spec.placement
        order = view.order
        count = len(order)
        passes = (True,) if request.spill_only else (True, False)
        for want_available in passes:
            for step in range(count):
                index = (self.spread_cursor + step) % count
                node = order[index]
                if request.spill_only and node == view.local:
                    continue
                ok = view.available_now(node, need) if want_available else view.feasible(node, need)
                if ok:
                    self.spread_cursor = index + 1
                    return _to(node, view, "spread")
        return STAY if request.spill_only else INFEASIBLE


def _asks_for_something(need: Mapping[str, int]) -> bool:
    """Some quantity of ``need`` is positive (a node with nothing available cannot fit it)."""
    for amount in need.values():
        if amount > 0:
            return True
    return False


def _most_bytes(
    arg_bytes_by_node: tuple[tuple[NodeID, int], ...], view: ClusterView, min_bytes: int
) -> NodeID | None:
    """The live node holding the most argument bytes, at least ``min_bytes`` (ties: lowest id)."""
    best: NodeID | None = None
    best_bytes = 0
    for node, size in arg_bytes_by_node:
        if size <= 0 or size < min_bytes or not view.is_alive(node):
            continue
        if size > best_bytes or (size == best_bytes and best is not None and node < best):
            best, best_bytes = node, size
    return best


def _unschedulable_kind(spec: TaskSpec) -> ErrorKind:
    if spec.kind is _ACTOR_CREATION:
        return ErrorKind.ACTOR_UNSCHEDULABLE
    return ErrorKind.TASK_UNSCHEDULABLE


def _unschedulable(spec: TaskSpec, target: NodeID, view: ClusterView) -> Placement:
    if view.is_alive(target):
        why = f"does not have the resources it needs ({as_floats(spec.placement)})"
    else:
        why = "is dead or unknown"
    return Placement(
        PlacementKind.UNSCHEDULABLE,
        failure=failure(
            _unschedulable_kind(spec),
            f"{spec.name} has a hard node affinity to {target}, which {why}",
            task=spec.task_id,
            node=target,
        ),
        reason="hard affinity",
    )
