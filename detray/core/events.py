"""Events: past-tense facts that drivers (and the router) feed to the state machines.

Every event is a frozen, slotted, keyword-only dataclass carrying ``now``
(seconds, virtual or real: the core never reads a clock) and ``stimulus_id``
(the commands it causes carry the same id). Events name what happened, never
what to do. Which machine consumes which event is listed in
``detray/core/router.py``.

Attempts and incarnations: a task attempt is ``(task_id, attempt)``; a node
life is ``(node, incarnation)``. An event naming a superseded attempt or a
dead incarnation is stale: machines drop it and count it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from detray.core.errors import Failure
from detray.core.ids import ActorID, NodeID, ObjectID, TaskID, WorkerID
from detray.core.specs import ActorSpec, TaskSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    now: float
    stimulus_id: str


# --- cluster membership (all machines) ---------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeJoined(Event):
    """A node joined (or came back with a higher incarnation)."""

    node: NodeID
    incarnation: int
    resources: Mapping[str, int]
    """Total resources in fixed-point units."""
    object_store_bytes: int
    spill_enabled: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeDied(Event):
    """The failure detector declared ``(node, incarnation)`` dead."""

    node: NodeID
    incarnation: int


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeResourcesReported(Event):
    """Another node's available resources, as the control plane last reported them."""

    node: NodeID
    incarnation: int
    available: Mapping[str, int]


# --- workers (scheduler, tasks, actors) ---------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStarted(Event):
    """A worker process (real or simulated) is up and registered with its node."""

    worker: WorkerID
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerDied(Event):
    """A worker exited or was killed (its running attempt, if any, is lost)."""

    worker: WorkerID
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerBlocked(Event):
    """The worker's user code waits in ``get``/``wait``: it lends its CPUs back."""

    worker: WorkerID
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerUnblocked(Event):
    worker: WorkerID
    node: NodeID


