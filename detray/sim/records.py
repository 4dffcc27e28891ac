"""The simulator's records of what runs where: nodes, workers, task attempts,
units of user code, waiters, and the context user code sees.

Owns: plain data, no behaviour beyond small helpers. The loop
(``cluster.py``) and the executor (``workers.py``) create and update them;
the runtime (``runtime.py``) reads the ``UnitContext`` of the calling code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from detray.core.commands import WakeWaiter
from detray.core.ids import ActorID, JobID, NodeID, ObjectID, TaskID, WorkerID
from detray.core.specs import TaskSpec
from detray.options import ActorClassMeta, FunctionDescriptor
from detray.sim.config import NodeSpec
from detray.sim.objects import StoredValue
from detray.sim.usercode import UserCode
from detray.sim.virtual_env import RandomSlot

if TYPE_CHECKING:
    import asyncio

    from detray.sim.asyncloop import VirtualLoop
    from detray.sim.network import Watch

ArgSlot = tuple[str, Any]
"""``("v", StoredValue)`` an inline value, or ``("r", ObjectID)`` a top-level ref (resolved)."""


@dataclass(slots=True, eq=False)
class SimNode:
    node: NodeID
    index: int
    spec: NodeSpec
    incarnation: int = 0
    up: bool = False
    """Physically running (the router learns deaths later, from the failure detector)."""
    declared_dead: bool = False
    rejoin_when_reachable: bool = False
    slowdown: float = 1.0
    workers: dict[WorkerID, None] = field(default_factory=dict)
    watch: Watch | None = None
    report_dirty: bool = False
    last_report: dict[str, int] | None = None


@dataclass(slots=True, eq=False)
class Payload:
    """What the core never sees: the function and the serialized arguments of a task."""

    function: FunctionDescriptor | None
    """The function or actor class (``None`` for actor methods)."""
    method: str | None
    args: tuple[ArgSlot, ...]
    kwargs: tuple[tuple[str, ArgSlot], ...]
    num_returns: int
    held_refs: tuple[ObjectID, ...] = ()
    """Refs nested in the arguments: kept alive while the payload is kept."""
    held_actors: tuple[ActorID, ...] = ()
    """Actor handles nested in the arguments: their actors stay in scope meanwhile."""
    children: list[TaskID] | None = None
    """Tasks submitted by attempts of this task (recursive cancel)."""


@dataclass(slots=True, eq=False)
class ActorInstance:
    """One incarnation of an actor on its worker."""

    actor_id: ActorID
    meta: ActorClassMeta
    worker: WorkerID
    node: NodeID
    gpu_ids: tuple[int, ...]
    random_slot: RandomSlot
    restarts: int
    instance: Any = None
    loop: VirtualLoop | None = None
    step_pending: bool = False
    step_running: bool = False
    timer_at: float | None = None
    resolutions: list[tuple[asyncio.Future[Any], Waiter]] = field(default_factory=list)
    calls: dict[TaskID, Run] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class SimWorker:
    worker: WorkerID
    node: NodeID
    pid: int
    alive: bool = True
    actor: ActorInstance | None = None
    runs: dict[TaskID, Run] = field(default_factory=dict)
    execs: list[Exec] = field(default_factory=list)
    """Units of user code running (suspended) on this worker."""


@dataclass(slots=True, eq=False)
class UnitContext:
    """What the runtime knows of the calling user code (``usercode.current_context``)."""

    kind: str
    """``driver``, ``task``, ``creation``, ``actor_task`` or ``async_step``."""
    worker_id: WorkerID
    node: NodeID
    job: JobID
    parent_key: TaskID
    """Key of child task ids and put ids (the task id and attempt)."""
    task_id: TaskID | None = None
    attempt: int = 0
    spec: TaskSpec | None = None
    worker: SimWorker | None = None
    actor: ActorInstance | None = None
    gpu_ids: tuple[int, ...] = ()
    run: Run | None = None
    submit_count: int = 0
    put_count: int = 0


@dataclass(slots=True, eq=False)
class Exec:
    """One unit of user code the loop runs (a task body, an actor method, an async
    step, or the adopted driver)."""

    unit: UserCode
    context: UnitContext
    worker: SimWorker | None
    run: Run | None = None
    actor: ActorInstance | None = None
    waiter: Waiter | None = None
    token: int = 0
    """Bumped when the unit is resumed or killed: stale sleep timers see it."""
    dead: bool = False
    blocked_worker: bool = False
    """A ``WorkerBlocked`` was fed for its current wait."""
    lock_wait: Any = None
    """The ``coop.LockWait`` of its latest wait for a threading lock (done once it ended)."""


@dataclass(slots=True, eq=False)
class Run:
    """One task attempt running on a worker."""

    spec: TaskSpec
    attempt: int
    node: NodeID
    worker: SimWorker
    gpu_ids: tuple[int, ...]
    payload: Payload | None
    started_at_s: float
    exec: Exec | None = None
    async_task: Any = None
    finishing: bool = False
    token: int = 0
    ended: bool = False
    cancel_requested: bool = False
    held: tuple[ObjectID, ...] = ()
    """Refs nested in results that wait to be stored (held since the body returned)."""
    held_actors: tuple[ActorID, ...] = ()
    """Actor handles nested in those results (held likewise)."""


@dataclass(slots=True, eq=False)
class Waiter:
    """A ``get``/``wait``/``await``/future waiting for the directory's ``WakeWaiter``."""

    waiter_id: str
    kind: str
    objects: tuple[ObjectID, ...]
    node: NodeID
    exec: Exec | None = None
    wake: WakeWaiter | None = None
    future: Any = None
    actor: ActorInstance | None = None
    done: bool = False
    num_required: int = 0
    fetch: bool = True
    timed_out: bool = False
    timeout_s: float | None = None
    values: dict[ObjectID, StoredValue] | None = None
