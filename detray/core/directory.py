"""The object directory: objects, their copies per node, store capacity, and waiters.

Owns: every object's status (pending, available, lost, failed, freed) and
size; which nodes hold a copy (in memory or spilled), which copy is the
pinned primary; each node's store capacity and used bytes; the pulls and
restores in flight; the waiters (``get``, ``wait``, argument fetches,
argument-existence requests) and when to wake them.

Must not: decide lineage or retries (the task manager does, on
``ReportLost``), count references (the owner does, and says ``FreeObject``),
touch bytes, read a clock or draw randomness. It only decides, and returns
commands (``PullObject``, ``DeleteCopy``, ``SpillObject``, ``RestoreObject``,
``WakeWaiter``, ``ReportLost``, ``ReportArgumentsMissing``, ``SetTimer``) for a
driver or the router.

Theory of operation
-------------------
*Copies.* A creation (``TaskFinished``/``TaskFailed`` return sizes, error
values included, or ``ObjectPut``) stores the *primary* copy on the node. The
primary of a referenced object is pinned: never evicted, only spilled. Pulls
add *secondary* copies, which are evicted least-recently-used first when
room is needed. A copy is *held* (temporarily pinned, neither evicted nor
spilled) while it is the source of a pull in flight, while a fetch waiter on
its node counts it as ready, and, for an attempt's argument fetch (waiter
``fetch:<task>:<attempt>:<node>``) answered without a failure, from the wake
until the scheduler says the attempt left the node (``ReleaseArguments``,
delivered as ``WaiterCancelled`` of the same waiter id). So an attempt's
arguments stay local while it waits for resources or a worker and while it
runs, as Ray's raylet pins the arguments of the tasks it has granted (and
its pull manager pins what it pulled for queued ones). If a held copy of an
answered fetch goes anyway (a fault evicts it, its object fails for its
owner's death or is freed), the directory forgets it for that fetch and
says ``ReportArgumentsMissing``: the scheduler fetches again (a new
``FetchArguments`` for the same waiter replaces the old holds) unless the
attempt already runs.

*Room.* Placing ``size`` bytes on a node plans first, then acts: evict
unheld secondaries (LRU, ties by object id), then, when the node has
``spill_enabled``, spill unheld in-memory primaries (LRU). If the plan
cannot free enough, nothing is touched and the placement fails: a new
primary is then spilled itself (spill enabled) or fails with
``OBJECT_STORE_FULL`` (details: object size, store capacity, pinned bytes);
a secondary copy is not kept (``DeleteCopy``): an admitted argument fetch
that wanted it goes back in line (see *Admission*), a ``get``/``wait``
fetch on that node gets an ``OBJECT_STORE_FULL`` failure for it (the
object itself stays available elsewhere). So, always: a node's used bytes
equal the sizes of its in-memory copies, and never exceed its capacity
(spilled bytes do not count). A copy is *pinned* when no plan may free it:
it is held, or it is a primary on a node that cannot spill; each store
counts its pinned bytes and its *inbound* bytes (pulls to it and restores
on it in flight), so a placement fits exactly when pinned + size <=
capacity.

*Admission* (Ray's pull admission control). An attempt's argument fetch
that is not satisfied at once waits in its node's FIFO line
(``WAITING_FOR_ROOM``, see ``FETCH_TRANSITIONS``) until its arguments fit
together beside what the node keeps for others: pinned + inbound bytes not
its own + the sizes of all its live arguments <= capacity. Only then is it
*admitted* (pulls and restores start, copies are held as they arrive). A
fetch whose arguments are all in memory there already is answered at once,
line or not: it takes no new room. A waiting fetch holds nothing and starts nothing, but it is a registered
waiter: failures and frees of its objects reach it, and a lost object it
needs is reported (reconstruction does not wait for room). Whenever a
store's pinned or inbound bytes change, or a waiting fetch's objects
change, the store is marked and, at the end of the event, its line is
admitted from the head while the head fits (strict FIFO: nobody overtakes
a head that does not fit). A fetch fails with ``OBJECT_STORE_FULL`` only
when it can never fit: its arguments together are larger than the store,
or, on a node that cannot spill, larger than what the primaries kept there
leave; or when the node already has ``waiting_for_room_max`` fetches
waiting (a safety bound). An admitted fetch whose copy still arrives
without room (room it counted on was taken by something that is not
admitted: a ``get``, a new primary, a fetch satisfied at once; or by an
admitted fetch whose bytes were not on their way yet when it was counted:
an object still being created, restored on another node, or waiting for
a pull retry) lets go of
its holds and goes back in line in arrival order; it is not readmitted
before room frees, since the check that admits it is the one that just
failed. No deadlock between fetches: only admitted fetches hold, a
waiting one holds nothing, and a held copy belongs to an attempt whose
arguments are all local (it waits only for resources and a worker, never
for a fetch) or to one still pulling (which never waits for room: it goes
back in line instead). What remains is the case Ray has too (its pull
manager warns that the job "may hang"): a running task whose held
arguments fill the store blocks in ``get`` on a task whose arguments do
not fit beside them (directly, or through an attempt that waits for
resources the blocked task keeps, such as its GPUs); the simulator
reports it as a deadlock. ``get`` and
``wait`` fetches are not queued (Ray gives them priority over task
arguments): a running task may wait in ``get`` behind its own held
arguments, so they pull at once and fail as before when a copy finds no
room on their node. A restore on a home node for fetches elsewhere (the
only copy is spilled there; any fetch, a ``get`` too) waits in that
node's ``restores_waiting`` until it fits beside what the node keeps,
then starts; it fails nobody (only an object larger than that store
fails, as before). ``room_wanted`` tells a diagnosis (the simulator's
deadlock report) what a waiting fetch needs.

*Waiters.* ``ObjectsRequested(waiter, node, objects, num_required, fetch)``
registers a waiter (objects are deduplicated, ``num_required`` is clamped to
their number). An object is *ready* for a waiter when it is available
(``fetch=False``) or has an in-memory copy on the waiter's node
(``fetch=True``); it is *failed* when the object failed or was freed, or it
can never be local there. When ready + failed reach ``num_required`` the
waiter gets exactly one ``WakeWaiter`` (ready and failed in request order)
and is forgotten (an argument fetch keeps its holds, see *Copies*); a fetch
satisfied on a node refreshes the LRU order of the copies it used (ties by
object id). ``WaiterCancelled`` forgets a waiter, or releases the holds of an
answered argument fetch. A fetch waiter (or the holds of an answered one) on
a node that dies is dropped without a wake (counted).

*Fetching.* For a fetch of an available object not in memory on the node:
a copy spilled on that node is restored there (``RestoreObject``); otherwise
it is pulled (``PullObject``) from the lowest node id holding an in-memory
copy, at most one pull in flight per (object, node). When the only copy is
a spilled primary elsewhere, it is restored on its node first (when it fits
there, see *Admission*), then pulled.
A failed pull is retried from the next holder not yet tried; when every
holder has failed, a ``SetTimer`` (``pull_retry_s`` later) retries them all:
the object still has copies, so it is not lost. ``ObjectPullFailed`` never
drops a copy: only ``NodeDied`` and ``CopiesEvicted`` report copies gone.

*Loss.* When the primary's copy is gone (node death, a fault) the lowest
node id holding a secondary copy is promoted to primary (pinned). With no
copy left the object is *lost*; reconstruction is lazy: ``ReportLost`` is
emitted once per loss, only while some waiter still waits for the object
(now, or when one arrives later). Waiters keep waiting: a recreation (a
resubmitted task finishing) wakes them, a ``FailObject`` fails them.

*Freeing.* ``FreeObject`` (the owner's count reached zero) deletes every copy
(``DeleteCopy``) and forgets the object, keeping a bounded tombstone: waiters
already waiting fail with ``OBJECT_LOST`` saying the object was freed; a later
request that is not satisfied at once makes it *lost* again (``ReportLost``:
the owner rebuilds it from the lineage it kept, or fails it), and a later
creation of it while the tombstone stands is deleted on arrival.

Stale or duplicate events (a dead node incarnation, a pull or restore no
longer in flight, a second free, a fail of an object that has a value) are
dropped and counted in ``stats``. Results carry no node incarnation and the
directory does not know attempts: a result reported from a live node is a
real copy in its store and is kept (the task manager judges attempts); a
result of a failed object is deleted on arrival. An object larger than the
store it was spilled on can never be restored: fetches of it fail with
``OBJECT_STORE_FULL`` (there is no fallback allocation as in Ray's plasma).
There are no cascades across objects here: every handler does work bounded
by the copies and waiters it touches, and the admission passes at the end of
an event run as a work list over the stores it marked, with a loud cap.

Internal commands, as the router delivers them (helpers below):
``FetchArguments`` -> ``fetch_request`` -> ``ObjectsRequested(fetch=True,
waiter=fetch_waiter_id(task, attempt, node))``, answered by a ``WakeWaiter``
that ``arguments_fetched`` turns into ``ArgumentsFetched``; the scheduler's
``ReleaseArguments`` -> ``argument_release`` -> ``WaiterCancelled`` of that
waiter; ``ReportArgumentsMissing`` (emitted here) -> ``arguments_missing`` ->
the scheduler's ``ArgumentsMissing``;
``RequestObjects`` -> ``existence_request`` -> ``ObjectsRequested(fetch=False)``;
``FailObject`` -> ``ObjectFailed``; ``FreeObject`` -> ``ObjectFreed``;
``ReportLost`` (emitted here) -> the task manager's ``ObjectLost``.
"""

from __future__ import annotations

import enum
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from detray.core.commands import (
    Command,
    DeleteCopy,
    FetchArguments,
    PullObject,
    ReleaseArguments,
    ReportArgumentsMissing,
    ReportLost,
    RequestObjects,
    RestoreObject,
    SetTimer,
    SpillObject,
    WakeWaiter,
)
from detray.core.errors import ErrorKind, Failure, InvalidTransition, failure
from detray.core.events import (
    ArgumentsFetched,
    ArgumentsMissing,
    CopiesEvicted,
    Event,
    NodeDied,
    NodeJoined,
    ObjectCopied,
    ObjectFailed,
    ObjectFreed,
    ObjectPullFailed,
    ObjectPut,
    ObjectRestored,
    ObjectsRequested,
    TaskFailed,
    TaskFinished,
    TimerFired,
    WaiterCancelled,
)
from detray.core.ids import NodeID, ObjectID, TaskID
from detray.core.records import builder


# Records built on the hot path: ``records.builder`` (positional, in the order named).
_build_request = builder(ObjectsRequested, "now", "stimulus_id", "waiter", "node", "objects", "num_required", "fetch")
_build_cancelled = builder(WaiterCancelled, "now", "stimulus_id", "waiter")
_build_fetched = builder(ArgumentsFetched, "now", "stimulus_id", "task", "attempt", "node", "failure")
_build_wake = builder(WakeWaiter, "stimulus_id", "waiter", "ready", "failed")
_build_delete = builder(DeleteCopy, "stimulus_id", "obj", "node", "reason")
_build_pull = builder(PullObject, "stimulus_id", "obj", "source", "node", "size_bytes")

PULL_RETRY_S = 1.0
"""Delay before pulling again from holders that all failed (a partition may heal)."""
FREED_REMEMBERED_MAX = 100_000
"""Tombstones of freed objects kept; older ones are forgotten (then unknown, not freed)."""
STORY_LINES_MAX = 50_000
"""Story lines kept, all ids together (the oldest go first)."""
WAITING_FOR_ROOM_MAX = 100_000
"""Argument fetches waiting per node at most (admitted or in line); more are refused."""
ADMISSION_PASSES_MAX = 1_000_000
"""Admission passes in one event at most: more is a bug (a pass that keeps re-marking)."""

