"""The simulator's virtual network: latency, fair bandwidth, partitions, node failures.

Owns: every message between simulated nodes (when it arrives, or why it does
not), the partition in force, which nodes are down, per-node slowdowns, and a
failure detector for the head node. Must not: decide anything about tasks,
objects or actors (callers do, from the callbacks), read the wall clock, draw
random numbers, or order anything by ``hash()`` or ``id()``.

Theory of operation
-------------------
A message goes through up to three phases, each on the SimPy clock:

1. *held*: sent across a partition in ``"hold"`` mode, or caught in flight by
   one; it waits, keeping the bytes it still has to move, until the partition
   is lifted (``heal`` or a new ``partition`` that reconnects its endpoints).
2. *transferring*: ``size_bytes`` move over the directed link ``(src, dst)``,
   whose bandwidth is shared equally by the transfers active on it (processor
   sharing, which is max-min fairness on a single link). Size 0 skips this.
3. *propagating*: after the last byte, the message arrives ``latency_s``
   later. Connectivity is checked on arrival: a partition that started and
   ended within the propagation delay does not touch the message.

Fair sharing costs O(log n) per start or end of a transfer, never a step per
node or per tick. Each link keeps a *work clock*: the number of bytes one
transfer on it has received since the link became busy (it advances at
``bandwidth / n_active``). A transfer started at work ``w0`` finishes when
the clock reaches ``w0 + size``; transfers sit in a heap ordered by that
finishing work (then by send sequence), and the link keeps exactly one live
timer, for the heap's head. A start or end advances the clock to ``now`` and
replaces the timer (SimPy timers cannot be cancelled: a stale one sees an
old generation number and does nothing).

Partitions: ``partition(groups)`` puts each listed group in its own island;
every node not listed belongs to one more island, *the rest*, so
``partition([["node-00003"]])`` isolates node-00003 from everyone.
``src == dst`` is always connected and costs nothing (a local hand-off).
A new ``partition`` replaces the previous one; ``heal()`` removes it.

Failure detector: ``watch(node, timeout_s, on_suspected)`` fires once if the
node stays down, or cut off from the head by a partition, for ``timeout_s``.
No heartbeats: one timer starts when the node becomes unreachable (or at
``watch`` if it already is) and is invalidated if it becomes reachable first.

Callbacks never run inside a call to a public method (``send``,
``partition``, ``node_down``...): those schedule them for the current
instant, so a callback may call back into the network safely. Everything is
ordered by a send sequence number or by insertion order, never by hash.
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import simpy

__all__ = [
    "DEFAULT_BANDWIDTH_BYTES_PER_S",
    "DEFAULT_LATENCY_S",
    "Message",
    "MessageState",
    "Network",
    "NetworkStats",
    "PartitionMode",
    "Watch",
]

DEFAULT_LATENCY_S = 0.0002  # one way, a LAN round trip of 0.4 ms
DEFAULT_BANDWIDTH_BYTES_PER_S = 1.25e9  # 10 Gbit/s per directed link

MessageCallback = Callable[["Message"], None]


class PartitionMode(str, enum.Enum):
    """What a partition does to a message that must cross it."""

    HOLD = "hold"  # kept, and sent on once the endpoints are connected again
    DROP = "drop"  # discarded; the sender's ``on_dropped`` is called


class MessageState(enum.Enum):
    HELD = "held"
    TRANSFERRING = "transferring"
    PROPAGATING = "propagating"
    DELIVERED = "delivered"
    DROPPED = "dropped"  # a partition in "drop" mode
    FAILED = "failed"  # an endpoint went down


_LIVE_STATES = frozenset({MessageState.HELD, MessageState.TRANSFERRING, MessageState.PROPAGATING})


@dataclass(slots=True, eq=False)
class Message:
    """One message in the network; every callback receives it.

    ``payload`` is the caller's; ``reason`` says why a message was dropped or
    failed (``"partitioned"``, ``"node_down:<node>"``).
    """

    seq: int
    src: str
    dst: str
    size_bytes: int
    payload: Any
    sent_at_s: float
    on_delivered: MessageCallback | None
    on_dropped: MessageCallback | None
    on_failed: MessageCallback | None
    state: MessageState = MessageState.HELD
    remaining_bytes: float = 0.0
    finish_work: float = 0.0  # the link's work clock value at which the transfer ends
    token: int = 0  # bumped on every phase change; invalidates stale timers and heap entries
    delivered_at_s: float | None = None
    reason: str | None = None

    @property
    def live(self) -> bool:
        return self.state in _LIVE_STATES


@dataclass(slots=True)
class NetworkStats:
    """Counters since the network was built (``held`` counts entries into the held state)."""

    messages: int = 0  # delivered
    bytes_moved: int = 0  # payload bytes of delivered messages
    dropped: int = 0
    failed: int = 0
    held: int = 0


@dataclass(slots=True, eq=False)
class Watch:
    """A failure-detector watch; ``cancel()`` stops it, ``fired`` tells if it did."""

    node: str
    timeout_s: float
    on_suspected: Callable[[str], None]
    network: Network
    fired: bool = False
    cancelled: bool = False
    timer_generation: int = 0
    timer_pending: bool = False

    def cancel(self) -> None:
        if self.fired or self.cancelled:
            return
        self.cancelled = True
        self.timer_generation += 1
        self.timer_pending = False
        self.network._forget_watch(self)


@dataclass(slots=True, eq=False)
class _Link:
    src: str
    dst: str
    work: float = 0.0
    updated_at_s: float = 0.0
    heap: list[tuple[float, int, int, Message]] = field(default_factory=list)
    active: dict[int, Message] = field(default_factory=dict)  # seq -> message, send order
    generation: int = 0


class Network:
    """A virtual network between node ids on a ``simpy.Environment``.

    ``latency_s`` is one way; ``bandwidth_bytes_per_s`` is per directed link
    (``set_link`` overrides both for one link). ``partition_mode`` chooses
    what partitions do to messages ("hold" or "drop"). ``head`` is the node
    the failure detector runs on.
    """

    def __init__(
        self,
        env: simpy.Environment,
        *,
        latency_s: float = DEFAULT_LATENCY_S,
        bandwidth_bytes_per_s: float = DEFAULT_BANDWIDTH_BYTES_PER_S,
        partition_mode: PartitionMode | str = PartitionMode.HOLD,
        head: str = "node-00000",
    ) -> None:
        _check_latency(latency_s)
        _check_bandwidth(bandwidth_bytes_per_s)
        self.env = env
        self.latency_s = float(latency_s)
        self.bandwidth_bytes_per_s = float(bandwidth_bytes_per_s)
        self.partition_mode = PartitionMode(partition_mode)
        self.head = head
        self.stats = NetworkStats()
        self._seq = 0
        self._links: dict[tuple[str, str], _Link] = {}  # only links with active transfers
        self._link_overrides: dict[tuple[str, str], tuple[float, float]] = {}
        self._slowdown: dict[str, float] = {}
        self._group_of: dict[str, int] = {}  # empty: no partition
        self._down: dict[str, None] = {}  # insertion-ordered set
        self._held: dict[int, Message] = {}
        self._by_node: dict[str, dict[int, Message]] = {}  # live messages touching a node
        self._watches: dict[str, list[Watch]] = {}

    # --- sending -----------------------------------------------------------------------

    def send(
        self,
        src: str,
        dst: str,
        size_bytes: int,
        payload: Any,
        on_delivered: MessageCallback | None,
        *,
        on_dropped: MessageCallback | None = None,
        on_failed: MessageCallback | None = None,
    ) -> Message:
        """Send ``payload`` (``size_bytes`` on the wire) from ``src`` to ``dst``.

        Exactly one callback runs per message, later: ``on_delivered`` on
        arrival, ``on_dropped`` if a partition in "drop" mode discards it,
        ``on_failed`` if ``src`` or ``dst`` is or goes down.
        """
        if size_bytes < 0:
            raise ValueError(f"size_bytes must be >= 0, got {size_bytes}")
        now = float(self.env.now)
        self._seq += 1
        message = Message(
            seq=self._seq,
            src=src,
            dst=dst,
            size_bytes=int(size_bytes),
            payload=payload,
            sent_at_s=now,
            on_delivered=on_delivered,
            on_dropped=on_dropped,
            on_failed=on_failed,
            remaining_bytes=float(size_bytes),
        )
        down = self._first_down(message)
        if down is not None:
            self._end(message, MessageState.FAILED, f"node_down:{down}", deferred=True)
            return message
        self._index(message)
        if src == dst:
            self._propagate(message, delay_s=0.0)
        elif not self.connected(src, dst):
            self._blocked(message, deferred=True)
        else:
            self._start(message)
        return message

    # --- topology ----------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the network into ``groups`` plus one group of every unlisted node.

        Replaces any partition in force. Transfers now crossing the partition
        stall ("hold": they resume with the bytes they had left) or fail
        ("drop"); held messages whose endpoints are connected again resume.
        """
        group_of: dict[str, int] = {}
        for index, group in enumerate(groups):
            for node in group:
                if node in group_of:
                    raise ValueError(f"node {node!r} is listed in two partition groups")
                group_of[node] = index
        self._group_of = group_of
        self._topology_changed()

    def heal(self) -> None:
        """Remove the partition: every node can talk to every live node again."""
        self._group_of = {}
        self._topology_changed()

    def connected(self, a: str, b: str) -> bool:
        """Whether the partition in force lets ``a`` and ``b`` talk (ignores down nodes)."""
        if a == b or not self._group_of:
            return True
        return self._group_of.get(a, -1) == self._group_of.get(b, -1)

    def node_down(self, node: str) -> None:
        """``node`` stops: every live message to or from it fails (``on_failed``)."""
        if node in self._down:
            return
        self._down[node] = None
        now = float(self.env.now)
        messages = list(self._by_node.get(node, {}).values())
        for link in self._links_touching(node):
            self._advance(link, now)
        for message in messages:
            self._detach(message)
            self._unindex(message)
            self._end(message, MessageState.FAILED, f"node_down:{node}", deferred=True)
        for link in self._links_touching(node):
            self._reschedule(link)
        self._refresh_watches([node])

    def node_up(self, node: str) -> None:
        """``node`` is back (a new incarnation, as far as callers are concerned)."""
        if node not in self._down:
            return
        del self._down[node]
        self._refresh_watches([node])

    def is_down(self, node: str) -> bool:
        return node in self._down

    def reachable_from_head(self, node: str) -> bool:
        """Up, and on the head's side of any partition (the failure detector's view)."""
        return node not in self._down and self.connected(self.head, node)

    # --- link properties ----------------------------------------------------------------

    def set_node_slowdown(self, node: str, factor: float) -> None:
        """Transfers on links touching ``node`` take ``factor`` times longer (1.0: normal).

        A link runs at the pace of its slower end; latency is unchanged.
        Transfers in progress continue at the new pace from now on.
        """
        if not factor > 0.0:
            raise ValueError(f"slowdown factor must be > 0, got {factor}")
        links = self._links_touching(node)
        now = float(self.env.now)
        for link in links:
            self._advance(link, now)
        if factor == 1.0:
            self._slowdown.pop(node, None)
        else:
            self._slowdown[node] = float(factor)
        for link in links:
            self._reschedule(link)

    def set_link(
        self,
        src: str,
        dst: str,
        *,
        latency_s: float | None = None,
        bandwidth_bytes_per_s: float | None = None,
    ) -> None:
        """Override latency and/or bandwidth of the directed link ``src -> dst``."""
        old_latency_s, old_bandwidth = self._link_overrides.get(
            (src, dst), (self.latency_s, self.bandwidth_bytes_per_s)
        )
        new_latency_s = old_latency_s if latency_s is None else float(latency_s)
        new_bandwidth = old_bandwidth if bandwidth_bytes_per_s is None else float(bandwidth_bytes_per_s)
        _check_latency(new_latency_s)
        _check_bandwidth(new_bandwidth)
        link = self._links.get((src, dst))
        if link is not None:
            self._advance(link, float(self.env.now))
        self._link_overrides[(src, dst)] = (new_latency_s, new_bandwidth)
        if link is not None:
            self._reschedule(link)

    def link_latency_s(self, src: str, dst: str) -> float:
        if src == dst:
            return 0.0
        override = self._link_overrides.get((src, dst))
        return self.latency_s if override is None else override[0]

    def link_bandwidth_bytes_per_s(self, src: str, dst: str) -> float:
        """The link's bandwidth now, slowdowns included."""
        override = self._link_overrides.get((src, dst))
        bandwidth = self.bandwidth_bytes_per_s if override is None else override[1]
        slowdown = max(self._slowdown.get(src, 1.0), self._slowdown.get(dst, 1.0))
        return bandwidth / slowdown

    # --- failure detector ---------------------------------------------------------------

    def watch(self, node: str, timeout_s: float, on_suspected: Callable[[str], None]) -> Watch:
        """Call ``on_suspected(node)`` once ``node`` has been unreachable from the head for ``timeout_s``.

        Unreachable means down, or separated from the head by a partition.
        The watch fires at most once; watch again for a new incarnation.
        """
        if not timeout_s >= 0.0:
            raise ValueError(f"timeout_s must be >= 0, got {timeout_s}")
        w = Watch(node=node, timeout_s=float(timeout_s), on_suspected=on_suspected, network=self)
        self._watches.setdefault(node, []).append(w)
        self._refresh_watch(w)
        return w

    # --- inspection ---------------------------------------------------------------------

    @property
    def held_now(self) -> int:
        """Messages waiting for a partition to heal."""
        return len(self._held)

    @property
    def active_transfers(self) -> int:
        return sum(len(link.active) for link in self._links.values())

    def check_invariants(self) -> None:
        """Cross-check every index; raises ``AssertionError`` naming what is wrong."""
        indexed: dict[int, Message] = {}
        for node, messages in self._by_node.items():
            for seq, message in messages.items():
                assert message.live, f"message {seq} in the index of {node} is {message.state}"
                assert node in (message.src, message.dst), f"message {seq} indexed under {node}"
                indexed[seq] = message
        for (src, dst), link in self._links.items():
            assert link.active, f"link {src}->{dst} is kept with no active transfer"
            for seq, message in link.active.items():
                assert message.state is MessageState.TRANSFERRING, f"{seq} on {src}->{dst} is {message.state}"
                assert (message.src, message.dst) == (src, dst), f"{seq} is on the wrong link"
                assert seq in indexed, f"transfer {seq} is not indexed by node"
                assert self.connected(src, dst), f"transfer {seq} crosses the partition"
        for seq, message in self._held.items():
            assert message.state is MessageState.HELD, f"held {seq} is {message.state}"
            assert seq in indexed, f"held {seq} is not indexed by node"
        for node, watches in self._watches.items():
            for w in watches:
                assert not (w.fired or w.cancelled), f"finished watch on {node} still registered"
                assert w.timer_pending == (not self.reachable_from_head(node)), (
                    f"watch on {node}: timer_pending={w.timer_pending} but reachable="
                    f"{self.reachable_from_head(node)}"
                )

    # --- phases (internal) --------------------------------------------------------------

    def _start(self, message: Message) -> None:
        """Put a connected message on its link, or straight into propagation if no bytes are left."""
        if message.remaining_bytes <= 0.0:
            self._propagate(message, self.link_latency_s(message.src, message.dst))
            return
        key = (message.src, message.dst)
        link = self._links.get(key)
        now = float(self.env.now)
        if link is None:
            link = self._links[key] = _Link(src=message.src, dst=message.dst, updated_at_s=now)
        else:
            self._advance(link, now)
        message.state = MessageState.TRANSFERRING
        message.token += 1
        message.finish_work = link.work + message.remaining_bytes
        link.active[message.seq] = message
        heapq.heappush(link.heap, (message.finish_work, message.seq, message.token, message))
        self._reschedule(link)

    def _propagate(self, message: Message, delay_s: float) -> None:
        message.state = MessageState.PROPAGATING
        message.remaining_bytes = 0.0
        message.token += 1
        token = message.token
        timer = self.env.timeout(delay_s)
        timer.callbacks.append(lambda _event: self._arrive(message, token))

    def _arrive(self, message: Message, token: int) -> None:
        if message.token != token or message.state is not MessageState.PROPAGATING:
            return  # failed or held since
        if not self.connected(message.src, message.dst):
            self._blocked(message, deferred=False)
            return
        self._unindex(message)
        message.delivered_at_s = float(self.env.now)
        self.stats.messages += 1
        self.stats.bytes_moved += message.size_bytes
        self._end(message, MessageState.DELIVERED, None, deferred=False)

    def _blocked(self, message: Message, *, deferred: bool) -> None:
        """A message that must cross the partition: hold it or drop it."""
        if self.partition_mode is PartitionMode.HOLD:
            message.state = MessageState.HELD
            message.token += 1
            self._held[message.seq] = message
            self.stats.held += 1
        else:
            self._unindex(message)
            self._end(message, MessageState.DROPPED, "partitioned", deferred=deferred)

    def _end(self, message: Message, state: MessageState, reason: str | None, *, deferred: bool) -> None:
        """Final state and the one callback; the message must already be out of every index."""
        message.state = state
        message.token += 1
        message.reason = reason
        if state is MessageState.DELIVERED:
            callback = message.on_delivered
        elif state is MessageState.DROPPED:
            self.stats.dropped += 1
            callback = message.on_dropped
        else:
            self.stats.failed += 1
            callback = message.on_failed
        if callback is None:
            return
        if deferred:
            timer = self.env.timeout(0.0)
            timer.callbacks.append(lambda _event: callback(message))
        else:
            callback(message)

    def _topology_changed(self) -> None:
        now = float(self.env.now)
        for link in list(self._links.values()):
            if self.connected(link.src, link.dst):
                continue
            self._advance(link, now)
            for message in list(link.active.values()):
                self._detach(message)
                self._blocked(message, deferred=True)
            self._reschedule(link)
        resumable = [m for m in self._held.values() if self.connected(m.src, m.dst)]
        resumable.sort(key=lambda m: m.seq)
        for message in resumable:
            del self._held[message.seq]
            self._start(message)
        self._refresh_watches(list(self._watches))

    def _detach(self, message: Message) -> None:
        """Take a live message off its link or the held list; it stays indexed by node.

        The link's work clock must already be advanced to now.
        """
        if message.state is MessageState.TRANSFERRING:
            link = self._links[(message.src, message.dst)]
            del link.active[message.seq]
            message.remaining_bytes = max(0.0, message.finish_work - link.work)
        elif message.state is MessageState.HELD:
            del self._held[message.seq]
        message.token += 1  # the heap entry and any propagation timer are now stale

    # --- links (internal) ---------------------------------------------------------------

    def _advance(self, link: _Link, now: float) -> None:
        """Bring the link's work clock to ``now`` at the rate in force until now."""
        if link.active and now > link.updated_at_s:
            rate = self.link_bandwidth_bytes_per_s(link.src, link.dst) / len(link.active)
            link.work += (now - link.updated_at_s) * rate
        link.updated_at_s = now

    def _reschedule(self, link: _Link) -> None:
        """One live timer per busy link, for the transfer that finishes first."""
        link.generation += 1
        head = self._heap_head(link)
        if head is None:
            assert not link.active, f"link {link.src}->{link.dst} has transfers but an empty heap"
            del self._links[(link.src, link.dst)]
            return
        rate = self.link_bandwidth_bytes_per_s(link.src, link.dst) / len(link.active)
        delay_s = max(0.0, head.finish_work - link.work) / rate
        generation = link.generation
        timer = self.env.timeout(delay_s)
        timer.callbacks.append(lambda _event: self._link_timer(link, generation))

    def _link_timer(self, link: _Link, generation: int) -> None:
        if link.generation != generation:
            return
        self._advance(link, float(self.env.now))
        head = self._heap_head(link)
        assert head is not None, f"live timer on idle link {link.src}->{link.dst}"
        link.work = max(link.work, head.finish_work)  # absorb float rounding
        while (head := self._heap_head(link)) is not None and head.finish_work <= link.work:
            heapq.heappop(link.heap)
            del link.active[head.seq]
            self._propagate(head, self.link_latency_s(head.src, head.dst))
        self._reschedule(link)

    @staticmethod
    def _heap_head(link: _Link) -> Message | None:
        heap = link.heap
        while heap:
            _finish, seq, token, message = heap[0]
            if message.token == token and seq in link.active:
                return message
            heapq.heappop(heap)
        return None

    def _links_touching(self, node: str) -> list[_Link]:
        return [link for link in self._links.values() if node in (link.src, link.dst)]

    # --- indexes (internal) -------------------------------------------------------------

    def _index(self, message: Message) -> None:
        self._by_node.setdefault(message.src, {})[message.seq] = message
        self._by_node.setdefault(message.dst, {})[message.seq] = message

    def _unindex(self, message: Message) -> None:
        for node in (message.src, message.dst):
            messages = self._by_node.get(node)
            if messages is not None:
                messages.pop(message.seq, None)
                if not messages:
                    del self._by_node[node]

    def _first_down(self, message: Message) -> str | None:
        for node in (message.src, message.dst):
            if node in self._down:
                return node
        return None

    # --- watches (internal) -------------------------------------------------------------

    def _refresh_watches(self, nodes: list[str]) -> None:
        for node in nodes:
            for w in list(self._watches.get(node, ())):
                self._refresh_watch(w)

    def _refresh_watch(self, w: Watch) -> None:
        if self.reachable_from_head(w.node):
            if w.timer_pending:
                w.timer_generation += 1
                w.timer_pending = False
            return
        if w.timer_pending:
            return
        w.timer_pending = True
        generation = w.timer_generation
        timer = self.env.timeout(w.timeout_s)
        timer.callbacks.append(lambda _event: self._watch_timer(w, generation))

    def _watch_timer(self, w: Watch, generation: int) -> None:
        if w.timer_generation != generation or w.fired or w.cancelled:
            return
        assert not self.reachable_from_head(w.node), f"watch on {w.node} fired while reachable"
        w.fired = True
        w.timer_pending = False
        self._forget_watch(w)
        w.on_suspected(w.node)

    def _forget_watch(self, w: Watch) -> None:
        watches = self._watches.get(w.node)
        if watches is None:
            return
        watches[:] = [other for other in watches if other is not w]
        if not watches:
            del self._watches[w.node]


def _check_latency(latency_s: float) -> None:
    if not latency_s >= 0.0:
        raise ValueError(f"latency_s must be >= 0, got {latency_s}")


def _check_bandwidth(bandwidth_bytes_per_s: float) -> None:
    if not bandwidth_bytes_per_s > 0.0:
        raise ValueError(f"bandwidth_bytes_per_s must be > 0, got {bandwidth_bytes_per_s}")
