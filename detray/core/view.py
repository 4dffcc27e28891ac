"""The resource view: what schedulers believe of the live nodes.

Owns: ``ResourceTable`` (the cluster's broadcast resource view: every live
node's incarnation, totals and last reported availability, less the
optimistic reservations of attempts forwarded to it since; the dead
incarnations; and indexes that find a node with room without looking at
every node) and ``ClusterView`` (one scheduler's window on the table: its
own node exact from its ledger, the others as the table has them).

Must not: decide placements (``policy.py`` does), read a clock, or change
anything on a read.

Theory of operation. In Ray every raylet keeps its own copy of the resource
view, refreshed by a periodic broadcast. Both detray drivers deliver a
report to every scheduler at the same instant, so the copies would differ
only by the reservations each scheduler makes when it forwards work. One
table shared by all the schedulers of a router keeps one copy: memory
O(nodes) instead of O(nodes^2), each report applied once instead of once
per node, and a joining node learns the cluster without a description of
every other node. Reservations are seen by every scheduler (two schedulers
no longer forward into the same free slot in the same instant, which in Ray
resolves itself by spillback at the next report). A ``Scheduler`` built on
its own gets a private table, so a single node behaves as before.

Indexes, kept exact on every change (``check`` proves it): ``order`` (live
node ids, sorted) and, for nodes with room (something available, or nothing
to offer at all), two sorted lists split at the spread threshold: ``low``
(utilization below it, by node id) and ``high`` (by utilization, then id).
The hybrid policy reads the local node, then ``low`` in id order, then
``high`` in utilization order, and stops at the first node that fits: with
requests of one shape the first candidate fits, so a placement costs the
same on 10 nodes as on 10,000. Feasibility ("does any node's total fit?")
is cached per request shape until membership changes.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from detray.core.ids import NodeID
from detray.core.resources import GPU, NodeResources, Units, fits, utilization

SPREAD_THRESHOLD = 0.5
"""Ray's ``scheduler_spread_threshold``: utilization below it scores 0."""
FEASIBLE_CACHE_MAX = 4096
"""Request shapes whose feasibility is remembered (cleared when membership changes)."""


@dataclass(slots=True)
class NodeView:
    """What the schedulers believe of one live node."""

    node: NodeID
    incarnation: int
    total: Units
    available: Units
    """For a scheduler's own node (``ClusterView.nodes_copy``) this is its ledger's map."""