FETCH_WAITER_PREFIX = "fetch:"
PULL_RETRY_TIMER_PREFIX = "directory:pull-retry:"


class ObjectStatus(enum.Enum):
    """Lifecycle of one object, in lifecycle order (PENDING is the initial state)."""

    PENDING = "pending"
    """Known (requested, or being decided) but not created yet."""
    AVAILABLE = "available"
    """At least one copy, in memory or spilled; exactly one of them is the primary."""
    LOST = "lost"
    """Had copies, none left: waiters wait for a recreation or a failure."""
    FAILED = "failed"
    """Will never have a value: waiters get the failure."""
    FREED = "freed"
    """The owner released every reference: forgotten, only a tombstone is left."""


class CopyState(enum.Enum):
    IN_MEMORY = "in_memory"
    SPILLED = "spilled"


class FetchState(enum.Enum):
    """An attempt's argument fetch (waiter ``fetch:<task>:<attempt>:<node>``), in order."""

    NEW = "new"
    WAITING_FOR_ROOM = "waiting_for_room"
    """In its node's line: its arguments do not fit yet; it holds and pulls nothing."""
    ADMITTED = "admitted"
    """Pulling and restoring; it holds the copies that arrived."""
    HOLDING = "holding"
    """Answered with every argument local: holds them until ``ReleaseArguments``."""
    DONE = "done"
    """Forgotten: released, answered with a failure, cancelled, or its node died."""

    def __str__(self) -> str:  # story lines format members lazily: "new -> admitted"
        return self.value


_S = ObjectStatus
TRANSITIONS: dict[tuple[ObjectStatus, ObjectStatus], str] = {
    (_S.PENDING, _S.AVAILABLE): "created: TaskFinished/TaskFailed/ObjectPut stored the primary",
    (_S.PENDING, _S.FAILED): "FailObject, or the primary does not fit and spilling is off",
    (_S.PENDING, _S.FREED): "FreeObject before the object was created",
    (_S.PENDING, _S.LOST): "requested after it was freed: the owner rebuilds or fails it",
    (_S.AVAILABLE, _S.LOST): "last copy gone (NodeDied, CopiesEvicted)",
    (_S.AVAILABLE, _S.FREED): "FreeObject: every copy deleted",
    (_S.AVAILABLE, _S.FAILED): "FailObject(OWNER_DIED): nobody may read it now; every copy deleted",
    (_S.LOST, _S.AVAILABLE): "recreated (a resubmitted task finished)",
    (_S.LOST, _S.FAILED): "FailObject (cannot be rebuilt), or the recreation does not fit",
    (_S.LOST, _S.FREED): "FreeObject while lost",
    (_S.FAILED, _S.FREED): "FreeObject of a failed object",
}
"""Legal moves of an object's status (``PENDING`` is where every object starts)."""

COPY_TRANSITIONS: dict[tuple[CopyState, CopyState], str] = {
    (CopyState.IN_MEMORY, CopyState.SPILLED): "SpillObject: a pinned primary makes room",
    (CopyState.SPILLED, CopyState.IN_MEMORY): "ObjectRestored: read back for a fetch",
}
"""Legal moves of one copy (a copy is created in memory, or spilled when it cannot fit)."""

_F = FetchState
FETCH_TRANSITIONS: dict[tuple[FetchState, FetchState], str] = {
    (_F.NEW, _F.HOLDING): "every argument already local: answered at once",
    (_F.NEW, _F.ADMITTED): "fits beside what the node keeps, nobody in line",
    (_F.NEW, _F.WAITING_FOR_ROOM): "does not fit yet, or others wait in line",
    (_F.NEW, _F.DONE): "can never fit (or a failed argument): answered with the failure",
    (_F.WAITING_FOR_ROOM, _F.ADMITTED): "first in line and room freed (holds released, copies gone)",
    (_F.WAITING_FOR_ROOM, _F.DONE): "can never fit, every argument failed, cancelled, node died",
    (_F.ADMITTED, _F.WAITING_FOR_ROOM): "a copy arrived without room: holds let go, back in line",
    (_F.ADMITTED, _F.HOLDING): "every argument local: answered",
    (_F.ADMITTED, _F.DONE): "answered with a failure, cancelled, node died",
    (_F.HOLDING, _F.DONE): "ReleaseArguments (the attempt left), fetched again, node died",
}
"""Legal moves of an argument fetch; admission control is the ``WAITING_FOR_ROOM`` state."""


_PENDING = ObjectStatus.PENDING
_AVAILABLE = ObjectStatus.AVAILABLE
_LOST = ObjectStatus.LOST
_FAILED = ObjectStatus.FAILED
_FREED = ObjectStatus.FREED
_IN_MEMORY = CopyState.IN_MEMORY
_SPILLED = CopyState.SPILLED
_F_NEW = FetchState.NEW
_F_WAITING_FOR_ROOM = FetchState.WAITING_FOR_ROOM
_F_ADMITTED = FetchState.ADMITTED
_F_HOLDING = FetchState.HOLDING
_F_DONE = FetchState.DONE
# (module constants: reading an Enum member off its class costs a descriptor call in 3.11)
_LEGAL = frozenset((old.value, new.value) for old, new in TRANSITIONS)
_COPY_LEGAL = frozenset((old.value, new.value) for old, new in COPY_TRANSITIONS)
_FETCH_LEGAL = frozenset((old.value, new.value) for old, new in FETCH_TRANSITIONS)
"""The tables by state value: pairs of strings hash in C (an Enum member's hash is Python code)."""


@dataclass(slots=True)
class _Copy:
    state: CopyState = _IN_MEMORY
    holds: int = 0
    """Pulls sourcing from it, fetch waiters on its node counting it as ready, and
    answered argument fetches on its node holding it."""
    restoring: bool = False


@dataclass(slots=True)
class _Object:
    obj: ObjectID
    status: ObjectStatus = _PENDING
    size_bytes: int = -1
    """-1 until the object is created (a failure decided before creation has no size)."""
    copies: dict[NodeID, _Copy] = field(default_factory=dict)
    primary: NodeID | None = None
    failure: Failure | None = None
    pulls: dict[NodeID, NodeID] = field(default_factory=dict)
    """Destination node -> source node of the pull in flight."""
    failed_sources: dict[NodeID, set[NodeID]] = field(default_factory=dict)
    """Destination node -> sources whose pull failed (only membership is read)."""
    retry_timers: dict[NodeID, None] = field(default_factory=dict)
    """Destination nodes waiting for a pull-retry timer."""
    waiters: dict[str, None] = field(default_factory=dict)
    """Waiters that named this object and are not woken yet (insertion ordered)."""
    holders: dict[str, None] = field(default_factory=dict)
    """Answered argument fetches holding a copy of this object (on their node)."""
    lost_reported: bool = False


@dataclass(slots=True)
class _Store:
    node: NodeID
    incarnation: int
    capacity_bytes: int
    spill_enabled: bool
    alive: bool = True
    used_bytes: int = 0
    secondaries: OrderedDict[ObjectID, None] = field(default_factory=OrderedDict)
    """In-memory secondary copies, least recently used first."""
    primaries: OrderedDict[ObjectID, None] = field(default_factory=OrderedDict)
    """In-memory pinned primaries, least recently used first."""
    spilled: dict[ObjectID, None] = field(default_factory=dict)
    incoming: dict[ObjectID, None] = field(default_factory=dict)
    """Objects with a pull in flight to this node."""
    troubled: dict[ObjectID, None] = field(default_factory=dict)
    """Objects with failed pull sources recorded for this node as destination."""
    fetch_waiters: dict[str, None] = field(default_factory=dict)
    held_fetches: dict[str, None] = field(default_factory=dict)
    """Answered argument fetches on this node still holding their copies."""
    pinned_bytes: int = 0
    """In-memory copies no plan may free: held, or primaries when spilling is off."""
    inbound_bytes: int = 0
    """Objects on their way into memory here: pulls to this node, restores on it."""
    room_line: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """Argument fetches waiting for room, in arrival order (``_Waiter.seq``)."""
    restores_waiting: dict[ObjectID, None] = field(default_factory=dict)
    """Spilled primaries here to restore, for fetches elsewhere, when room frees."""


@dataclass(slots=True)
class _Waiter:
    waiter: str
    node: NodeID
    objects: tuple[ObjectID, ...]
    required: int
    fetch: bool
    ready: dict[ObjectID, None] = field(default_factory=dict)
    failed: dict[ObjectID, Failure] = field(default_factory=dict)
    argument_fetch: bool = False
    """An attempt's argument fetch: admission control and holds after the wake apply."""
    state: FetchState = _F_NEW
    """Only meaningful for an argument fetch."""
    in_line: bool = False
    """Waiting for room (``state is WAITING_FOR_ROOM``): nothing is ready, nothing held."""
    seq: int = 0
    """Arrival order of argument fetches (the line's order)."""


@dataclass(slots=True)
class _HeldFetch:
    """An argument fetch that was answered (every argument local): its copies stay
    held until the attempt leaves the node (``ReleaseArguments``)."""

    waiter: str
    node: NodeID
    objects: dict[ObjectID, None]
    """Arguments whose copy on ``node`` it still holds."""


# --- helpers for the router ---------------------------------------------------------


def fetch_waiter_id(task: TaskID, attempt: int, node: NodeID) -> str:
    """The waiter id of an argument fetch: ``fetch:<task>:<attempt>:<node>``."""
    return f"{FETCH_WAITER_PREFIX}{task}:{attempt}:{node}"


def parse_fetch_waiter(waiter: str) -> tuple[TaskID, int, NodeID] | None:
    """``(task, attempt, node)`` of a fetch waiter id, or None for any other waiter."""
    if not waiter.startswith(FETCH_WAITER_PREFIX):
        return None
    parts = waiter[len(FETCH_WAITER_PREFIX) :].split(":")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return TaskID(parts[0]), int(parts[1]), NodeID(parts[2])


def fetch_request(command: FetchArguments, now: float) -> ObjectsRequested:
    """``FetchArguments`` as the directory's event: every argument, local to the node."""
    waiter = fetch_waiter_id(command.task, command.attempt, command.node)
    objects = command.objects
    request = _build_request(now, command.stimulus_id, waiter, command.node, objects, len(objects), True)
    return request


def existence_request(command: RequestObjects, now: float) -> ObjectsRequested:
    """``RequestObjects`` as the directory's event: wake when all exist (no fetch)."""
    request = _build_request(now, command.stimulus_id, command.waiter, command.node, command.objects, len(command.objects), False)
    return request


def argument_release(command: ReleaseArguments, now: float) -> WaiterCancelled:
    """``ReleaseArguments`` as the directory's event: cancel the attempt's fetch waiter
    (still waiting) or release the holds of its answered fetch."""
    waiter = fetch_waiter_id(command.task, command.attempt, command.node)
    cancelled = _build_cancelled(now, command.stimulus_id, waiter)
    return cancelled


def arguments_missing(command: ReportArgumentsMissing, now: float) -> ArgumentsMissing:
    """``ReportArgumentsMissing`` as the scheduler's event."""
    return ArgumentsMissing(
        now=now,
        stimulus_id=command.stimulus_id,
        task=command.task,
        attempt=command.attempt,
        node=command.node,
        objects=command.objects,
    )


def arguments_fetched(wake: WakeWaiter, now: float) -> ArgumentsFetched | None:
    """The scheduler's ``ArgumentsFetched`` for a fetch waiter's wake (None otherwise).

    ``failure`` is the failure of the first failed argument in argument order.
    """
    parsed = parse_fetch_waiter(wake.waiter)
    if parsed is None:
        return None
    task, attempt, node = parsed
    failure = wake.failed[0][1] if wake.failed else None
    fetched = _build_fetched(now, wake.stimulus_id, task, attempt, node, failure)
    return fetched


