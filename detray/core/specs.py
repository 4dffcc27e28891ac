"""What the core knows of a task or actor: its spec, without any payload.

Owns: ``TaskSpec``, ``ActorSpec`` and the scheduling strategies. A spec holds
ids, resource requests, retry budgets and placement hints; the pickled
function and arguments stay with the driver (keyed by task id), so the core
never touches user bytes.

Pickling (speed only): the real runtime sends every ``TaskSpec`` from the
driver to the raylet and on to a worker. A frozen, slotted dataclass pickles
through ``dataclasses``' own ``__getstate__``/``__setstate__``, which call
``dataclasses.fields`` each time; ``_picklable`` gives the specs versions that
read and set the fields by precomputed names, and ``DEFAULT_STRATEGY``
travels as a reference to the module's instance.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, TypeVar, cast

from detray.core.ids import ActorID, JobID, NodeID, ObjectID, TaskID, WorkerID

DEFAULT_MAX_RETRIES = 3
"""Ray's default ``max_retries`` for normal tasks."""
DEFAULT_MAX_RESTARTS = 0
DEFAULT_MAX_TASK_RETRIES = 0
INFINITE = -1
"""``max_retries=-1`` / ``max_restarts=-1``: retry without bound, as Ray."""


_Record = TypeVar("_Record")


def _picklable(cls: type[_Record]) -> type[_Record]:
    """Give a frozen, slotted dataclass a ``__getstate__``/``__setstate__`` pair that read
    and set its fields by names computed once (the state is the tuple of the ``__init__``
    fields' values, in declaration order), instead of calling ``dataclasses.fields`` on
    every pickle."""
    names = tuple(f.name for f in dataclasses.fields(cast(Any, cls)) if f.init)
    getter = attrgetter(*names)
    set_field = object.__setattr__
    post_init = getattr(cls, "__post_init__", None)
    """Fields outside ``__init__`` are derived: not pickled, computed again on unpickling."""

    if len(names) == 1:

        def __getstate__(self: Any) -> tuple[Any, ...]:
            return (getter(self),)

    else:

        def __getstate__(self: Any) -> tuple[Any, ...]:
            state: tuple[Any, ...] = getter(self)  # attrgetter of several names: a tuple
            return state

    def __setstate__(self: Any, state: tuple[Any, ...]) -> None:
        for name, value in zip(names, state, strict=True):
            set_field(self, name, value)  # frozen: as the dataclass ``__init__`` sets them
        if post_init is not None:
            post_init(self)

    setattr(cls, "__getstate__", __getstate__)
    setattr(cls, "__setstate__", __setstate__)
    return cls


class TaskKind(enum.Enum):
    NORMAL = "normal"
    ACTOR_CREATION = "actor_creation"
    ACTOR_TASK = "actor_task"


@dataclass(frozen=True, slots=True)
class DefaultStrategy:
    """Ray's hybrid policy: local until loaded beyond a threshold, then best node."""

    name: str = "DEFAULT"

    def __reduce__(self) -> str | tuple[type[DefaultStrategy], tuple[str]]:
        if self is DEFAULT_STRATEGY:
            return "DEFAULT_STRATEGY"  # unpickles as that module attribute, not a copy
        return DefaultStrategy, (self.name,)


@_picklable
@dataclass(frozen=True, slots=True)
class SpreadStrategy:
    """Spread tasks across nodes round-robin among those that can take them."""

    name: str = "SPREAD"


@_picklable
@dataclass(frozen=True, slots=True)
class NodeAffinityStrategy:
    """Run on ``node``; if ``soft``, fall back to the default policy when it cannot."""

    node: NodeID
    soft: bool = False
    name: str = "NODE_AFFINITY"


SchedulingStrategy = DefaultStrategy | SpreadStrategy | NodeAffinityStrategy
DEFAULT_STRATEGY = DefaultStrategy()


@_picklable
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
    placement: Mapping[str, int] = field(init=False, repr=False, compare=False)
    """What must fit for the task to be placed: ``placement_resources``, else ``resources``
    (computed once: schedulers and policies read it several times per task)."""

    def __post_init__(self) -> None:
        placement = self.resources if self.placement_resources is None else self.placement_resources
        object.__setattr__(self, "placement", placement)  # frozen: as the dataclass ``__init__`` sets


@_picklable
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