# --- tasks ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSubmitted(Event):
    """The owner submitted a task (normal, actor creation, or actor task)."""

    spec: TaskSpec
    node: NodeID
    """The submitter's node: where scheduling starts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskArrived(Event):
    """A task attempt reached ``node``'s scheduler (locally, or forwarded by a peer)."""

    spec: TaskSpec
    attempt: int
    node: NodeID
    arg_bytes_by_node: tuple[tuple[NodeID, int], ...] = ()
    """Bytes of the task's arguments held on each node (locality hint)."""
    hops: int = 0
    """Times this attempt was forwarded (spillback) so far."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgumentsFetched(Event):
    """Every argument of the attempt is local on ``node`` (or failed)."""

    task: TaskID
    attempt: int
    node: NodeID
    failure: Failure | None = None
    """Set when an argument can never be obtained; the attempt then fails."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskStarted(Event):
    """The driver began running the attempt's code on ``worker``."""

    task: TaskID
    attempt: int
    node: NodeID
    worker: WorkerID


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFinished(Event):
    """The attempt returned; its return objects are stored on ``node``."""

    task: TaskID
    attempt: int
    node: NodeID
    worker: WorkerID
    return_sizes: tuple[tuple[ObjectID, int], ...] = ()
    """Size in bytes of each return object (the objects are in ``node``'s store)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFailed(Event):
    """The attempt's user code raised (or was cancelled while running).

    ``error_types`` are the qualified names of the exception's type and its
    bases (most derived first), so ``retry_exceptions`` can be decided here.
    The return objects hold the error (stored on ``node``) when it is final.
    """

    task: TaskID
    attempt: int
    node: NodeID
    worker: WorkerID
    error_types: tuple[str, ...] = ()
    cancelled: bool = False
    return_sizes: tuple[tuple[ObjectID, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CancelRequested(Event):
    task: TaskID
    force: bool = False
    recursive: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskWithdrawn(Event):
    """The owner withdrew a queued attempt (cancelled, or superseded)."""

    task: TaskID
    attempt: int
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskUnschedulable(Event):
    """A scheduler found the attempt can never run (hard affinity to a dead node)."""

    task: TaskID
    attempt: int
    failure: Failure


# --- objects ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectPut(Event):
    """``put`` stored a primary copy of ``obj`` on ``node``."""

    obj: ObjectID
    node: NodeID
    size_bytes: int
    owner: WorkerID


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectCopied(Event):
    """A pull finished: ``node`` now holds a secondary copy of ``obj``."""

    obj: ObjectID
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectPullFailed(Event):
    """A pull of ``obj`` to ``node`` from ``source`` failed (source died, partition)."""

    obj: ObjectID
    node: NodeID
    source: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectRestored(Event):
    """A spilled object was read back into ``node``'s store."""

    obj: ObjectID
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class CopiesEvicted(Event):
    """Copies vanished from ``node``'s store outside the directory's control (a fault)."""

    node: NodeID
    objects: tuple[ObjectID, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectsRequested(Event):
    """``waiter`` needs ``objects`` (``get``, ``wait``, or argument fetch).

    With ``fetch`` the objects must become local to ``node``; the waiter is
    satisfied when ``num_required`` of them are ready (or failed).
    """

    waiter: str
    node: NodeID
    objects: tuple[ObjectID, ...]
    num_required: int
    fetch: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class WaiterCancelled(Event):
    """A ``get``/``wait`` timed out or its worker died: forget the waiter."""

    waiter: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectFailed(Event):
    """``obj`` will never have a value: it resolves to ``failure``."""

    obj: ObjectID
    failure: Failure


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectLost(Event):
    """``obj`` is needed but no copy is left anywhere: rebuild it or fail it."""

    obj: ObjectID


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectFreed(Event):
    """The owner's count of references to ``obj`` reached zero."""

    obj: ObjectID


@dataclass(frozen=True, slots=True, kw_only=True)
class RefsAdded(Event):
    """The owner gained references (handles, nested refs, borrowers)."""

    owner: WorkerID
    objects: tuple[ObjectID, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RefsRemoved(Event):
    owner: WorkerID
    objects: tuple[ObjectID, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class OwnerDied(Event):
    """The owner process is gone: what it owns can no longer be rebuilt."""

    owner: WorkerID


# --- actors ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorCreated(Event):
    """``Class.remote()`` was called: register the actor and create it."""

    spec: ActorSpec
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorKillRequested(Event):
    """The end of an actor's current incarnation was asked for.

    From outside (``kill``, or its last handle gone): the incarnation ends at
    once (its worker is killed) and the actor restarts if ``no_restart`` is
    false and restarts are left. From the actor itself (``exit_call`` set):
    attempt ``exit_attempt`` of that call, running on ``worker``, called
    ``exit_actor()`` (so does ``__ray_terminate__``): an intentional exit,
    never restarted whatever ``no_restart`` says; calls still running on the
    actor (threaded and async actors) finish first, queued and later ones fail.
    """

    actor: ActorID
    no_restart: bool = True
    exit_call: TaskID | None = None
    exit_attempt: int = 0
    worker: WorkerID | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorTaskAborted(Event):
    """An actor task attempt was lost with its actor (in flight or queued)."""

    task: TaskID
    attempt: int
    actor: ActorID
    actor_restarting: bool
    failure: Failure


# --- timers --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TimerFired(Event):
    timer: str


# --- additions by machine (append in your own section) ------------------------------
# --- scheduler additions ---


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgumentsMissing(Event):
    """The router's form of the directory's ``ReportArgumentsMissing``: copies
    (``objects``) that the attempt's answered fetch held on ``node`` are gone. A
    queued attempt fetches its arguments again; a running one already has them."""

    task: TaskID
    attempt: int
    node: NodeID
    objects: tuple[ObjectID, ...] = ()

# --- object directory additions ---
# --- task manager additions ---


@dataclass(frozen=True, slots=True, kw_only=True)
class ArgumentsReady(Event):
    """The directory answered the task manager's ``RequestObjects``: the router's form
    of a ``WakeWaiter`` whose waiter starts with ``"task:"`` (same fields).

    ``waiter`` is ``f"task:{task_id}"`` (for an actor constructor: the creation
    task's id); ``ready`` objects exist somewhere, ``failed`` ones resolve to
    their failure (the task then fails with it, as Ray propagates errors).
    """

    waiter: str
    ready: tuple[ObjectID, ...]
    failed: tuple[tuple[ObjectID, Failure], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorTerminated(Event):
    """The actor is DEAD and will never restart: the task manager releases the
    constructor arguments it kept referenced for restarts."""

    actor: ActorID

# --- actor manager additions ---


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorArgumentsReady(Event):
    """The creation task's arguments exist (the router's form of ``CreateActor``):
    the actor manager may now place the creation task, and re-place it on restarts."""

    spec: ActorSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorTaskReady(Event):
    """An actor task attempt whose arguments exist (the router's form of
    ``SubmitActorTask``): queue it at its actor."""

    spec: TaskSpec
    attempt: int