def freed_failure(obj: ObjectID) -> Failure:
    """What a request for a freed object resolves to."""
    return failure(
        ErrorKind.OBJECT_LOST,
        f"object {obj} was freed: its owner released every reference to it, "
        "so it can no longer be fetched",
        object=obj,
        reason="freed",
    )


class ObjectDirectory:
    """Objects, copies per node, store capacity and waiters; see the module docstring."""

    def __init__(
        self,
        *,
        pull_retry_s: float = PULL_RETRY_S,
        freed_remembered_max: int = FREED_REMEMBERED_MAX,
        story_lines_max: int = STORY_LINES_MAX,
        waiting_for_room_max: int = WAITING_FOR_ROOM_MAX,
    ) -> None:
        self.stats: Counter[str] = Counter()
        self._pull_retry_s = pull_retry_s
        self._freed_max = freed_remembered_max
        self._waiting_max = waiting_for_room_max
        self._fetch_seq = 0
        self._marked: dict[NodeID, None] = {}
        """Stores whose line or waiting restores may move: passed over at the end of the event."""
        self._objects: dict[ObjectID, _Object] = {}
        self._stores: dict[NodeID, _Store] = {}
        self._waiters: dict[str, _Waiter] = {}
        self._held: dict[str, _HeldFetch] = {}
        """Answered argument fetches still holding their copies, by waiter id."""
        self._freed: OrderedDict[ObjectID, None] = OrderedDict()
        self._story: deque[tuple[object, ...]] = deque(maxlen=story_lines_max)
        """Flat entries (key, stimulus_id, template, *args), formatted only when read: one
        tuple per entry (a nested args tuple: one more object for each young collection)."""
        self._out: list[Command] = []
        self._sid = ""
        self._now = 0.0
        self._handlers: dict[type[Event], Callable[[Any], None]] = {
            NodeJoined: self._on_node_joined,
            NodeDied: self._on_node_died,
            TaskFinished: self._on_task_result,
            TaskFailed: self._on_task_result,
            ObjectPut: self._on_object_put,
            ObjectCopied: self._on_object_copied,
            ObjectPullFailed: self._on_object_pull_failed,
            ObjectRestored: self._on_object_restored,
            CopiesEvicted: self._on_copies_evicted,
            ObjectsRequested: self._on_objects_requested,
            WaiterCancelled: self._on_waiter_cancelled,
            ObjectFailed: self._on_object_failed,
            ObjectFreed: self._on_object_freed,
            TimerFired: self._on_timer_fired,
        }

    # -- the one mutating entry point ------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        """Apply ``event``; return the commands it causes (each with its stimulus id)."""
        handler = self._handlers.get(event.__class__)
        if handler is None:
            raise TypeError(f"the object directory does not handle {type(event).__name__}")
        out: list[Command] = []
        self._out = out
        self._sid = event.stimulus_id
        self._now = event.now
        handler(event)
        if self._marked:
            self._admission_passes()
        self._out = []
        return out

    # -- read-only queries ------------------------------------------------------

    def status(self, obj: ObjectID) -> ObjectStatus | None:
        """The object's status; None when it was never seen (or its tombstone is forgotten)."""
        rec = self._objects.get(obj)
        if rec is not None:
            return rec.status
        return _FREED if obj in self._freed else None

    def size(self, obj: ObjectID) -> int | None:
        rec = self._objects.get(obj)
        if rec is None or rec.size_bytes < 0:
            return None
        return rec.size_bytes

    def locations(self, obj: ObjectID) -> tuple[NodeID, ...]:
        """Nodes holding a copy (in memory or spilled), sorted."""
        rec = self._objects.get(obj)
        return tuple(sorted(rec.copies)) if rec is not None else ()

    def primary(self, obj: ObjectID) -> NodeID | None:
        rec = self._objects.get(obj)
        return rec.primary if rec is not None else None

    def copy_state(self, obj: ObjectID, node: NodeID) -> CopyState | None:
        rec = self._objects.get(obj)
        copy = rec.copies.get(node) if rec is not None else None
        return copy.state if copy is not None else None

    def failure(self, obj: ObjectID) -> Failure | None:
        """The failure an object resolves to (failed, or freed), else None."""
        rec = self._objects.get(obj)
        if rec is not None:
            return rec.failure
        return freed_failure(obj) if obj in self._freed else None

    def bytes_by_node(self, objects: Iterable[ObjectID]) -> tuple[tuple[NodeID, int], ...]:
        """Bytes of ``objects`` (each counted once) held per node, sorted by node.

        Spilled copies count: restoring from the node's disk needs no network.
        This is the locality hint the router gives schedulers.
        """
        if not objects:
            return ()
        by_node: dict[NodeID, int] = {}
        for obj in dict.fromkeys(objects):
            rec = self._objects.get(obj)
            if rec is None:
                continue
            for node in rec.copies:
                by_node[node] = by_node.get(node, 0) + rec.size_bytes
        return tuple(sorted(by_node.items()))

    def used_bytes(self, node: NodeID) -> int:
        store = self._stores.get(node)
        return store.used_bytes if store is not None else 0

    def capacity_bytes(self, node: NodeID) -> int:
        store = self._stores.get(node)
        return store.capacity_bytes if store is not None and store.alive else 0

    def node_alive(self, node: NodeID) -> bool:
        store = self._stores.get(node)
        return store is not None and store.alive

    def pulls_in_flight(self, obj: ObjectID) -> tuple[tuple[NodeID, NodeID], ...]:
        """(destination, source) of each pull of ``obj`` in flight, sorted."""
        rec = self._objects.get(obj)
        return tuple(sorted(rec.pulls.items())) if rec is not None else ()

    def is_waiting(self, waiter: str) -> bool:
        return waiter in self._waiters

    def waiting_for(self, waiter: str) -> tuple[ObjectID, ...]:
        """The objects a waiting waiter still waits for (neither ready nor failed)."""
        w = self._waiters.get(waiter)
        if w is None:
            return ()
        return tuple(o for o in w.objects if o not in w.ready and o not in w.failed)

    def waiters_of(self, obj: ObjectID) -> tuple[str, ...]:
        rec = self._objects.get(obj)
        return tuple(rec.waiters) if rec is not None else ()

    def held_arguments(self, waiter: str) -> tuple[ObjectID, ...] | None:
        """The arguments an answered fetch still holds on its node (None: no such fetch)."""
        held = self._held.get(waiter)
        return None if held is None else tuple(held.objects)

    def fetch_waiters(self) -> tuple[str, ...]:
        """Waiter ids of the argument fetches still waiting, sorted."""
        return tuple(
            sorted(w for w, rec in self._waiters.items() if rec.fetch and w.startswith(FETCH_WAITER_PREFIX))
        )

    def held_fetches(self) -> tuple[str, ...]:
        """Waiter ids of the answered argument fetches still holding copies, sorted."""
        return tuple(sorted(self._held))

    def fetch_state(self, waiter: str) -> FetchState | None:
        """Where an argument fetch is (None: not an argument fetch the directory knows)."""
        w = self._waiters.get(waiter)
        if w is not None:
            return w.state if w.argument_fetch else None
        return _F_HOLDING if waiter in self._held else None

    def waiting_for_room(self, node: NodeID) -> tuple[str, ...]:
        """The argument fetches in ``node``'s line, first in line first."""
        store = self._stores.get(node)
        return tuple(store.room_line) if store is not None else ()

    def pinned_bytes(self, node: NodeID) -> int:
        """Bytes of ``node``'s in-memory copies that no eviction or spill may free."""
        store = self._stores.get(node)
        return store.pinned_bytes if store is not None else 0

    def room_wanted(self, waiter: str) -> tuple[int, int, int, int] | None:
        """For an argument fetch waiting for room: (bytes its arguments take together,
        bytes its node keeps for others (pinned or on their way in), the store's
        capacity, fetches ahead of it in line); None for any other waiter."""
        w = self._waiters.get(waiter)
        if w is None or not w.in_line:
            return None
        store = self._stores[w.node]
        total, others = self._room_need(w, store)
        ahead = 0
        for wid in store.room_line:
            if wid == waiter:
                break
            ahead += 1
        return total, others, store.capacity_bytes, ahead

    def objects(self) -> tuple[ObjectID, ...]:
        """Every object with a record (not the freed tombstones), sorted."""
        return tuple(sorted(self._objects))

    def story(self, key: str) -> list[str]:
        """Recent history of an object, node or waiter id (from a bounded log of all ids)."""
        return [f"[{entry[1]}] {_text(entry)}" for entry in self._story if entry[0] == key]

    # -- membership ---------------------------------------------------------------

    def _on_node_joined(self, event: NodeJoined) -> None:
        store = self._stores.get(event.node)
        if store is not None and event.incarnation <= store.incarnation:
            self.stats["stale_node_joined"] += 1
            return
        if event.object_store_bytes < 0:
            raise ValueError(f"{event.node}: object_store_bytes must be >= 0")
        if store is not None and store.alive:
            self.stats["implicit_node_deaths"] += 1
            self._node_gone(store)
        self._stores[event.node] = _Store(
            node=event.node,
            incarnation=event.incarnation,
            capacity_bytes=event.object_store_bytes,
            spill_enabled=event.spill_enabled,
        )
        self._log(
            event.node,
            "joined incarnation %s: store %s bytes, spill enabled: %s",
            event.incarnation,
            event.object_store_bytes,
            event.spill_enabled,
        )

    def _on_node_died(self, event: NodeDied) -> None:
        store = self._stores.get(event.node)
        if store is None or not store.alive or event.incarnation < store.incarnation:
            self.stats["stale_node_died"] += 1
            return
        store.incarnation = event.incarnation
        self._node_gone(store)

    def _node_gone(self, store: _Store) -> None:
        node = store.node
        store.alive = False
        self._log(node, "died (incarnation %s): its copies are gone", store.incarnation)
        for wid in list(store.fetch_waiters):
            self.stats["waiters_dropped_node_died"] += 1
            self._log(wid, "dropped: its node %s died", node)
            w = self._waiters[wid]
            self._forget_waiter(w)
            self._fetch_done(w, "its node died")
        for wid in list(store.held_fetches):
            self.stats["held_fetches_dropped_node_died"] += 1
            self._log(wid, "holds dropped: its node %s died", node)
            self._release_held(self._held[wid], "its node died")
        affected: dict[ObjectID, None] = {}
        for obj in list(store.incoming):
            self._end_pull(self._objects[obj], node)
            affected[obj] = None
        for obj in list(store.troubled):
            self._clear_trouble(self._objects[obj], node)
        for obj in [*store.secondaries, *store.primaries, *store.spilled]:
            self._drop_copy(self._objects[obj], node, delete_reason=None)
            affected[obj] = None
        assert store.used_bytes == 0, (node, store.used_bytes)
        assert store.pinned_bytes == 0 and store.inbound_bytes == 0, (node, store)
        assert not store.room_line and not store.restores_waiting, (node, store)
        for obj in sorted(affected):
            rec = self._objects.get(obj)
            if rec is not None:
                self._refresh(rec)

    # -- creation ---------------------------------------------------------------

    def _on_task_result(self, event: TaskFinished | TaskFailed) -> None:
        if not self._live_store(event.node, "stale_task_result"):
            return
        for obj, size in event.return_sizes:
            self._create(obj, event.node, size)

    def _on_object_put(self, event: ObjectPut) -> None:
        if not self._live_store(event.node, "stale_object_put"):
            return
        self._create(event.obj, event.node, event.size_bytes)

    def _create(self, obj: ObjectID, node: NodeID, size: int) -> None:
        if size < 0:
            raise ValueError(f"object {obj}: size must be >= 0, got {size}")
        if obj in self._freed:
            self.stats["created_after_free"] += 1
            self._emit_delete(obj, node, "freed before it was stored")
            return
        rec = self._objects.get(obj)
        if rec is not None and rec.status is _PENDING and self._create_for_one_fetch(rec, node, size):
            return
        if rec is not None and rec.status is _FAILED:
            self.stats["created_after_failure"] += 1
            self._emit_delete(obj, node, "the object already failed")
            return
        if rec is not None and rec.status is _AVAILABLE:
            if node in rec.copies:
                self.stats["duplicate_creation"] += 1
                return
            self.stats["created_while_available"] += 1
            if node in rec.pulls:  # its answer, when it comes, is a duplicate or stale
                self._end_pull(rec, node)
            self._clear_trouble(rec, node)
            if self._place_secondary(rec, node):
                self._log(obj, "created again on %s: kept as a secondary copy", node)
            else:
                self._emit_delete(obj, node, "no room for another copy")
            self._refresh(rec)  # wakes local fetches, or plans the pull again
            return
        if rec is None:
            rec = self._objects[obj] = _Object(obj)
        rec.size_bytes = size
        store_full = self._place_primary(rec, node)
        if store_full is None:
            rec.lost_reported = False
            self._set_status(rec, _AVAILABLE, "primary on %s, %s bytes", node, size)
        else:
            rec.failure = store_full
            self._set_status(rec, _FAILED, store_full.message)
            self._emit_delete(obj, node, "object store full")
        self._refresh(rec)

    def _create_for_one_fetch(self, rec: _Object, node: NodeID, size: int) -> bool:
        """``_create``'s common case fused (a task result that one fetch waits for);
        False, with nothing done, for anything else (the general code then runs).

        The case: ``rec`` is PENDING with one waiter, a fetch not in line that this
        object alone does not satisfy, and the primary fits in memory on ``node``
        without making room. Equivalent to ``_place_primary`` (fits) +
        ``_set_status(AVAILABLE)`` + ``_refresh`` with its ``_resolve``: on ``node`` the
        copy is ready and held; elsewhere it is not ready (no copy there, not too big
        for that store, so ``_unreachable`` is None) and ``_ensure_local`` pulls it from
        ``node``, its only copy (a PENDING object has no pulls, timers, failed sources).
        """
        waiters = rec.waiters
        if len(waiters) != 1:
            return False
        store = self._stores[node]
        if store.used_bytes + size > store.capacity_bytes:  # (used >= 0: size fits too)
            return False
        w = self._waiters[next(iter(waiters))]
        dest = w.node
        obj = rec.obj
        if (
            not w.fetch
            or w.in_line
            or obj in w.failed
            or len(w.ready) + len(w.failed) + (dest == node) >= w.required
            or size > self._stores[dest].capacity_bytes
        ):
            return False
        rec.size_bytes = size
        rec.copies[node] = _Copy()  # ``_place_primary``: it fits
        store.primaries[obj] = None
        store.used_bytes += size
        if not store.spill_enabled:
            self._pin(store, size)
        rec.primary = node
        rec.lost_reported = False
        # ``_set_status(rec, AVAILABLE, ...)``, inline: PENDING -> AVAILABLE is legal.
        self._story.append((obj, self._sid, "%s -> %s: primary on %s, %s bytes", "pending", "available", node, size))
        rec.status = _AVAILABLE
        if dest == node:
            w.ready[obj] = None
            self._hold(rec, node)
        else:
            self._start_pull(rec, node, dest)
        return True

    # -- copies moving ------------------------------------------------------------

    def _on_object_copied(self, event: ObjectCopied) -> None:
        obj, node = event.obj, event.node
        if not self._live_store(node, "stale_object_copied"):
            return
        rec = self._objects.get(obj)
        if rec is None or node not in rec.pulls:
            if rec is not None and node in rec.copies:
                self.stats["duplicate_object_copied"] += 1
                return
            self.stats["unexpected_object_copied"] += 1
            self._emit_delete(obj, node, "copy not expected (no pull in flight)")
            return
        self._end_pull(rec, node)
        if rec.failed_sources:  # else no trouble to clear (timers and stores go with them)
            self._clear_trouble(rec, node)
        if self._copied_for_one_fetch(rec, node):
            return
        if self._place_secondary(rec, node):
            self._story.append((obj, self._sid, "copied to %s", node))  # ``_log``
        else:
            self.stats["copies_dropped_no_room"] += 1
            store = self._stores[node]
            self._emit_delete(obj, node, "no room for a secondary copy")
            self._no_room_here(rec, node, self._store_full(rec, store, "cannot be copied there now"))
        self._refresh(rec)

    def _copied_for_one_fetch(self, rec: _Object, node: NodeID) -> bool:
        """``_on_object_copied``'s common case fused, after the pull ended (a copy that one
        fetch on ``node`` waits for, among other objects still to come); False, with
        nothing done, for anything else (the general code then runs).

        The case: ``rec`` is AVAILABLE with one waiter, a fetch on ``node`` not in line,
        for which ``rec`` is neither ready nor failed yet and which this copy does not
        satisfy, and the copy fits in memory on ``node`` without making room. Equivalent
        to ``_place_secondary`` (fits) + ``_refresh`` with its ``_resolve``: the copy is in
        memory on the waiter's node, so it is ready and held; nobody wakes and no other
        node needs a pull.
        """
        waiters = rec.waiters
        if len(waiters) != 1 or rec.status is not _AVAILABLE:
            return False
        store = self._stores[node]
        size = rec.size_bytes
        if store.used_bytes + size > store.capacity_bytes:  # (used >= 0: size fits too)
            return False
        w = self._waiters[next(iter(waiters))]
        obj = rec.obj
        if (
            not w.fetch
            or w.in_line
            or w.node != node
            or obj in w.ready
            or obj in w.failed
            or len(w.ready) + len(w.failed) + 1 >= w.required
        ):
            return False
        rec.copies[node] = _Copy()  # ``_place_secondary``: it fits
        store.secondaries[obj] = None
        store.used_bytes += size
        self._story.append((obj, self._sid, "copied to %s", node))  # ``_log``
        w.ready[obj] = None  # ``_resolve``: ready here, and held
        self._hold(rec, node)
        return True

    def _on_object_pull_failed(self, event: ObjectPullFailed) -> None:
        rec = self._objects.get(event.obj)
        if rec is None or rec.pulls.get(event.node) != event.source:
            self.stats["stale_pull_failed"] += 1
            return
        self.stats["pull_failures"] += 1
        self._end_pull(rec, event.node)
        rec.failed_sources.setdefault(event.node, set()).add(event.source)
        self._stores[event.node].troubled[rec.obj] = None
        self._log(rec.obj, "pull from %s to %s failed", event.source, event.node)
        self._refresh(rec)

    def _on_object_restored(self, event: ObjectRestored) -> None:
        obj, node = event.obj, event.node
        rec = self._objects.get(obj)
        copy = rec.copies.get(node) if rec is not None else None
        if rec is None or copy is None or copy.state is not _SPILLED or not copy.restoring:
            self.stats["stale_object_restored"] += 1
            return
        assert rec.primary == node, (obj, node, rec.primary)
        copy.restoring = False
        store = self._stores[node]
        self._inbound(store, -rec.size_bytes)
        if self._make_room(store, rec.size_bytes):
            self._set_copy_state(rec, node, copy, _IN_MEMORY)
            del store.spilled[obj]
            store.primaries[obj] = None
            store.used_bytes += rec.size_bytes
        else:
            # Keep it on disk (the driver drops what it read back). Fetches here: an
            # admitted argument fetch goes back in line, a get fails; fetches elsewhere
            # wait until it fits here (``_refresh`` puts it in ``restores_waiting``).
            self.stats["restores_without_room"] += 1
            self._out.append(
                SpillObject(stimulus_id=self._sid, obj=obj, node=node, size_bytes=rec.size_bytes)
            )
            self._no_room_here(rec, node, self._store_full(rec, store, "cannot be restored now"))
        self._refresh(rec)

    def _on_copies_evicted(self, event: CopiesEvicted) -> None:
        if not self._live_store(event.node, "stale_copies_evicted"):
            return
        affected: list[_Object] = []
        for obj in dict.fromkeys(event.objects):
            rec = self._objects.get(obj)
            if rec is None or event.node not in rec.copies:
                self.stats["stale_copies_evicted"] += 1
                continue
            self.stats["copies_lost_to_faults"] += 1
            self._drop_copy(rec, event.node, delete_reason=None)
            affected.append(rec)
        for rec in sorted(affected, key=lambda r: r.obj):
            self._refresh(rec)

    def _on_timer_fired(self, event: TimerFired) -> None:
        if not event.timer.startswith(PULL_RETRY_TIMER_PREFIX):
            self.stats["foreign_timer"] += 1
            return
        obj, _, node = event.timer[len(PULL_RETRY_TIMER_PREFIX) :].rpartition("@")
        rec = self._objects.get(ObjectID(obj))
        if rec is None or NodeID(node) not in rec.retry_timers:
            self.stats["stale_pull_retry_timer"] += 1
            return
        self._clear_trouble(rec, NodeID(node))
        self._refresh(rec)

    # -- decisions from the owner ---------------------------------------------------

    def _on_object_failed(self, event: ObjectFailed) -> None:
        obj = event.obj
        if obj in self._freed:
            self.stats["stale_fail_freed"] += 1
            return
        rec = self._objects.get(obj)
        if rec is None:
            rec = self._objects[obj] = _Object(obj)
        if rec.status is _AVAILABLE:
            if event.failure.kind is not ErrorKind.OWNER_DIED:
                self.stats["fail_ignored_available"] += 1
                self._log(obj, "FailObject ignored: the object has a value (%s)", event.failure.kind.value)
                return
            # Ray's ownership model: with its owner gone nobody may read the value
            # (borrowers get OwnerDiedError), so its copies would only leak.
            self.stats["owner_died_copies_dropped"] += 1
            self._drop_every_copy(rec, "owner died")
        if rec.status is _FAILED:
            self.stats["duplicate_fail"] += 1
            return
        rec.failure = event.failure
        self._set_status(rec, _FAILED, event.failure.message)
        self._refresh(rec)

    def _on_object_freed(self, event: ObjectFreed) -> None:
        obj = event.obj
        if obj in self._freed:
            self.stats["duplicate_free"] += 1
            return
        self._freed[obj] = None
        if len(self._freed) > self._freed_max:
            self._freed.popitem(last=False)
        rec = self._objects.pop(obj, None)
        if rec is None:
            self._log(obj, "freed (never seen)")
            return
        if (rec.status._value_, "freed") not in _LEGAL:
            self._check_transition(rec, _FREED)  # raises
        entry = (obj, self._sid, "%s -> freed: deleting %s copies", rec.status._value_, len(rec.copies))
        self._story.append(entry)  # ``_log``
        self._drop_every_copy(rec, "freed")
        rec.status = _FREED
        if not rec.waiters:
            return
        gone = freed_failure(obj)
        for wid in rec.waiters:
            w = self._waiters[wid]
            w.ready.pop(obj, None)  # a fetch hold died with the copy
            w.failed[obj] = gone
            if w.in_line:
                self._mark(w.node)  # it needs less room now
        for wid in list(rec.waiters):
            w = self._waiters[wid]
            if len(w.ready) + len(w.failed) >= w.required:
                self._wake(w)

    # -- waiters -----------------------------------------------------------------------

    def _on_objects_requested(self, event: ObjectsRequested) -> None:
        wid = event.waiter
        if wid in self._waiters:
            self.stats["duplicate_waiter"] += 1
            return
        if event.fetch and not self._live_store(event.node, "stale_objects_requested"):
            return
        held = self._held.get(wid)
        if held is not None:
            # The scheduler fetches again (a held copy went missing): the new waiter
            # takes over; copies still local are ready (and held) again at once.
            self.stats["refetches"] += 1
            self._log(wid, "fetched again: the old holds are replaced")
            self._release_held(held, "fetched again")
        objects = event.objects
        if len(objects) > 1 or objects.__class__ is not tuple:
            objects = tuple(dict.fromkeys(objects))
        fetch = event.fetch
        w = _Waiter(
            wid,
            event.node,
            objects,
            min(max(event.num_required, 0), len(objects)),
            fetch,
            {},
            {},
            fetch and wid.startswith(FETCH_WAITER_PREFIX) and parse_fetch_waiter(wid) is not None,
        )
        if self._satisfied_at_once(w):  # the common case: nothing to register
            self._announce_wake(w)
            self._keep_holds(w)
            return
        if w.argument_fetch and not self._line_up(w):
            return  # refused: it can never fit
        w.ready.clear()
        w.failed.clear()
        self._waiters[wid] = w
        if w.fetch:
            self._stores[w.node].fetch_waiters[wid] = None
        self._log(wid, "waits for %s of %s on %s (fetch=%s)", w.required, len(objects), w.node, w.fetch)
        recs: list[_Object] = []
        for obj in objects:
            rec = self._objects.get(obj)
            if rec is None:
                rec = self._objects[obj] = _Object(obj)
                if obj in self._freed:
                    # Ray: the owner kept the lineage, so a freed value that is needed
                    # again (a downstream object is rebuilt) is lost, not gone for good.
                    del self._freed[obj]
                    self.stats["requested_after_free"] += 1
                    rec.lost_reported = False
                    self._set_status(rec, _LOST, "requested after it was freed")
            rec.waiters[wid] = None
            self._resolve(w, rec)
            recs.append(rec)
        if w.in_line:
            self._stores[w.node].room_line[wid] = None  # the newest: the end of the line
        if len(w.ready) + len(w.failed) >= w.required:
            self._wake(w)
            return
        dests = (w.node,) if w.fetch and not w.in_line else ()
        for rec in recs:
            if rec.obj not in w.ready and rec.obj not in w.failed:
                self._pursue(rec, dests, needed=True)

    def _on_waiter_cancelled(self, event: WaiterCancelled) -> None:
        w = self._waiters.get(event.waiter)
        if w is None:
            held = self._held.get(event.waiter)
            if held is None:
                self.stats["unknown_waiter_cancelled"] += 1
                return
            self.stats["fetch_holds_released"] += 1
            self._log(held.waiter, "released: the attempt left %s", held.node)
            self._release_held(held, "released: the attempt left")
            return
        self.stats["waiters_cancelled"] += 1
        self._log(w.waiter, "cancelled")
        self._forget_waiter(w)
        self._fetch_done(w, "cancelled")

    def _satisfied_at_once(self, w: _Waiter) -> bool:
        """Judge every object for a new waiter without side effects; True if it is satisfied."""
        objects = self._objects
        fetch = w.fetch
        node = w.node
        ready = w.ready
        for obj in w.objects:
            rec = objects.get(obj)
            if rec is None:
                continue  # unknown, or freed: not ready (a freed one is requested again)
            verdict = self._verdict(rec, fetch, node)
            if verdict is True:
                ready[obj] = None
            elif verdict is not False:
                w.failed[obj] = verdict
        return len(ready) + len(w.failed) >= w.required

    def _verdict(self, rec: _Object, fetch: bool, node: NodeID) -> bool | Failure:
        """For a waiter: True if ``rec`` is ready, its Failure if failed, False if still to come."""
        status = rec.status
        if status is _FAILED:
            assert rec.failure is not None
            return rec.failure
        if status is not _AVAILABLE:
            return False
        if not fetch:
            return True
        copy = rec.copies.get(node)
        if copy is not None and copy.state is _IN_MEMORY:
            return True
        return self._unreachable(rec, node) or False

    def _resolve(self, w: _Waiter, rec: _Object) -> None:
        """Bring a registered waiter's view of ``rec`` up to date (holds fetched copies)."""
        obj = rec.obj
        if obj in w.failed or (w.fetch and obj in w.ready):
            return  # failures are final; a held copy stays ready until it is dropped
        verdict = self._verdict(rec, w.fetch, w.node)
        if verdict is True:
            if w.in_line:
                return  # waiting for room: nothing is ready (or held) before admission
            w.ready[obj] = None
            if w.fetch:
                self._hold(rec, w.node)
        elif verdict is False:
            w.ready.pop(obj, None)
        else:
            w.ready.pop(obj, None)
            w.failed[obj] = verdict

    def _unreachable(self, rec: _Object, node: NodeID) -> Failure | None:
        """A failure when ``rec`` can never be in memory on ``node`` (too big), else None."""
        store = self._stores[node]
        if rec.size_bytes > store.capacity_bytes:
            return self._too_big(rec, store, "is larger than the object store")
        assert rec.primary is not None
        only_on_disk = len(rec.copies) == 1 and rec.copies[rec.primary].state is _SPILLED
        home = self._stores[rec.primary]
        if only_on_disk and rec.size_bytes > home.capacity_bytes:
            return self._too_big(rec, home, "is spilled and larger than the object store to restore it in")
        return None

    def _refresh(self, rec: _Object) -> None:
        """Re-resolve ``rec`` for its waiters, wake the satisfied, pursue the rest."""
        if not rec.waiters:
            # What ``_pursue`` does with no waiter (nothing to fetch, nobody needs it).
            if rec.status is _PENDING and self._objects.get(rec.obj) is rec:
                del self._objects[rec.obj]
            return
        obj = rec.obj
        satisfied: list[_Waiter] = []
        dests: dict[NodeID, None] = {}
        needed = False
        waiters = self._waiters
        for wid in rec.waiters:
            w = waiters[wid]
            self._resolve(w, rec)
            ready = w.ready
            failed = w.failed
            if w.in_line:
                self._mark(w.node)  # what it needs may have changed
            if len(ready) + len(failed) >= w.required:
                satisfied.append(w)
            elif obj not in ready and obj not in failed:
                needed = True
                if w.fetch and not w.in_line:
                    dests[w.node] = None
        for w in satisfied:
            self._wake(w)
        if rec.status is _AVAILABLE:  # ``_pursue``, its common case inline
            for dest in sorted(dests) if len(dests) > 1 else dests:
                self._ensure_local(rec, dest)
        elif needed or not rec.waiters:
            self._pursue(rec, sorted(dests), needed)

    def _pursue(self, rec: _Object, dests: Iterable[NodeID], needed: bool) -> None:
        """Act for waiters still waiting on ``rec``: fetch it, or report it lost."""
        if rec.status is _AVAILABLE:
            for dest in dests:
                self._ensure_local(rec, dest)
        elif rec.status is _LOST and needed and not rec.lost_reported:
            rec.lost_reported = True
            self.stats["lost_reports"] += 1
            self._log(rec.obj, "needed while lost: ReportLost")
            self._out.append(ReportLost(stimulus_id=self._sid, obj=rec.obj))
        elif rec.status is _PENDING and not rec.waiters:
            if self._objects.get(rec.obj) is rec:
                del self._objects[rec.obj]

    def _wake(self, w: _Waiter) -> None:
        self._forget_waiter(w)
        self._announce_wake(w)
        self._keep_holds(w)

    def _keep_holds(self, w: _Waiter) -> None:
        """After the wake of an argument fetch with every argument local: hold the
        copies until the attempt leaves the node (``ReleaseArguments``)."""
        if not w.argument_fetch:
            return
        if w.failed:
            self._fetch_done(w, "answered with a failure")
            return
        self._fetch_move(w, _F_HOLDING, "every argument local")
        node = w.node
        ready = w.ready
        held = _HeldFetch(w.waiter, node, {obj: None for obj in w.objects if obj in ready})
        self._held[w.waiter] = held
        self._stores[node].held_fetches[w.waiter] = None
        for obj in held.objects:
            rec = self._objects[obj]
            self._hold(rec, node)
            rec.holders[w.waiter] = None

    def _release_held(self, held: _HeldFetch, why: str) -> None:
        """Let go of every copy an answered fetch holds (the copies stay, unpinned)."""
        del self._held[held.waiter]
        del self._stores[held.node].held_fetches[held.waiter]
        for obj in held.objects:
            rec = self._objects[obj]
            del rec.holders[held.waiter]
            self._unhold(rec, held.node)
        held.objects.clear()
        self._log(held.waiter, "%s -> %s: %s", _F_HOLDING._value_, _F_DONE._value_, why)

    def _held_copy_gone(self, rec: _Object, node: NodeID) -> None:
        """A held copy of ``rec`` on ``node`` was removed: end the pulls it sourced,
        un-ready it for the fetch waiters there, and tell the schedulers of the
        answered fetches that held it that an argument is no longer local."""
        for dest, source in list(rec.pulls.items()):
            if source == node:
                self._end_pull(rec, dest)
        for wid in rec.waiters:
            w = self._waiters[wid]
            if w.fetch and w.node == node:
                w.ready.pop(rec.obj, None)
        for wid in list(rec.holders):
            held = self._held[wid]
            if held.node != node:
                continue
            del rec.holders[wid]
            del held.objects[rec.obj]
            self.stats["held_arguments_missing"] += 1
            self._log(wid, "held argument %s gone from %s", rec.obj, node)
            parsed = parse_fetch_waiter(wid)
            assert parsed is not None, wid
            task, attempt, _ = parsed
            self._out.append(
                ReportArgumentsMissing(
                    stimulus_id=self._sid, task=task, attempt=attempt, node=node, objects=(rec.obj,)
                )
            )

    def _announce_wake(self, w: _Waiter) -> None:
        """Emit the one ``WakeWaiter`` of ``w`` (already forgotten, or never registered)."""
        objects = w.objects
        ready_set = w.ready
        if len(ready_set) == len(objects):
            ready = objects
        else:
            ready = tuple([o for o in objects if o in ready_set])
        failed = tuple([(o, w.failed[o]) for o in objects if o in w.failed]) if w.failed else ()
        if w.fetch and ready:
            store = self._stores[w.node]
            secondaries = store.secondaries
            primaries = store.primaries
            for obj in sorted(ready) if len(ready) > 1 else ready:
                # An access: most recently used, ties by object id (``_touch``).
                if obj in secondaries:
                    secondaries.move_to_end(obj)
                elif obj in primaries:
                    primaries.move_to_end(obj)
        self.stats["wakes"] += 1
        self._log(w.waiter, "woken: %s ready, %s failed", len(ready), len(failed))
        wake = _build_wake(self._sid, w.waiter, ready, failed)
        self._out.append(wake)

    def _forget_waiter(self, w: _Waiter) -> None:
        del self._waiters[w.waiter]
        if w.fetch:
            store = self._stores[w.node]
            store.fetch_waiters.pop(w.waiter, None)
            if w.in_line:
                del store.room_line[w.waiter]
                self._mark(w.node)  # a new head, perhaps
        for obj in w.objects:
            rec = self._objects.get(obj)
            if rec is None:
                continue
            rec.waiters.pop(w.waiter, None)
            if w.fetch and obj in w.ready:
                self._unhold(rec, w.node)
            if rec.status is _PENDING and not rec.waiters:
                del self._objects[obj]

    def _no_room_here(self, rec: _Object, node: NodeID, why: Failure) -> None:
        """``rec`` found no room on ``node``: the admitted argument fetches there that
        wait for it go back in line; the other fetches there (``get``, ``wait``) fail it."""
        back: list[_Waiter] = []
        for wid in rec.waiters:
            w = self._waiters[wid]
            if not w.fetch or w.node != node or w.in_line:
                continue
            if rec.obj in w.ready or rec.obj in w.failed:
                continue
            if w.argument_fetch:
                back.append(w)
            else:
                w.failed[rec.obj] = why
        for w in back:
            self._send_back(w)

    # -- admission: argument fetches wait in line for room ------------------------------

    def _line_up(self, w: _Waiter) -> bool:
        """Admit a new argument fetch, put it in its node's line, or refuse it (False:
        answered at once with the failure). ``w`` is not registered yet; its ``failed``
        holds the verdicts of ``_satisfied_at_once``."""
        store = self._stores[w.node]
        self._fetch_seq += 1
        w.seq = self._fetch_seq
        total, others = self._room_need(w, store)
        fits = others + total <= store.capacity_bytes  # then it can fit, of course
        if fits and not store.room_line and len(store.fetch_waiters) < self._waiting_max:
            self._fetch_move(w, _F_ADMITTED, "fits beside what the node keeps")
            return True
        refusal = None if fits else self._never_fits(w, store, total)
        if refusal is None and len(store.fetch_waiters) >= self._waiting_max:
            refusal = failure(
                ErrorKind.OBJECT_STORE_FULL,
                f"{len(store.fetch_waiters)} fetches already wait on {store.node} (at most "
                f"{self._waiting_max}): the argument fetch {w.waiter} is refused",
                node=store.node,
                waiting_fetches=len(store.fetch_waiters),
            )
        if refusal is not None:
            self.stats["fetches_refused"] += 1
            w.ready.clear()
            for obj in w.objects:
                if obj not in w.failed:
                    w.failed[obj] = refusal
            self._announce_wake(w)
            self._fetch_move(w, _F_DONE, "refused: %s", refusal.message)
            return False
        w.in_line = True
        self.stats["fetches_waiting_for_room"] += 1
        self._fetch_move(
            w,
            _F_WAITING_FOR_ROOM,
            "needs %s bytes beside %s kept for others, store %s bytes, %s ahead in line",
            total,
            others,
            store.capacity_bytes,
            len(store.room_line),
        )
        return True

    def _room_need(self, w: _Waiter, store: _Store) -> tuple[int, int]:
        """(bytes the fetch's live arguments take together in ``store``, bytes the store
        keeps for others: pinned and inbound bytes that are not its arguments).

        It fits exactly when the sum is at most the capacity: what is not pinned can be
        evicted or spilled, and inbound copies will take their room. An argument that
        failed for it, or whose size is not known yet, counts nothing.
        """
        node = store.node
        total = 0
        others = store.pinned_bytes + store.inbound_bytes
        for obj in w.objects:
            if obj in w.failed:
                continue
            rec = self._objects.get(obj)
            if rec is None or rec.size_bytes < 0:
                continue
            if rec.status is not _AVAILABLE and rec.status is not _LOST:
                continue
            size = rec.size_bytes
            total += size
            copy = rec.copies.get(node)
            if copy is not None:
                if copy.state is _IN_MEMORY:
                    if copy.holds or (node == rec.primary and not store.spill_enabled):
                        others -= size
                elif copy.restoring:
                    others -= size
            elif node in rec.pulls:
                others -= size
        return total, others

    def _never_fits(self, w: _Waiter, store: _Store, total: int) -> Failure | None:
        """The failure of an argument fetch that can never be admitted, else None."""
        cap = store.capacity_bytes
        if total <= cap and (store.spill_enabled or total + store.pinned_bytes <= cap):
            return None  # the common case, decided without a scan
        parsed = parse_fetch_waiter(w.waiter)
        assert parsed is not None, w.waiter
        task, attempt, _ = parsed
        if total > cap:
            return failure(
                ErrorKind.OBJECT_STORE_FULL,
                f"the arguments of task {task} (attempt {attempt}) take {total} bytes together "
                f"and the object store of {store.node} holds {cap} bytes: they can never be "
                "local there at once",
                task=task,
                node=store.node,
                arguments_bytes=total,
                store_capacity_bytes=cap,
            )
        mine = set(w.objects)
        kept = 0
        for obj in store.primaries:
            if obj not in mine:
                kept += self._objects[obj].size_bytes
        if total + kept <= cap:
            return None
        return failure(
            ErrorKind.OBJECT_STORE_FULL,
            f"the arguments of task {task} (attempt {attempt}) take {total} bytes together and "
            f"the object store of {store.node} holds {cap} bytes, {kept} of them primary copies "
            "in scope, which cannot be spilled: spilling is disabled there",
            task=task,
            node=store.node,
            arguments_bytes=total,
            store_capacity_bytes=cap,
            pinned_bytes=kept,
            spill_enabled=False,
        )

    def _send_back(self, w: _Waiter) -> None:
        """An admitted argument fetch whose copy found no room: let go of what it holds
        and wait in line again, in arrival order."""
        store = self._stores[w.node]
        for obj in w.ready:
            self._unhold(self._objects[obj], w.node)
        w.ready.clear()
        self._fetch_move(w, _F_WAITING_FOR_ROOM, "a copy arrived without room: back in line")
        w.in_line = True
        line = store.room_line
        if line and self._waiters[next(reversed(line))].seq > w.seq:
            order = sorted([*line, w.waiter], key=lambda wid: self._waiters[wid].seq)
            line.clear()
            for wid in order:
                line[wid] = None
        else:
            line[w.waiter] = None
        self.stats["fetches_sent_back"] += 1
        self._mark(w.node)

    def _admission_passes(self) -> None:
        """Pass over every marked store (a work list: admitting may mark stores again)."""
        marked = self._marked
        passes = 0
        while marked:
            passes += 1
            if passes > ADMISSION_PASSES_MAX:
                raise AssertionError(f"admission did not settle after {passes - 1} passes")
            node = next(iter(marked))
            del marked[node]
            store = self._stores.get(node)
            if store is not None and store.alive:
                self._admit(store)

    def _admit(self, store: _Store) -> None:
        """Start the waiting restores that fit, then admit from the head of the line
        while the head fits; refuse a head that can never fit."""
        if store.restores_waiting:
            self._restart_restores(store)
        line = store.room_line
        while line:
            w = self._waiters[next(iter(line))]
            total, others = self._room_need(w, store)
            refusal = self._never_fits(w, store, total)
            if refusal is not None:
                self.stats["fetches_refused"] += 1
                for obj in w.objects:
                    if obj not in w.failed:
                        w.failed[obj] = refusal
                self._wake(w)  # leaves the line
                continue
            if others + total > store.capacity_bytes:
                return
            del line[w.waiter]
            w.in_line = False
            self.stats["fetches_admitted_from_line"] += 1
            self._fetch_move(w, _F_ADMITTED, "room for %s bytes beside %s kept", total, others)
            self._enter(w)

    def _enter(self, w: _Waiter) -> None:
        """A fetch just admitted from the line: what is local is ready (held), the rest
        is fetched."""
        pending: list[_Object] = []
        for obj in w.objects:
            if obj in w.failed:
                continue
            rec = self._objects[obj]
            self._resolve(w, rec)
            if obj not in w.ready and obj not in w.failed:
                pending.append(rec)
        if len(w.ready) + len(w.failed) >= w.required:
            self._wake(w)
            return
        for rec in pending:
            self._pursue(rec, (w.node,), needed=True)

    def _restart_restores(self, store: _Store) -> None:
        node = store.node
        for obj in list(store.restores_waiting):
            rec = self._objects[obj]
            copy = rec.copies[node]
            assert copy.state is _SPILLED and not copy.restoring, (obj, node)
            if not self._wanted_elsewhere(rec, node):
                del store.restores_waiting[obj]
            elif store.pinned_bytes + store.inbound_bytes + rec.size_bytes <= store.capacity_bytes:
                self._start_restore(rec, node, copy)

    def _wanted_elsewhere(self, rec: _Object, home: NodeID) -> bool:
        """Whether a fetch on another node waits for ``rec``, whose only copy is on ``home``."""
        if len(rec.copies) != 1:
            return False
        for wid in rec.waiters:
            w = self._waiters[wid]
            if w.fetch and not w.in_line and w.node != home:
                if rec.obj not in w.ready and rec.obj not in w.failed:
                    return True
        return False

    def _mark(self, node: NodeID) -> None:
        store = self._stores.get(node)
        if store is not None and (store.room_line or store.restores_waiting):
            self._marked[node] = None

    def _pin(self, store: _Store, delta_bytes: int) -> None:
        store.pinned_bytes += delta_bytes
        if store.room_line or store.restores_waiting:
            self._marked[store.node] = None

    def _inbound(self, store: _Store, delta_bytes: int) -> None:
        store.inbound_bytes += delta_bytes
        if store.room_line or store.restores_waiting:
            self._marked[store.node] = None

    def _hold(self, rec: _Object, node: NodeID) -> None:
        copy = rec.copies[node]
        copy.holds += 1
        if copy.holds == 1:
            store = self._stores[node]
            if store.spill_enabled or node != rec.primary:  # else pinned already
                store.pinned_bytes += rec.size_bytes  # ``_pin``, inline
                if store.room_line or store.restores_waiting:
                    self._marked[node] = None

    def _unhold(self, rec: _Object, node: NodeID) -> None:
        copy = rec.copies[node]
        copy.holds -= 1
        if copy.holds == 0:
            store = self._stores[node]
            if store.spill_enabled or node != rec.primary:
                store.pinned_bytes -= rec.size_bytes  # ``_pin``, inline
                if store.room_line or store.restores_waiting:
                    self._marked[node] = None

    def _fetch_move(self, w: _Waiter, new: FetchState, why: str, *args: object) -> None:
        """Move an argument fetch; ``why % args`` is its story line (formatted when read)."""
        old = w.state
        if (old._value_, new._value_) not in _FETCH_LEGAL:
            raise InvalidTransition(
                f"argument fetch {w.waiter}: {old.name} -> {new.name} is not a legal transition",
                self.story(w.waiter),
            )
        w.state = new
        if args:
            self._log(w.waiter, f"%s -> %s: {why}", old._value_, new._value_, *args)
        else:
            self._log(w.waiter, "%s -> %s: %s", old._value_, new._value_, why)

    def _fetch_done(self, w: _Waiter, why: str) -> None:
        if w.argument_fetch:
            self._fetch_move(w, _F_DONE, "%s", why)

    # -- fetching -----------------------------------------------------------------------

    def _ensure_local(self, rec: _Object, dest: NodeID) -> None:
        """Start what brings available ``rec`` into memory on ``dest`` (if nothing is under way)."""
        if dest in rec.pulls or dest in rec.retry_timers:
            return
        here = rec.copies.get(dest)
        if here is not None:
            assert here.state is _SPILLED, (rec.obj, dest)
            self._start_restore(rec, dest, here)
            return
        tried = rec.failed_sources.get(dest)
        source: NodeID | None = None
        any_holder = False
        copies = rec.copies
        for node in sorted(copies) if len(copies) > 1 else copies:
            if copies[node].state is _IN_MEMORY:
                any_holder = True
                if tried is None or node not in tried:
                    source = node
                    break
        if source is not None:
            self._start_pull(rec, source, dest)
        elif any_holder:
            rec.retry_timers[dest] = None
            self.stats["pull_retry_timers"] += 1
            self._log(rec.obj, "every holder failed to serve %s: retry later", dest)
            self._out.append(
                SetTimer(
                    stimulus_id=self._sid,
                    timer=f"{PULL_RETRY_TIMER_PREFIX}{rec.obj}@{dest}",
                    at=self._now + self._pull_retry_s,
                )
            )
        else:
            assert rec.primary is not None
            self._restore_for_elsewhere(rec, rec.primary, rec.copies[rec.primary])

    def _start_pull(self, rec: _Object, source: NodeID, dest: NodeID) -> None:
        """Pull ``rec`` from ``source`` (an in-memory copy) to ``dest``; the source is held."""
        obj = rec.obj
        size = rec.size_bytes
        sid = self._sid
        rec.pulls[dest] = source
        dest_store = self._stores[dest]
        dest_store.incoming[obj] = None
        self._inbound(dest_store, size)
        self._hold(rec, source)
        self.stats["pulls"] += 1
        self._story.append((obj, sid, "pull from %s to %s", source, dest))  # ``_log``
        pull = _build_pull(sid, obj, source, dest, size)
        self._out.append(pull)

    def _restore_for_elsewhere(self, rec: _Object, home: NodeID, copy: _Copy) -> None:
        """The only copy is spilled on ``home`` and a fetch elsewhere needs it: restore it
        there now if it fits beside what ``home`` keeps, else when room frees there."""
        store = self._stores[home]
        if copy.restoring or rec.size_bytes > store.capacity_bytes:
            return
        if store.pinned_bytes + store.inbound_bytes + rec.size_bytes <= store.capacity_bytes:
            self._start_restore(rec, home, copy)
        elif rec.obj not in store.restores_waiting:
            store.restores_waiting[rec.obj] = None
            self.stats["restores_waiting_for_room"] += 1
            self._log(rec.obj, "restore on %s waits for room there", home)

    def _start_restore(self, rec: _Object, node: NodeID, copy: _Copy) -> None:
        store = self._stores[node]
        if copy.restoring or rec.size_bytes > store.capacity_bytes:
            return
        store.restores_waiting.pop(rec.obj, None)
        copy.restoring = True
        self._inbound(store, rec.size_bytes)
        self.stats["restores"] += 1
        self._log(rec.obj, "restore on %s", node)
        self._out.append(
            RestoreObject(stimulus_id=self._sid, obj=rec.obj, node=node, size_bytes=rec.size_bytes)
        )

    def _end_pull(self, rec: _Object, dest: NodeID) -> None:
        source = rec.pulls.pop(dest)
        dest_store = self._stores[dest]
        del dest_store.incoming[rec.obj]
        self._inbound(dest_store, -rec.size_bytes)
        if source in rec.copies:  # else the source copy is already gone, and its holds with it
            self._unhold(rec, source)

    def _clear_trouble(self, rec: _Object, dest: NodeID) -> None:
        rec.failed_sources.pop(dest, None)
        rec.retry_timers.pop(dest, None)
        self._stores[dest].troubled.pop(rec.obj, None)

    # -- room, copies, loss ------------------------------------------------------------

    def _place_primary(self, rec: _Object, node: NodeID) -> Failure | None:
        """Store the primary of ``rec`` on ``node``: in memory, spilled, or a store-full failure."""
        store = self._stores[node]
        size = rec.size_bytes
        if size <= store.capacity_bytes and (
            store.used_bytes + size <= store.capacity_bytes or self._make_room(store, size)
        ):
            rec.copies[node] = _Copy()
            store.primaries[rec.obj] = None
            store.used_bytes += size
            if not store.spill_enabled:  # a primary that cannot be spilled is pinned
                self._pin(store, size)
        elif store.spill_enabled:
            rec.copies[node] = _Copy(state=_SPILLED)
            store.spilled[rec.obj] = None
            self.stats["spills"] += 1
            self._log(rec.obj, "does not fit in %s's store: spilled at once", node)
            self._out.append(SpillObject(stimulus_id=self._sid, obj=rec.obj, node=node, size_bytes=size))
        else:
            self.stats["store_full_failures"] += 1
            return self._store_full(rec, store, "does not fit")
        rec.primary = node
        return None

    def _place_secondary(self, rec: _Object, node: NodeID) -> bool:
        store = self._stores[node]
        size = rec.size_bytes
        capacity = store.capacity_bytes
        if size > capacity or (store.used_bytes + size > capacity and not self._make_room(store, size)):
            return False
        rec.copies[node] = _Copy()
        store.secondaries[rec.obj] = None
        store.used_bytes += size
        return True

    def _make_room(self, store: _Store, size: int) -> bool:
        """Free ``size`` bytes in ``store``: plan evictions then spills; act only if enough."""
        missing = store.used_bytes + size - store.capacity_bytes
        if missing <= 0:
            return True
        evict: list[_Object] = []
        for obj in store.secondaries:
            rec = self._objects[obj]
            if rec.copies[store.node].holds:
                continue
            evict.append(rec)
            missing -= rec.size_bytes
            if missing <= 0:
                break
        spill: list[_Object] = []
        if missing > 0 and store.spill_enabled:
            for obj in store.primaries:
                rec = self._objects[obj]
                if rec.copies[store.node].holds:
                    continue
                spill.append(rec)
                missing -= rec.size_bytes
                if missing <= 0:
                    break
        if missing > 0:
            return False
        for rec in evict:
            self._remove_copy(rec, store.node)
            self.stats["evictions"] += 1
            self._log(rec.obj, "evicted from %s (least recently used)", store.node)
            self._emit_delete(rec.obj, store.node, "evicted (least recently used) to make room")
        for rec in spill:
            copy = rec.copies[store.node]
            self._set_copy_state(rec, store.node, copy, _SPILLED)
            del store.primaries[rec.obj]
            store.spilled[rec.obj] = None
            store.used_bytes -= rec.size_bytes
            self.stats["spills"] += 1
            self._out.append(
                SpillObject(
                    stimulus_id=self._sid, obj=rec.obj, node=store.node, size_bytes=rec.size_bytes
                )
            )
        return True

    def _remove_copy(self, rec: _Object, node: NodeID) -> _Copy:
        """Take the copy out of the indexes (no promotion, no command)."""
        copy = rec.copies.pop(node)
        store = self._stores[node]
        if copy.state is _SPILLED:
            del store.spilled[rec.obj]
            store.restores_waiting.pop(rec.obj, None)
            if copy.restoring:
                self._inbound(store, -rec.size_bytes)
        else:
            if copy.holds or (node == rec.primary and not store.spill_enabled):
                self._pin(store, -rec.size_bytes)
            store.used_bytes -= rec.size_bytes
            if node == rec.primary:
                del store.primaries[rec.obj]
            else:
                del store.secondaries[rec.obj]
        return copy

    def _drop_copy(self, rec: _Object, node: NodeID, *, delete_reason: str | None) -> None:
        """A copy is gone: end what relied on it, promote or lose the object. Caller refreshes."""
        copy = self._remove_copy(rec, node)
        self._log(rec.obj, "copy on %s gone", node)
        if delete_reason is not None:
            self._emit_delete(rec.obj, node, delete_reason)
        if copy.holds:
            self._held_copy_gone(rec, node)
        if rec.primary != node:
            return
        rec.primary = None
        holders = sorted(rec.copies)
        if holders:
            promoted = holders[0]
            assert rec.copies[promoted].state is _IN_MEMORY, (rec.obj, promoted)
            store = self._stores[promoted]
            del store.secondaries[rec.obj]
            store.primaries[rec.obj] = None
            rec.primary = promoted
            if not store.spill_enabled and not rec.copies[promoted].holds:
                self._pin(store, rec.size_bytes)  # a primary that cannot be spilled
            self.stats["promotions"] += 1
            self._log(rec.obj, "primary lost: copy on %s promoted to primary", promoted)
            return
        for dest in list(rec.failed_sources):
            self._clear_trouble(rec, dest)
        rec.lost_reported = False
        self.stats["losses"] += 1
        self._set_status(rec, _LOST, "last copy gone with %s", node)

    # -- small helpers --------------------------------------------------------------------

    def _live_store(self, node: NodeID, stale_counter: str) -> bool:
        store = self._stores.get(node)
        if store is None or not store.alive:
            self.stats[stale_counter] += 1
            return False
        return True

    def _touch(self, store: _Store, obj: ObjectID) -> None:
        if obj in store.secondaries:
            store.secondaries.move_to_end(obj)
        elif obj in store.primaries:
            store.primaries.move_to_end(obj)

    def _drop_every_copy(self, rec: _Object, reason: str) -> None:
        if rec.pulls:
            for dest in list(rec.pulls):
                self._end_pull(rec, dest)
        if rec.failed_sources:
            for node in list(rec.failed_sources):
                self._clear_trouble(rec, node)
        copies = rec.copies
        for node in sorted(copies) if len(copies) > 1 else list(copies):
            copy = self._remove_copy(rec, node)
            self._emit_delete(rec.obj, node, reason)
            if copy.holds:
                self._held_copy_gone(rec, node)
        rec.primary = None

    def _emit_delete(self, obj: ObjectID, node: NodeID, reason: str) -> None:
        delete = _build_delete(self._sid, obj, node, reason)
        self._out.append(delete)

    def _store_full(self, rec: _Object, store: _Store, what: str) -> Failure:
        pinned = store.pinned_bytes
        if store.spill_enabled:
            why = "held for queued or running tasks and transfers: neither evicted nor spilled"
        else:
            why = "primary copies in scope or held copies; spilling is disabled there"
        return failure(
            ErrorKind.OBJECT_STORE_FULL,
            f"object {rec.obj} ({rec.size_bytes} bytes) {what}: the object store of "
            f"{store.node} holds {store.capacity_bytes} bytes, {pinned} of them pinned ({why})",
            object=rec.obj,
            node=store.node,
            object_size_bytes=rec.size_bytes,
            store_capacity_bytes=store.capacity_bytes,
            pinned_bytes=pinned,
            spill_enabled=store.spill_enabled,
        )

    def _too_big(self, rec: _Object, store: _Store, what: str) -> Failure:
        return failure(
            ErrorKind.OBJECT_STORE_FULL,
            f"object {rec.obj} ({rec.size_bytes} bytes) {what} of {store.node} "
            f"({store.capacity_bytes} bytes): it can never be in memory there",
            object=rec.obj,
            node=store.node,
            object_size_bytes=rec.size_bytes,
            store_capacity_bytes=store.capacity_bytes,
        )

    def _check_transition(self, rec: _Object, new: ObjectStatus) -> None:
        if (rec.status._value_, new._value_) not in _LEGAL:
            raise InvalidTransition(
                f"object {rec.obj}: {rec.status.name} -> {new.name} is not a legal transition",
                self.story(rec.obj),
            )

    def _set_status(self, rec: _Object, new: ObjectStatus, why: str, *args: object) -> None:
        """Move ``rec``; its story line ends with ``why % args`` (``why`` as is without args)."""
        old = rec.status._value_
        if (old, new._value_) not in _LEGAL:
            self._check_transition(rec, new)  # raises
        if args:  # ``_log``, inline
            self._story.append((rec.obj, self._sid, "%s -> %s: " + why, old, new._value_) + args)
        else:
            self._story.append((rec.obj, self._sid, "%s -> %s: %s", old, new._value_, why))
        rec.status = new

    def _set_copy_state(self, rec: _Object, node: NodeID, copy: _Copy, new: CopyState) -> None:
        if (copy.state._value_, new._value_) not in _COPY_LEGAL:
            raise InvalidTransition(
                f"copy of {rec.obj} on {node}: {copy.state.name} -> {new.name} is not legal",
                self.story(rec.obj),
            )
        self._log(rec.obj, "copy on %s: %s -> %s", node, copy.state._value_, new._value_)
        copy.state = new

    def _log(self, key: str, template: str, *args: object) -> None:
        # Formatting waits until someone reads the story: the hot path only appends a tuple.
        self._story.append((key, self._sid, template) + args)

    # -- the outside checker's hook -------------------------------------------------------

    def check_invariants(self) -> None:
        """Cross-check every index; raise AssertionError naming what is wrong."""
        assert not self._marked, f"stores left marked after the event: {list(self._marked)}"
        holds: dict[tuple[ObjectID, NodeID], int] = {}
        for wid, w in self._waiters.items():
            assert len(w.ready) + len(w.failed) < w.required, f"waiter {wid} satisfied but not woken"
            self._check_admission(wid, w)
            assert not (w.ready.keys() & w.failed.keys()), f"waiter {wid}: ready and failed overlap"
            assert set(w.ready) | set(w.failed) <= set(w.objects), f"waiter {wid}: foreign objects"
            if w.fetch:
                store = self._stores.get(w.node)
                assert store is not None and store.alive, f"fetch waiter {wid} on dead node {w.node}"
                assert wid in store.fetch_waiters, f"fetch waiter {wid} missing from {w.node}'s index"
            for obj in w.objects:
                rec = self._objects.get(obj)
                if obj in w.failed:
                    continue
                assert rec is not None, f"waiter {wid} waits for forgotten object {obj}"
                assert wid in rec.waiters, f"waiter {wid} missing from {obj}'s waiters"
                if obj in w.ready:
                    if w.fetch:
                        copy = rec.copies.get(w.node)
                        assert copy is not None and copy.state is _IN_MEMORY, (
                            f"waiter {wid}: {obj} ready but not in memory on {w.node}"
                        )
                        holds[(obj, w.node)] = holds.get((obj, w.node), 0) + 1
                    else:
                        assert rec.status is _AVAILABLE, f"waiter {wid}: {obj} ready"
                    continue
                self._check_progress(wid, w, rec)
        for wid, held in self._held.items():
            self._check_held(wid, held, holds)
        for store in self._stores.values():
            for wid in store.fetch_waiters:
                assert self._waiters[wid].node == store.node, f"{wid} indexed on {store.node}"
            for wid in store.held_fetches:
                assert wid in self._held, f"{store.node}: held fetch {wid} has no record"
                assert self._held[wid].node == store.node, f"held fetch {wid} indexed on {store.node}"
        freed_overlap = self._freed.keys() & self._objects.keys()
        assert not freed_overlap, f"freed objects still have records: {sorted(freed_overlap)}"
        assert len(self._freed) <= self._freed_max, "freed tombstones exceed their bound"
        for obj, rec in self._objects.items():
            self._check_object(obj, rec, holds)
        for node, store in self._stores.items():
            self._check_store(node, store)

    def _check_held(
        self, wid: str, held: _HeldFetch, holds: dict[tuple[ObjectID, NodeID], int]
    ) -> None:
        assert held.waiter == wid, (wid, held.waiter)
        assert parse_fetch_waiter(wid) is not None, f"held fetch {wid} is not an argument fetch"
        assert wid not in self._waiters, f"{wid} both waits and holds an answered fetch"
        node = held.node
        store = self._stores.get(node)
        assert store is not None and store.alive, f"held fetch {wid} on dead node {node}"
        assert wid in store.held_fetches, f"held fetch {wid} missing from {node}'s index"
        for obj in held.objects:
            rec = self._objects.get(obj)
            assert rec is not None, f"held fetch {wid} holds forgotten object {obj}"
            assert wid in rec.holders, f"held fetch {wid} missing from {obj}'s holders"
            copy = rec.copies.get(node)
            assert copy is not None and copy.state is _IN_MEMORY, (
                f"held fetch {wid}: {obj} not in memory on {node}"
            )
            holds[(obj, node)] = holds.get((obj, node), 0) + 1

    def _check_progress(self, wid: str, w: _Waiter, rec: _Object) -> None:
        obj = rec.obj
        status = rec.status
        assert status is not _FAILED, f"waiter {wid} still waits for failed {obj}"
        if status is _LOST:
            assert rec.lost_reported, f"waiter {wid} waits for lost {obj} never reported lost"
        if status is _AVAILABLE:
            assert w.fetch, f"waiter {wid} (no fetch) waits for available {obj}"
            if w.in_line:
                return  # it starts nothing before it is admitted
            here = rec.copies.get(w.node)
            if here is not None:
                assert here.state is _SPILLED, f"{wid}: {obj} local but not ready"
                assert here.restoring, f"{wid}: {obj} spilled on {w.node} and no restore"
            else:
                primary_copy = rec.copies[rec.primary] if rec.primary else None
                under_way = (
                    w.node in rec.pulls
                    or w.node in rec.retry_timers
                    or (primary_copy is not None and primary_copy.restoring)
                    or (rec.primary is not None and obj in self._stores[rec.primary].restores_waiting)
                )
                assert under_way, f"{wid}: nothing brings {obj} to {w.node}"

    def _check_object(
        self, obj: ObjectID, rec: _Object, holds: dict[tuple[ObjectID, NodeID], int]
    ) -> None:
        assert rec.obj == obj, (obj, rec.obj)
        status = rec.status
        assert status is not _FREED, f"{obj}: freed object kept a record"
        if status is _AVAILABLE:
            assert rec.copies, f"{obj}: available without a copy"
            assert rec.primary in rec.copies, f"{obj}: primary {rec.primary} holds no copy"
            assert rec.failure is None, f"{obj}: both available and failed"
        else:
            assert not rec.copies, f"{obj}: {status.value} yet has copies {sorted(rec.copies)}"
            assert rec.primary is None, f"{obj}: {status.value} yet has a primary"
            assert not rec.pulls, f"{obj}: {status.value} yet pulls are in flight"
            assert not rec.failed_sources and not rec.retry_timers, f"{obj}: pull state kept"
        if status is _FAILED:
            assert rec.failure is not None, f"{obj}: failed without a failure"
        if status is _PENDING:
            assert rec.waiters, f"{obj}: pending with no waiter should be forgotten"
        for wid in rec.waiters:
            assert wid in self._waiters and obj in self._waiters[wid].objects, f"{obj}: waiter {wid}"
        for wid in rec.holders:
            held = self._held.get(wid)
            assert held is not None and obj in held.objects, f"{obj}: holder {wid} does not hold it"
        for node, copy in rec.copies.items():
            store = self._stores.get(node)
            assert store is not None and store.alive, f"{obj}: copy on dead node {node}"
            if copy.state is _SPILLED:
                assert node == rec.primary, f"{obj}: a spilled copy on {node} is not the primary"
                assert obj in store.spilled, f"{obj}: spilled copy missing from {node}'s index"
                assert copy.holds == 0, f"{obj}: spilled copy on {node} is held"
            else:
                assert not copy.restoring, f"{obj}: in-memory copy on {node} restoring"
                index = store.primaries if node == rec.primary else store.secondaries
                assert obj in index, f"{obj}: copy on {node} missing from its LRU index"
            expected = holds.get((obj, node), 0) + sum(1 for s in rec.pulls.values() if s == node)
            assert copy.holds == expected, f"{obj}@{node}: holds {copy.holds} != {expected}"
        for dest, source in rec.pulls.items():
            assert dest not in rec.copies, f"{obj}: pulled to {dest} which has a copy"
            src = rec.copies.get(source)
            assert src is not None and src.state is _IN_MEMORY, f"{obj}: bad source {source}"
            assert obj in self._stores[dest].incoming, f"{obj}: pull to {dest} not indexed"
            assert dest not in rec.retry_timers, f"{obj}: pull and retry timer for {dest}"
        for dest in rec.retry_timers:
            assert dest in rec.failed_sources, f"{obj}: retry timer for {dest} without failures"
        for dest in rec.failed_sources:
            store = self._stores[dest]
            assert store.alive and obj in store.troubled, f"{obj}: failed sources for {dest}"

    def _check_admission(self, wid: str, w: _Waiter) -> None:
        argument_fetch = w.fetch and parse_fetch_waiter(wid) is not None
        assert w.argument_fetch == argument_fetch, f"waiter {wid}: argument_fetch {w.argument_fetch}"
        if not argument_fetch:
            assert not w.in_line and w.state is _F_NEW, f"waiter {wid} is not an argument fetch"
            return
        expected = _F_WAITING_FOR_ROOM if w.in_line else _F_ADMITTED
        assert w.state is expected, f"argument fetch {wid}: {w.state.name}, in line: {w.in_line}"
        store = self._stores[w.node]
        assert (wid in store.room_line) == w.in_line, f"argument fetch {wid}: line index"
        if w.in_line:
            assert not w.ready, f"argument fetch {wid} waits for room yet has ready copies"

    def _check_line(self, node: NodeID, store: _Store) -> None:
        line = store.room_line
        assert len(line) <= self._waiting_max, f"{node}: {len(line)} fetches in line"
        last_seq = 0
        for wid in line:
            w = self._waiters.get(wid)
            assert w is not None and w.in_line and w.node == node, f"{node}: line entry {wid}"
            assert w.seq > last_seq, f"{node}: line out of arrival order at {wid}"
            last_seq = w.seq
        if not line:
            return
        head = self._waiters[next(iter(line))]
        total, others = self._room_need(head, store)
        assert self._never_fits(head, store, total) is None, f"{node}: head {head.waiter} can never fit"
        assert others + total > store.capacity_bytes, (
            f"{node}: head {head.waiter} fits ({total} + {others} <= {store.capacity_bytes}) yet waits"
        )

    def _check_room_counters(self, node: NodeID, store: _Store) -> None:
        pinned = 0
        inbound = 0
        for obj in (*store.primaries, *store.secondaries):
            rec = self._objects[obj]
            copy = rec.copies[node]
            if copy.holds or (node == rec.primary and not store.spill_enabled):
                pinned += rec.size_bytes
        for obj in store.incoming:
            inbound += self._objects[obj].size_bytes
        for obj in store.spilled:
            rec = self._objects[obj]
            if rec.copies[node].restoring:
                inbound += rec.size_bytes
        assert pinned == store.pinned_bytes, f"{node}: pinned {store.pinned_bytes} != {pinned}"
        assert inbound == store.inbound_bytes, f"{node}: inbound {store.inbound_bytes} != {inbound}"
        for obj in store.restores_waiting:
            waiting = self._objects.get(obj)
            spilled = waiting.copies.get(node) if waiting is not None else None
            assert waiting is not None and spilled is not None, f"{node}: waiting restore of {obj}"
            assert spilled.state is _SPILLED and not spilled.restoring, f"{node}: restore {obj}"
            if self._wanted_elsewhere(waiting, node):
                assert pinned + inbound + waiting.size_bytes > store.capacity_bytes, (
                    f"{node}: the restore of {obj} fits yet waits"
                )

    def _check_store(self, node: NodeID, store: _Store) -> None:
        assert store.node == node, (node, store.node)
        indexes = (store.secondaries, store.primaries, store.spilled, store.incoming, store.troubled)
        if not store.alive:
            assert not any(indexes) and not store.fetch_waiters, f"dead {node} kept state"
            assert not store.held_fetches, f"dead {node} kept held fetches"
            assert store.used_bytes == 0, f"dead {node} uses {store.used_bytes} bytes"
            assert store.pinned_bytes == 0 and store.inbound_bytes == 0, f"dead {node} counts bytes"
            assert not store.room_line and not store.restores_waiting, f"dead {node} kept a line"
            return
        self._check_room_counters(node, store)
        self._check_line(node, store)
        used = 0
        for obj in store.secondaries:
            rec = self._objects[obj]
            assert rec.primary != node and node in rec.copies, f"{node}: bad secondary {obj}"
            used += rec.size_bytes
        for obj in store.primaries:
            rec = self._objects[obj]
            copy = rec.copies.get(node)
            assert rec.primary == node and copy is not None, f"{node}: bad primary {obj}"
            assert copy.state is _IN_MEMORY, f"{node}: primary {obj} not in memory"
            used += rec.size_bytes
        for obj in store.spilled:
            copy = self._objects[obj].copies.get(node)
            assert copy is not None and copy.state is _SPILLED, f"{node}: spilled {obj}"
        for obj in store.incoming:
            assert node in self._objects[obj].pulls, f"{node}: incoming {obj} not pulled"
        for obj in store.troubled:
            assert node in self._objects[obj].failed_sources, f"{node}: troubled {obj}"
        assert used == store.used_bytes, f"{node}: used {store.used_bytes} != copies {used}"
        assert used <= store.capacity_bytes, f"{node}: used {used} > capacity {store.capacity_bytes}"


def _text(entry: tuple[object, ...]) -> str:
    """The text of a story entry (key, stimulus_id, template, *args): ``template % args``."""
    template = entry[2]
    assert isinstance(template, str)
    return template % entry[3:]