class ResourceTable:
    """The live nodes as reported (and reserved since), with the indexes placement reads.

    Changed only by schedulers and the router that owns it, through ``join``,
    ``remove``, ``report`` and ``reserve``; each answers ``"ok"``, or why the
    change was dropped (``"duplicate"``, ``"stale"``).
    """

    __slots__ = ("threshold", "nodes", "order", "dead", "low", "high", "_util", "_feasible")

    def __init__(self, *, threshold: float = SPREAD_THRESHOLD) -> None:
        assert 0.0 <= threshold <= 1.0, threshold
        self.threshold = threshold
        self.nodes: dict[NodeID, NodeView] = {}
        self.order: list[NodeID] = []
        """Live node ids, sorted."""
        self.dead: dict[NodeID, int] = {}
        """The latest incarnation known dead, by node."""
        self.low: list[NodeID] = []
        """Nodes with room and utilization below ``threshold``, by id."""
        self.high: list[tuple[float, NodeID]] = []
        """Nodes with room and utilization at or above ``threshold``, by (utilization, id)."""
        self._util: dict[NodeID, float] = {}
        """Utilization of every node in ``low`` or ``high`` (absent: no room)."""
        self._feasible: dict[tuple[tuple[str, int], ...], bool] = {}

    # -- read ----------------------------------------------------------------------------

    def incarnation_of(self, node: NodeID) -> int | None:
        view = self.nodes.get(node)
        return None if view is None else view.incarnation

    def dead_incarnation(self, node: NodeID) -> int:
        return self.dead.get(node, -1)

    def utilization(self, node: NodeID) -> float:
        known = self._util.get(node)
        if known is not None:
            return known
        view = self.nodes[node]
        return utilization(view.total, view.available)

    def has_room(self, node: NodeID) -> bool:
        """The node has something available (it is in the room indexes)."""
        return node in self._util

    def has_room_besides(self, node: NodeID) -> bool:
        """Some node other than ``node`` is in the room indexes."""
        util = self._util
        return len(util) > 1 or (bool(util) and node not in util)

    def any_feasible(self, request: Mapping[str, int]) -> bool:
        key = tuple(sorted(request.items()))
        known = self._feasible.get(key)
        if known is None:
            known = any(fits(request, view.total) for view in self.nodes.values())
            if len(self._feasible) >= FEASIBLE_CACHE_MAX:
                self._feasible.clear()
            self._feasible[key] = known
        return known

    def with_room(self, threshold: float) -> Iterator[tuple[NodeID, float]]:
        """Nodes with room as (node, utilization): those below ``threshold`` by id, then
        the rest by (utilization, id). Nodes without room come last in no list: they fit
        no request that asks for anything."""
        if threshold == self.threshold:
            util = self._util
            for node in self.low:
                yield node, util[node]
            for used, node in self.high:
                yield node, used
            return
        # A policy with another threshold: the same order, computed (O(nodes)).
        ranked = sorted(
            (0.0 if used < threshold else used, node) for node, used in self._util.items()
        )
        for _score, node in ranked:
            yield node, self._util[node]

    # -- change ----------------------------------------------------------------------------

    def join(self, node: NodeID, incarnation: int, total: Mapping[str, int]) -> str:
        """A node joined or came back: a fresh view of it, everything free."""
        if incarnation <= self.dead.get(node, -1):
            return "stale"
        known = self.nodes.get(node)
        if known is not None:
            if incarnation < known.incarnation:
                return "stale"
            if incarnation == known.incarnation:
                return "duplicate"
            self._unindex(node)
        else:
            insort(self.order, node)
        self.nodes[node] = NodeView(node, incarnation, dict(total), dict(total))
        self._feasible.clear()
        self._index(node)
        return "ok"

    def remove(self, node: NodeID, incarnation: int) -> str:
        """A node's incarnation died (remembered, so its late events are stale)."""
        if incarnation > self.dead.get(node, -1):
            self.dead[node] = incarnation
        known = self.nodes.get(node)
        if known is None or incarnation < known.incarnation:
            return "stale"
        self._unindex(node)
        del self.nodes[node]
        del self.order[bisect_left(self.order, node)]
        self._feasible.clear()
        return "ok"

    def report(self, node: NodeID, incarnation: int, available: Mapping[str, int]) -> str:
        """The node's latest figure (clamped to [0, total]); replaces any reservation."""
        view = self.nodes.get(node)
        if view is None or view.incarnation != incarnation:
            return "stale"
        view.available = {
            name: min(max(available.get(name, 0), 0), cap) for name, cap in view.total.items()
        }
        self._reindex(node, view)
        return "ok"

    def reserve(self, node: NodeID, request: Mapping[str, int]) -> None:
        """Count an attempt just forwarded to ``node`` until its next report."""
        view = self.nodes[node]
        available = view.available
        for name, amount in request.items():
            if name in available:
                left = available[name] - amount
                available[name] = left if left > 0 else 0
        self._reindex(node, view)

    def _index(self, node: NodeID) -> None:
        self._insert(node, _room_utilization(self.nodes[node]))

    def _insert(self, node: NodeID, used: float | None) -> None:
        """Index an unindexed node by its utilization (None: it has no room)."""
        if used is None:
            return
        self._util[node] = used
        if used < self.threshold:
            insort(self.low, node)
        else:
            insort(self.high, (used, node))

    def _reindex(self, node: NodeID, view: NodeView) -> None:
        """``_unindex`` then ``_index`` after ``view.available`` changed. A node that stays
        in ``low`` keeps its place there (``low`` is by id), so only its utilization
        changes: no search, and no shift of a list as long as the nodes with room (a
        delete and an insert near the front of it are O(nodes) per change)."""
        used = _room_utilization(view)
        old = self._util.get(node)
        threshold = self.threshold
        if used is not None and old is not None and used < threshold and old < threshold:
            self._util[node] = used
            return
        self._unindex(node)
        self._insert(node, used)

    def _unindex(self, node: NodeID) -> None:
        used = self._util.pop(node, None)
        if used is None:
            return
        if used < self.threshold:
            del self.low[bisect_left(self.low, node)]
        else:
            del self.high[bisect_left(self.high, (used, node))]

    def check(self) -> None:
        """Every index agrees with the nodes (raises AssertionError)."""
        assert self.order == sorted(self.nodes), "table order"
        low: list[NodeID] = []
        high: list[tuple[float, NodeID]] = []
        for node, view in self.nodes.items():
            assert view.node == node, node
            assert view.incarnation > self.dead.get(node, -1), f"{node}: dead incarnation in the table"
            for name, cap in view.total.items():
                assert 0 <= view.available.get(name, 0) <= cap, f"{node}: {name} outside [0, {cap}]"
            has_room = any(a > 0 for a in view.available.values()) or not any(
                a > 0 for a in view.total.values()
            )
            if has_room:
                used = utilization(view.total, view.available)
                assert self._util.get(node) == used, f"{node}: indexed utilization"
                (low.append(node) if used < self.threshold else high.append((used, node)))
            else:
                assert node not in self._util, f"{node}: full but indexed"
        assert self.low == sorted(low), "low index"
        assert self.high == sorted(high), "high index"
        assert len(self._util) == len(low) + len(high), "indexed nodes that left"


