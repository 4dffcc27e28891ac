"""Commands: imperatives the state machines return for a driver (or the router).

Frozen, slotted, keyword-only dataclasses carrying the ``stimulus_id`` of the
event that caused them. Two families:

- *external* commands are carried out by a driver (sim or real): start code,
  move bytes, delete copies, wake a blocked ``get``, warn the user;
- *internal* commands are addressed to another core machine; the router
  (``detray/core/router.py``) turns each into that machine's event, so a
  cascade runs as a work-list loop to a fixed point, never recursion.

Drivers answer external commands with events (``StartWorker`` ->
``WorkerStarted``, ``PullObject`` -> ``ObjectCopied`` / ``ObjectPullFailed``).
"""

from __future__ import annotations

from dataclasses import dataclass

from detray.core.errors import Failure
from detray.core.ids import ActorID, NodeID, ObjectID, TaskID, WorkerID
from detray.core.specs import ActorSpec, TaskSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class Command:
    stimulus_id: str


# --- external: carried out by a driver --------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class StartWorker(Command):
    """Start a worker process on ``node``; answer with ``WorkerStarted``."""

    node: NodeID
    worker: WorkerID


@dataclass(frozen=True, slots=True, kw_only=True)
class StartTask(Command):
    """Run the attempt's code on ``worker``; answer with ``TaskStarted`` then
    ``TaskFinished`` / ``TaskFailed`` (or ``WorkerDied``)."""

    spec: TaskSpec
    attempt: int
    node: NodeID
    worker: WorkerID
    gpu_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardTask(Command):
    """Send the attempt to ``to_node``'s scheduler (spillback); deliver as ``TaskArrived``."""

    spec: TaskSpec
    attempt: int
    from_node: NodeID
    to_node: NodeID
    hops: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptTask(Command):
    """Cancel running code: raise ``TaskCancelledError`` in it, or kill the worker if ``force``."""

    task: TaskID
    attempt: int
    worker: WorkerID
    force: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class KillWorker(Command):
    """Terminate ``worker`` (``ray.kill`` of an actor, forced cancel); answer ``WorkerDied``."""

    worker: WorkerID
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class PullObject(Command):
    """Copy ``obj`` from ``source``'s store to ``node``'s store; answer ``ObjectCopied``
    or ``ObjectPullFailed``."""

    obj: ObjectID
    source: NodeID
    node: NodeID
    size_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteCopy(Command):
    """Remove ``obj`` from ``node``'s store (freed, or evicted to make room)."""

    obj: ObjectID
    node: NodeID
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SpillObject(Command):
    """Write ``obj`` from ``node``'s store to disk and drop it from memory."""

    obj: ObjectID
    node: NodeID
    size_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RestoreObject(Command):
    """Read spilled ``obj`` back into ``node``'s store; answer ``ObjectRestored``."""

    obj: ObjectID
    node: NodeID
    size_bytes: int


@dataclass(frozen=True, slots=True, kw_only=True)
class WakeWaiter(Command):
    """The waiter's request is satisfied: ``ready`` objects are available (local on
    ``node`` when it asked to fetch); ``failed`` ones resolve to their failure."""

    waiter: str
    ready: tuple[ObjectID, ...]
    failed: tuple[tuple[ObjectID, Failure], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Warn(Command):
    """Tell the user something is wrong but may recover (an infeasible task)."""

    code: str
    message: str
    subject: str
    """The task, actor or object the warning is about."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SetTimer(Command):
    """Deliver ``TimerFired(timer)`` at virtual/real time ``at``."""

    timer: str
    at: float


# --- internal: routed to another core machine ------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ScheduleTask(Command):
    """Task manager -> scheduler of ``node``: an attempt is ready to be placed."""

    spec: TaskSpec
    attempt: int
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class WithdrawTask(Command):
    """Task manager -> scheduler: forget a queued attempt (cancelled or superseded)."""

    task: TaskID
    attempt: int
    node: NodeID


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchArguments(Command):
    """Scheduler -> directory: make the attempt's arguments local to ``node``;
    answered as ``ArgumentsFetched``."""

    task: TaskID
    attempt: int
    node: NodeID
    objects: tuple[ObjectID, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestObjects(Command):
    """Task manager -> directory: tell ``waiter`` when objects exist (no fetch)."""

    waiter: str
    node: NodeID
    objects: tuple[ObjectID, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportUnschedulable(Command):
    """Scheduler -> task manager: the attempt can never run."""

    task: TaskID
    attempt: int
    failure: Failure


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportLost(Command):
    """Directory -> task manager (the owner): ``obj`` is needed and has no copy."""

    obj: ObjectID


@dataclass(frozen=True, slots=True, kw_only=True)
class FailObject(Command):
    """Task manager -> directory: ``obj`` resolves to ``failure`` for every waiter."""

    obj: ObjectID
    failure: Failure


@dataclass(frozen=True, slots=True, kw_only=True)
class FreeObject(Command):
    """Task manager (owner) -> directory: no reference is left; drop every copy."""

    obj: ObjectID


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateActor(Command):
    """Task manager -> actor manager: place (or re-place) the actor's creation task."""

    spec: ActorSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class SubmitActorTask(Command):
    """Task manager -> actor manager: an actor task attempt whose arguments exist."""

    spec: TaskSpec
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortActorTask(Command):
    """Actor manager -> task manager: the attempt was lost with its actor."""

    task: TaskID
    attempt: int
    actor: ActorID
    actor_restarting: bool
    failure: Failure


# --- additions by machine (append in your own section) -----------------------------------
# --- scheduler additions ---


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseArguments(Command):
    """Scheduler -> directory: the attempt for which this node sent ``FetchArguments``
    left the node (finished, failed, withdrawn, forwarded, its worker died), so the
    copies its fetch holds may be evicted or spilled again. Deliver as
    ``WaiterCancelled(waiter=fetch_waiter_id(task, attempt, node))``: it cancels a
    fetch still waiting, or releases the holds of one already answered."""

    task: TaskID
    attempt: int
    node: NodeID

# --- object directory additions ---


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportArgumentsMissing(Command):
    """Directory -> scheduler of ``node``: a copy the answered fetch of this attempt
    held is gone (a fault evicted it, or its object failed or was freed), so the
    attempt's arguments are no longer all local. Deliver as ``ArgumentsMissing``."""

    task: TaskID
    attempt: int
    node: NodeID
    objects: tuple[ObjectID, ...]

# --- task manager additions ---


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetWaiter(Command):
    """Task manager -> directory: the task behind ``waiter`` no longer needs its
    ``RequestObjects`` answered (cancelled, or its owner died); deliver as
    ``WaiterCancelled``."""

    waiter: str

# --- actor manager additions ---


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportActorDead(Command):
    """Actor manager -> task manager (and the driver, for the actor table): the
    actor is dead for good and will never restart; release what was kept for
    its restarts. Deliver to the task manager as ``ActorTerminated``."""

    actor: ActorID
    failure: Failure
