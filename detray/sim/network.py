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
old generation number and does nothing). A link with one transfer skips the
clock work when it ends: the link goes idle and its clock with it.

Timers are bare events pushed onto SimPy's heap (``timers.Timer``,
``timers.heap_of``), not ``env.timeout`` plus a closure: the same events at
the same instants in the same order, for a fraction of the cost.

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
from heapq import heappush
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import simpy

from detray.sim.timers import NORMAL, Timer, heap_of

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
# The states as module globals: reading one costs a fifth of reading an Enum member.
_HELD, _TRANSFERRING, _PROPAGATING = MessageState.HELD, MessageState.TRANSFERRING, MessageState.PROPAGATING
_DELIVERED, _DROPPED, _FAILED = MessageState.DELIVERED, MessageState.DROPPED, MessageState.FAILED


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
    bandwidth: float  # bytes/s now, slowdowns included (refreshed when either changes)
    latency_s: float  # refreshed by ``set_link``
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
        self._idle_links: dict[tuple[str, str], _Link] = {}  # links used before; dropped when properties change
        self._link_overrides: dict[tuple[str, str], tuple[float, float]] = {}
        self._slowdown: dict[str, float] = {}
        self._group_of: dict[str, int] = {}  # empty: no partition
        self._down: dict[str, None] = {}  # insertion-ordered set
        self._held: dict[int, Message] = {}
        self._live: dict[int, Message] = {}  # every live message, in send order
        self._watches: dict[str, list[Watch]] = {}
        self._events, self._event_ids = heap_of(env)  # hot paths push timers themselves (timers.heap_of)
        self._arrival_callbacks = (self._arrival_timer,)
        self._link_callbacks = (self._link_timer,)

    # --- sending -----------------------------------------------------------------------

    def send(
        self,
        src: str,
        dst: str,
        size_bytes: int,
        payload: Any,
        on_delivered: MessageCallback | None,
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
        now = float(self.env._now)  # the clock without the property call
        self._seq += 1
        message = Message(  # positional: half the cost of keywords
            self._seq, src, dst, int(size_bytes), payload, now, on_delivered, on_dropped, on_failed,
            _HELD, float(size_bytes),  # state, remaining_bytes
        )
        if self._down:  # checked first: usually no node is down
            down = self._first_down(message)
            if down is not None:
                self._end(message, _FAILED, f"node_down:{down}", deferred=True)
                return message
        self._live[message.seq] = message
        if src == dst:
            self._propagate(message, delay_s=0.0)
        elif self._group_of and not self.connected(src, dst):
            self._blocked(message, deferred=True)
        else:
            self._start(message, now)
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
        messages = [m for m in self._live.values() if node in (m.src, m.dst)]
        for link in self._links_touching(node):
            self._advance(link, now)
        for message in messages:
            self._detach(message)
            del self._live[message.seq]
            self._end(message, _FAILED, f"node_down:{node}", deferred=True)
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
        self._idle_links.clear()  # their cached bandwidth may be stale
        for link in links:
            link.bandwidth = self.link_bandwidth_bytes_per_s(link.src, link.dst)
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
        self._idle_links.pop((src, dst), None)  # its cached properties are stale
        if link is not None:
            link.bandwidth = self.link_bandwidth_bytes_per_s(src, dst)
            link.latency_s = self.link_latency_s(src, dst)
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
        indexed = self._live
        for seq, message in indexed.items():
            assert message.live, f"live message {seq} is {message.state}"
            assert message.seq == seq, f"message {message.seq} indexed as {seq}"
        for (src, dst), link in self._links.items():
            assert link.active, f"link {src}->{dst} is kept with no active transfer"
            assert (src, dst) not in self._idle_links, f"link {src}->{dst} is both busy and idle"
            assert link.bandwidth == self.link_bandwidth_bytes_per_s(src, dst), f"stale bandwidth on {src}->{dst}"
            assert link.latency_s == self.link_latency_s(src, dst), f"stale latency on {src}->{dst}"
            for seq, message in link.active.items():
                assert message.state is _TRANSFERRING, f"{seq} on {src}->{dst} is {message.state}"
                assert (message.src, message.dst) == (src, dst), f"{seq} is on the wrong link"
                assert seq in indexed, f"transfer {seq} is not indexed as live"
                assert self.connected(src, dst), f"transfer {seq} crosses the partition"
        for seq, message in self._held.items():
            assert message.state is _HELD, f"held {seq} is {message.state}"
            assert seq in indexed, f"held {seq} is not indexed as live"
        for node, watches in self._watches.items():
            for w in watches:
                assert not (w.fired or w.cancelled), f"finished watch on {node} still registered"
                assert w.timer_pending == (not self.reachable_from_head(node)), (
                    f"watch on {node}: timer_pending={w.timer_pending} but reachable="
                    f"{self.reachable_from_head(node)}"
                )

    # --- phases (internal) --------------------------------------------------------------

    def _start(self, message: Message, now: float) -> None:
        """Put a connected message on its link, or straight into propagation if no bytes are left."""
        remaining = message.remaining_bytes
        if remaining <= 0.0:
            self._propagate(message, self.link_latency_s(message.src, message.dst))
            return
        key = (message.src, message.dst)
        link = self._links.get(key)
        message.state = _TRANSFERRING
        message.token += 1
        if link is None:
            # An idle link: its clock starts at 0 and this transfer is alone, so the
            # timer is _reschedule's max(0, remaining - 0) / (bandwidth / 1), exactly.
            link = self._links[key] = self._wake_link(key, now)
            message.finish_work = remaining
            link.active[message.seq] = message
            link.heap.append((remaining, message.seq, message.token, message))
            link.generation += 1
            timer = Timer(self._link_callbacks, link, link.generation)
            delay_s = remaining / link.bandwidth
            heappush(self._events, (self.env._now + delay_s, NORMAL, next(self._event_ids), timer))  # env.schedule
            return
        self._advance(link, now)
        message.finish_work = link.work + remaining
        link.active[message.seq] = message
        heapq.heappush(link.heap, (message.finish_work, message.seq, message.token, message))
        self._reschedule(link)

    def _propagate(self, message: Message, delay_s: float) -> None:
        message.state = _PROPAGATING
        message.remaining_bytes = 0.0
        message.token += 1
        timer = Timer(self._arrival_callbacks, message, message.token)
        heappush(self._events, (self.env._now + delay_s, NORMAL, next(self._event_ids), timer))  # env.schedule

    def _arrival_timer(self, timer: Timer) -> None:
        message: Message = timer.target
        if message.token != timer.token or message.state is not _PROPAGATING:
            return  # failed or held since
        if self._group_of and not self.connected(message.src, message.dst):
            self._blocked(message, deferred=False)
            return
        del self._live[message.seq]
        message.delivered_at_s = float(self.env._now)
        stats = self.stats
        stats.messages += 1
        stats.bytes_moved += message.size_bytes
        message.state = _DELIVERED  # _end(message, _DELIVERED, None, deferred=False), inlined
        message.token += 1
        callback = message.on_delivered
        if callback is not None:
            callback(message)

    def _blocked(self, message: Message, *, deferred: bool) -> None:
        """A message that must cross the partition: hold it or drop it."""
        if self.partition_mode is PartitionMode.HOLD:
            message.state = _HELD
            message.token += 1
            self._held[message.seq] = message
            self.stats.held += 1
        else:
            del self._live[message.seq]
            self._end(message, _DROPPED, "partitioned", deferred=deferred)

    def _end(self, message: Message, state: MessageState, reason: str | None, *, deferred: bool) -> None:
        """Final state and the one callback; the message must already be out of every index."""
        message.state = state
        message.token += 1
        message.reason = reason
        if state is _DELIVERED:
            callback = message.on_delivered
        elif state is _DROPPED:
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
            self._start(message, now)
        self._refresh_watches(list(self._watches))

    def _detach(self, message: Message) -> None:
        """Take a live message off its link or the held list; it stays indexed by node.

        The link's work clock must already be advanced to now.
        """
        if message.state is _TRANSFERRING:
            link = self._links[(message.src, message.dst)]
            del link.active[message.seq]
            message.remaining_bytes = max(0.0, message.finish_work - link.work)
        elif message.state is _HELD:
            del self._held[message.seq]
        message.token += 1  # the heap entry and any propagation timer are now stale

    # --- links (internal) ---------------------------------------------------------------

    def _advance(self, link: _Link, now: float) -> None:
        """Bring the link's work clock to ``now`` at the rate in force until now."""
        if link.active and now > link.updated_at_s:
            link.work += (now - link.updated_at_s) * (link.bandwidth / len(link.active))
        link.updated_at_s = now

    def _reschedule(self, link: _Link) -> None:
        """One live timer per busy link, for the transfer that finishes first."""
        link.generation += 1
        head = self._heap_head(link)
        if head is None:
            assert not link.active, f"link {link.src}->{link.dst} has transfers but an empty heap"
            self._idle(link)
            return
        rate = link.bandwidth / len(link.active)
        delay_s = max(0.0, head.finish_work - link.work) / rate
        timer = Timer(self._link_callbacks, link, link.generation)
        heappush(self._events, (self.env._now + delay_s, NORMAL, next(self._event_ids), timer))  # env.schedule

    def _link_timer(self, timer: Timer) -> None:
        link: _Link = timer.target
        if link.generation != timer.token:
            return
        active = link.active
        if len(active) == 1:
            # The only transfer ends and the link goes idle: its work clock no longer matters.
            (message,) = active.values()
            active.clear()
            link.generation += 1
            self._idle(link)
            self._propagate(message, link.latency_s)
            return
        self._advance(link, float(self.env._now))
        head = self._heap_head(link)
        assert head is not None, f"live timer on idle link {link.src}->{link.dst}"
        link.work = max(link.work, head.finish_work)  # absorb float rounding
        while (head := self._heap_head(link)) is not None and head.finish_work <= link.work:
            heapq.heappop(link.heap)
            del active[head.seq]
            self._propagate(head, link.latency_s)
        self._reschedule(link)

    def _wake_link(self, key: tuple[str, str], now: float) -> _Link:
        """The link ``key`` becoming busy at ``now``: a fresh clock, on a kept object if there is one."""
        link = self._idle_links.pop(key, None)
        if link is None:
            src, dst = key
            link = _Link(src, dst, self.link_bandwidth_bytes_per_s(src, dst), self.link_latency_s(src, dst))
        link.work = 0.0
        link.updated_at_s = now
        return link

    def _idle(self, link: _Link) -> None:
        """``link`` has no transfer left: off the busy list, kept for reuse (saves building one per message)."""
        key = (link.src, link.dst)
        del self._links[key]
        link.heap.clear()
        self._idle_links[key] = link

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