def _room_utilization(view: NodeView) -> float | None:
    """The node's utilization when it has room (something available, or nothing to offer
    at all), else None: a full node fits no request that asks for something."""
    available = view.available
    for amount in available.values():
        if amount > 0:
            break
    else:
        for amount in view.total.values():
            if amount > 0:
                return None
    return utilization(view.total, available)


class ClusterView:
    """One scheduler's view: its own node from its ledger (exact, counting the demand
    queued there), every other live node from the shared ``ResourceTable``.

    Read by policies; changed only by the owning scheduler (``reset_local``).
    """

    __slots__ = ("local", "table", "_ledger", "_demand")

    def __init__(self, local: NodeID, table: ResourceTable, ledger: NodeResources, demand: Units) -> None:
        self.local = local
        self.table = table
        self._ledger = ledger
        self._demand = demand
        """Placement demand of attempts queued locally that hold nothing yet."""

    # -- read ----------------------------------------------------------------

    @property
    def order(self) -> list[NodeID]:
        """Live node ids, sorted (do not change the list)."""
        return self.table.order

    def is_alive(self, node: NodeID) -> bool:
        return node == self.local or node in self.table.nodes

    def feasible(self, node: NodeID, request: Mapping[str, int]) -> bool:
        """The node's totals fit ``request`` (it could run it some day)."""
        if node == self.local:
            return self.feasible_here(request)
        view = self.table.nodes.get(node)
        return view is not None and fits(request, view.total)

    def feasible_here(self, request: Mapping[str, int]) -> bool:
        """``feasible(local, request)``: ``fits`` inline (policies ask it for every attempt)."""
        total = self._ledger.total
        for name, amount in request.items():
            if amount > total.get(name, 0):
                return False
        return True

    def any_feasible(self, request: Mapping[str, int]) -> bool:
        return self.feasible_here(request) or self.table.any_feasible(request)

    def available_now(self, node: NodeID, request: Mapping[str, int]) -> bool:
        """The node has room for ``request`` now (locally: after queued demand)."""
        if node == self.local:
            available = self._ledger.available
            demand = self._demand
            for name, amount in request.items():
                if amount + demand.get(name, 0) > available.get(name, 0):
                    return False
            return self._ledger.can_allocate(request) if request.get(GPU, 0) else True
        view = self.table.nodes.get(node)
        return view is not None and fits(request, view.available)

    def utilization(self, node: NodeID) -> float:
        """Critical-resource utilization in [0, 1] (locally: counting queued demand)."""
        if node != self.local:
            return self.table.utilization(node)
        worst = 0.0
        demand = self._demand
        available = self._ledger.available
        for name, cap in self._ledger.total.items():
            if cap > 0:
                free = available.get(name, 0) - demand.get(name, 0)
                used = (cap - max(free, 0)) / cap
                if used > worst:
                    worst = used
        return worst

    def nodes_copy(self) -> dict[NodeID, NodeView]:
        """Every live node as this scheduler sees it, by id (copies; tests and tools)."""
        out = {
            n: NodeView(v.node, v.incarnation, dict(v.total), dict(v.available))
            for n, v in self.table.nodes.items()
            if n != self.local
        }
        local = self.table.nodes.get(self.local)
        incarnation = -1 if local is None else local.incarnation
        out[self.local] = NodeView(
            self.local, incarnation, dict(self._ledger.total), dict(self._ledger.available)
        )
        return dict(sorted(out.items()))

    # -- scheduler only ---------------------------------------------------------

    def reset_local(self, ledger: NodeResources) -> None:
        """(scheduler only) The local node joined (or its ledger was rebuilt)."""
        self._ledger = ledger
