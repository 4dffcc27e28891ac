"""What the core knows of a task or actor: its spec, without any payload.

Owns: ``TaskSpec``, ``ActorSpec`` and the scheduling strategies. A spec holds
ids, resource requests, retry budgets and placement hints; the pickled
function and arguments stay with the driver (keyed by task id), so the core
never touches user bytes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from detray.core.ids import ActorID, JobID, NodeID, ObjectID, TaskID, WorkerID

DEFAULT_MAX_RETRIES = 3
"""Ray's default ``max_retries`` for normal tasks."""
DEFAULT_MAX_RESTARTS = 0
DEFAULT_MAX_TASK_RETRIES = 0
INFINITE = -1
"""``max_retries=-1`` / ``max_restarts=-1``: retry without bound, as Ray."""


class TaskKind(enum.Enum):
    NORMAL = "normal"
    ACTOR_CREATION = "actor_creation"
    ACTOR_TASK = "actor_task"


@dataclass(frozen=True, slots=True)
class DefaultStrategy:
    """Ray's hybrid policy: local until loaded beyond a threshold, then best node."""

    name: str = "DEFAULT"


@dataclass(frozen=True, slots=True)
class SpreadStrategy:
    """Spread tasks across nodes round-robin among those that can take them."""

    name: str = "SPREAD"


@dataclass(frozen=True, slots=True)
class NodeAffinityStrategy:
    """Run on ``node``; if ``soft``, fall back to the default policy when it cannot."""

    node: NodeID
    soft: bool = False
    name: str = "NODE_AFFINITY"


SchedulingStrategy = DefaultStrategy | SpreadStrategy | NodeAffinityStrategy
DEFAULT_STRATEGY = DefaultStrategy()


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskSpec:
    """Everything the core needs to decide about one task (not its payload).

    ``args`` lists only the top-level refs (they must be resolved before the
    task runs); refs nested in containers are the worker's business.
    ``resources`` is what the task holds while it runs;
    ``placement_resources`` is what must fit for it to be placed (they differ
    for actors: 1 CPU to place, 0 held while alive, unless told otherwise).
    """

    task_id: TaskID
    job_id: JobID
    owner: WorkerID
    """The worker (or driver) that submitted it and owns its return objects."""
    name: str
    """Function or ``Class.method`` name: for durations, traces and messages."""
    kind: TaskKind = TaskKind.NORMAL
    args: tuple[ObjectID, ...] = ()
    return_ids: tuple[ObjectID, ...] = ()
    resources: Mapping[str, int] = field(default_factory=dict)
    placement_resources: Mapping[str, int] | None = None
    strategy: SchedulingStrategy = DEFAULT_STRATEGY
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_exceptions: bool | tuple[str, ...] = False
    """``True``, or qualified names of exception types that may be retried."""
    actor_id: ActorID | None = None
    """For actor tasks and actor creation."""
    caller_seq: int = 0
    """For actor tasks: the submission order from ``owner`` to the actor."""

    @property
    def placement(self) -> Mapping[str, int]:
        return self.resources if self.placement_resources is None else self.placement_resources


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorSpec:
    """An actor: its creation task plus its lifecycle options."""

    actor_id: ActorID
    creation: TaskSpec
    max_restarts: int = DEFAULT_MAX_RESTARTS
    max_task_retries: int = DEFAULT_MAX_TASK_RETRIES
    name: str | None = None
    namespace: str = ""
    detached: bool = False
    max_concurrency: int = 1
    is_async: bool = False
    """Async and threaded actors do not keep per-caller order (Ray's rule)."""
