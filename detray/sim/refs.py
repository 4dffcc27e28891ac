"""Reference counting in the simulator: record at any time, apply at switch points.

Owns: the ledger the ``ObjectRef``/``ActorHandle`` hooks write to. A hook may
run at any point (``__del__`` during garbage collection, in another thread,
inside another runtime call): it only appends to a thread-safe deque. The
loop takes the batch at each switch point (user code handed control back)
and turns it into ``RefsAdded``/``RefsRemoved`` events, in a fixed order: all
additions (by owner, then object id) before all removals (same order), so a
reference created and dropped within one step still counts up before it
counts down, and no count drops to zero by accident in between.

Must not: decide anything (the task manager counts and frees) or order by
``hash()``/``id()``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from detray.core.events import Event, RefsAdded, RefsRemoved
from detray.core.ids import ActorID, ObjectID, WorkerID
from detray.core.records import builder

_ADD = 1
_REMOVE = -1
# Positional builders: half the cost of a frozen dataclass's keyword __init__.
_BUILD = {
    _ADD: builder(RefsAdded, "now", "stimulus_id", "owner", "objects"),
    _REMOVE: builder(RefsRemoved, "now", "stimulus_id", "owner", "objects"),
}


class RefLedger:
    """Reference changes recorded since the last switch point."""

    def __init__(self) -> None:
        # The loop reads these two (never reassigned) to see pending changes without a call.
        self.refs: deque[tuple[int, ObjectID]] = deque()
        self.actors: deque[tuple[int, ActorID]] = deque()
        self.closed = False

    # hooks (cheap, never raise)

    def ref_added(self, obj: ObjectID) -> None:
        if not self.closed:
            self.refs.append((_ADD, obj))

    def ref_removed(self, obj: ObjectID) -> None:
        if not self.closed:
            self.refs.append((_REMOVE, obj))

    def actor_added(self, actor: ActorID) -> None:
        if not self.closed:
            self.actors.append((_ADD, actor))

    def actor_removed(self, actor: ActorID) -> None:
        if not self.closed:
            self.actors.append((_REMOVE, actor))

    def pending(self) -> bool:
        return bool(self.refs) or bool(self.actors)

    # at a switch point

    def take_ref_events(
        self, owner_of: Callable[[ObjectID], WorkerID | None], *, now: float, stimulus_id: str
    ) -> tuple[list[Event], int]:
        """The batch as events (additions first), and how many changes named unknown objects."""
        refs = self.refs
        count = len(refs)
        if not count:
            return [], 0
        if count == 1:  # the common case (one submission's return ref): no grouping or sorting
            sign, obj = refs.popleft()
            owner = owner_of(obj)
            if owner is None:
                return [], 1
            return [_BUILD[sign](now, stimulus_id, owner, (obj,))], 0
        added: dict[WorkerID, list[ObjectID]] = {}
        removed: dict[WorkerID, list[ObjectID]] = {}
        unknown = 0
        popleft = refs.popleft
        for _ in range(count):
            sign, obj = popleft()
            owner = owner_of(obj)
            if owner is None:
                unknown += 1
                continue
            target = added if sign == _ADD else removed
            bucket = target.get(owner)
            if bucket is None:
                bucket = target[owner] = []
            bucket.append(obj)
        events: list[Event] = []
        for sign, target in ((_ADD, added), (_REMOVE, removed)):
            build = _BUILD[sign]
            for owner in sorted(target):
                events.append(build(now, stimulus_id, owner, tuple(sorted(target[owner]))))
        return events, unknown

    def take_actor_changes(self) -> list[tuple[ActorID, int]]:
        """Net handle count change per actor touched, sorted by actor id (zero included:
        a handle made and dropped within one step still leaves its actor to check)."""
        actors = self.actors
        count = len(actors)
        if not count:
            return []
        net: dict[ActorID, int] = {}
        popleft = actors.popleft
        for _ in range(count):
            sign, actor = popleft()
            net[actor] = net.get(actor, 0) + sign
        return [(actor, net[actor]) for actor in sorted(net)]
