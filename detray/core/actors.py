"""The actor manager: actor lifecycle, per-actor call queues, and actor names.

Owns: every actor's state (``PENDING_CREATION -> ALIVE -> RESTARTING -> DEAD``),
its restart budget (``max_restarts``), where its creation task was sent and
which worker and node host it, the queue of calls waiting for it, the calls
in flight on it (at most ``max_concurrency``), and the table of names
(unique per namespace among actors that are not dead).

Must not: read a clock, draw randomness, or do I/O; decide task retries
(``max_task_retries`` arrives as ``spec.max_retries`` of actor tasks and the
task manager enforces it: this machine only reports ``AbortActorTask`` with
``actor_restarting``); resolve arguments or place tasks (the task manager and
the schedulers do); touch resources (the scheduler of the actor's node keeps
the creation worker's resources until ``WorkerDied``).

Theory of operation
-------------------
``ActorCreated`` registers the actor (``PENDING_CREATION``) and claims its
name. ``ActorArgumentsReady`` (the router's form of the task manager's
``CreateActor``) says the constructor's arguments exist: the creation task is
placed with ``ScheduleTask(attempt=1 + restarts)`` at the creator's node (or,
if that node is dead, the lowest live node; with no live node it waits for
``NodeJoined``). One creation attempt is outstanding per incarnation; its
location follows ``TaskArrived`` (spillback) and ``TaskStarted`` (the worker
that runs the constructor). ``TaskFinished`` of that attempt makes the actor
``ALIVE`` on that worker and dispatches queued calls. ``TaskFailed`` of it
(the constructor raised) kills the actor for good: Ray does not restart an
actor whose constructor raised (ray-project/ray#14211), only one whose process
died. ``TaskUnschedulable`` of it kills it too: with ``ACTOR_UNSCHEDULABLE``
for a hard affinity to a dead node, with ``ACTOR_DIED`` naming the argument's
failure when a constructor argument can never be fetched. Every death for good
also emits ``ReportActorDead`` (the task manager then releases the constructor
arguments it kept for restarts).

Calls arrive as ``ActorTaskReady`` (the router's form of ``SubmitActorTask``).
Each actor keeps one min-heap per caller keyed by ``caller_seq`` and serves
callers round-robin, so calls from one caller start in submission order (Ray's
rule for synchronous single-threaded actors) and, with ``max_concurrency = 1``,
never overlap. Threaded and async actors use the same queues (Ray promises
them no order; this order is deterministic) with up to ``max_concurrency``
calls in flight. A retried attempt may run after later calls of its caller:
Ray makes no order promise across retries either. The queues only order what
has arrived: the task manager submits a caller's calls in ``caller_seq``
order once their arguments exist (as Ray's submitter does), this machine
does not wait for a call that has not arrived.

An incarnation ends when its worker dies (``WorkerDied``), its node dies
(``NodeDied``, or ``NodeJoined`` of a newer incarnation of that node), it is
killed (``ActorKillRequested``: ``KillWorker``, then restart only if
``no_restart`` is false), or its owner dies (``OwnerDied``, non-detached
actors only, never restarted). That also holds while it is being created: a
lost creation attempt consumes a restart like a lost process. With restarts
left the actor goes ``RESTARTING``: calls in flight are aborted with
``actor_restarting=True`` (the task manager resubmits them if their retry
budget allows), queued calls wait for the next incarnation, and the creation
task is placed again. Otherwise it goes ``DEAD``: every call in flight or
queued, and every later call, is aborted with ``actor_restarting=False`` and
the death cause (``ACTOR_DIED``), and its name is released.

An intentional exit (``ActorKillRequested`` with ``exit_call``: the actor's
own code called ``exit_actor()``, as ``__ray_terminate__`` does) is never
restarted. The call that asked is aborted at once with the death cause (its
caller sees the actor's death, not a value), queued calls are aborted, and
so is every later call; calls still running on a threaded or async actor
finish (the actor is *exiting*: ``ALIVE``, dispatching nothing). When none
is left the worker is killed and the actor goes ``DEAD`` with the cause
``intended_exit``. A death while exiting is not restarted either.

Duplicate names: the driver checks ``lookup`` before creating a named actor
and raises ``ValueError`` to the user, as Ray does. A duplicate that still
reaches this machine (two drivers racing for one name) is not a bug of this
machine: the later actor is registered and immediately ``DEAD`` with an
``ACTOR_DIED`` failure naming the holder, and a ``Warn`` goes out.

Late and repeated events (a creation attempt of an earlier incarnation, a
result from a retired worker, the death of a worker that no longer hosts the
actor, a dead node incarnation) are dropped and counted in ``stats``. A
creation attempt that starts after it was superseded is answered with
``KillWorker`` so its worker does not stay reserved for a dead incarnation.
Dead actors are remembered (death cause, name freed) up to
``dead_actors_max``, oldest forgotten first; a call to a forgotten actor is
aborted as to a dead one.
"""

from __future__ import annotations

import collections
import enum
import heapq
from collections.abc import Callable
from typing import Any

from detray.core.commands import (
    AbortActorTask,
    Command,
    KillWorker,
    ReportActorDead,
    ScheduleTask,
    StartTask,
    Warn,
    WithdrawTask,
)
from detray.core.errors import ErrorKind, Failure, InvalidTransition, failure
from detray.core.events import (
    ActorArgumentsReady,
    ActorCreated,
    ActorKillRequested,
    ActorTaskReady,
    Event,
    NodeDied,
    NodeJoined,
    OwnerDied,
    TaskArrived,
    TaskFailed,
    TaskFinished,
    TaskStarted,
    TaskUnschedulable,
    TaskWithdrawn,
    WorkerDied,
)
from detray.core.ids import ActorID, NodeID, TaskID, WorkerID
from detray.core.specs import INFINITE, ActorSpec, TaskKind, TaskSpec

STORY_LINES_MAX = 20_000
DEAD_ACTORS_MAX = 10_000
RETIRED_WORKERS_MAX = 10_000


class ActorState(enum.Enum):
    PENDING_CREATION = "pending_creation"
    ALIVE = "alive"
    RESTARTING = "restarting"
    DEAD = "dead"


_P = ActorState.PENDING_CREATION
_A = ActorState.ALIVE
_R = ActorState.RESTARTING
_D = ActorState.DEAD

TRANSITIONS: dict[tuple[ActorState, ActorState], str] = {
    (_P, _A): "creation task finished",
    (_P, _R): "creation attempt lost (worker or node died, killed with restart), restarts left",
    (_P, _D): "constructor raised, unschedulable, name taken, owner died, killed, or lost without restarts",
    (_A, _R): "worker or node died, or killed with no_restart=False, restarts left",
    (_A, _D): "worker or node died without restarts left, killed, exited intentionally (exit_actor), or owner died",
    (_R, _A): "creation task finished",
    (_R, _R): "re-creation attempt lost, restarts left",
    (_R, _D): "constructor raised, unschedulable, owner died, killed, or lost without restarts",
}

_UNSCHEDULABLE_KINDS = frozenset({ErrorKind.TASK_UNSCHEDULABLE, ErrorKind.ACTOR_UNSCHEDULABLE})
"""A creation's ``TaskUnschedulable`` of these kinds is about its placement (the policy
reports a creation task as ``ACTOR_UNSCHEDULABLE``); any other names an argument's failure."""

_QueueEntry = tuple[int, int, TaskID, int]
"""(caller_seq, arrival number, task, attempt): heap order is submission order."""


def _abort(
    e: Event, task: TaskID, attempt: int, actor: ActorID, cause: Failure, restarting: bool = False
) -> AbortActorTask:
    """The command failing call ``(task, attempt)`` of ``actor`` with ``cause``."""
    return AbortActorTask(
        stimulus_id=e.stimulus_id,
        task=task,
        attempt=attempt,
        actor=actor,
        actor_restarting=restarting,
        failure=cause,
    )


class _Actor:
    """One actor's record. Mutated only by ``ActorManager``."""

    __slots__ = (
        "spec",
        "origin",
        "state",
        "restarts",
        "args_ready",
        "creation_attempt",
        "creation_open",
        "creation_started",
        "node",
        "worker",
        "queues",
        "rotation",
        "queued",
        "in_flight",
        "death_cause",
        "exiting",
    )

    def __init__(self, spec: ActorSpec, origin: NodeID) -> None:
        self.spec = spec
        self.origin = origin
        """The creator's node: where the creation task is placed while it lives."""
        self.state = ActorState.PENDING_CREATION
        self.restarts = 0
        self.args_ready = False
        self.creation_attempt = 0
        """Attempt number of the latest placement of the creation task (0: none yet)."""
        self.creation_open = False
        """A creation attempt is outstanding (placed, neither finished nor lost)."""
        self.creation_started = False
        """The outstanding creation attempt runs on ``worker``."""
        self.node: NodeID | None = None
        """Where the outstanding creation attempt is, or the node the actor lives on."""
        self.worker: WorkerID | None = None
        """The worker running the constructor, or hosting the live actor."""
        self.queues: dict[WorkerID, list[_QueueEntry]] = {}
        """Per caller: a min-heap of queued calls (entries not in ``queued`` are stale)."""
        self.rotation: dict[WorkerID, None] = {}
        """Callers with queued calls, in round-robin order (an ordered set)."""
        self.queued: dict[TaskID, tuple[int, TaskSpec]] = {}
        """Queued calls: task -> (attempt, spec)."""
        self.in_flight: dict[TaskID, int] = {}
        """Calls started on the actor: task -> attempt."""
        self.death_cause: Failure | None = None
        self.exiting: Failure | None = None
        """Set while an intentional exit waits for the calls still running: the death cause."""


class ActorManager:
    """Actor lifecycle, call queues and names. One entry point: ``handle``."""

    def __init__(
        self,
        *,
        story_lines_max: int = STORY_LINES_MAX,
        dead_actors_max: int = DEAD_ACTORS_MAX,
        retired_workers_max: int = RETIRED_WORKERS_MAX,
    ) -> None:
        if story_lines_max < 1 or dead_actors_max < 1 or retired_workers_max < 1:
            raise ValueError("story_lines_max, dead_actors_max and retired_workers_max must be >= 1")
        self.stats: collections.Counter[str] = collections.Counter()
        self._dead_actors_max = dead_actors_max
        self._retired_workers_max = retired_workers_max
        self._actors: dict[ActorID, _Actor] = {}
        self._names: dict[tuple[str, str], ActorID] = {}
        """(namespace, name) -> the actor holding it; only actors that are not dead."""
        self._by_creation_task: dict[TaskID, ActorID] = {}
        self._by_task: dict[TaskID, ActorID] = {}
        """Calls queued or in flight -> their actor."""
        self._by_worker: dict[WorkerID, ActorID] = {}
        """Workers running a constructor or hosting a live actor."""
        self._by_node: dict[NodeID, dict[ActorID, None]] = {}
        """Node -> actors whose ``node`` it is."""
        self._by_owner: dict[WorkerID, dict[ActorID, None]] = {}
        """Owner -> its non-detached actors that are not dead."""
        self._awaiting_node: dict[ActorID, None] = {}
        """Actors ready to be placed while no node is alive."""
        self._early_args: dict[ActorID, None] = {}
        """``ActorArgumentsReady`` that overtook its ``ActorCreated``."""
        self._dead: collections.deque[ActorID] = collections.deque()
        self._retired_workers: collections.OrderedDict[WorkerID, ActorID] = collections.OrderedDict()
        """Former actor workers (bounded, oldest first), to tell stale events apart."""
        self._live_nodes: dict[NodeID, int] = {}
        self._dead_nodes: dict[NodeID, int] = {}
        """Node -> its highest incarnation declared dead (while not live again)."""
        self._arrivals = 0
        self._log: collections.deque[tuple[str, float, str, str]] = collections.deque(
            maxlen=story_lines_max
        )
        self._handlers: dict[type[Event], Callable[[Any], list[Command]]] = {
            ActorCreated: self._on_actor_created,
            ActorArgumentsReady: self._on_arguments_ready,
            ActorTaskReady: self._on_task_ready,
            TaskArrived: self._on_task_arrived,
            TaskStarted: self._on_task_started,
            TaskFinished: self._on_task_finished,
            TaskFailed: self._on_task_failed,
            TaskWithdrawn: self._on_task_withdrawn,
            TaskUnschedulable: self._on_task_unschedulable,
            WorkerDied: self._on_worker_died,
            NodeJoined: self._on_node_joined,
            NodeDied: self._on_node_died,
            ActorKillRequested: self._on_kill_requested,
            OwnerDied: self._on_owner_died,
        }

    # --- the entry point ---------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        """Apply one event; return the commands it causes (same events, same commands)."""
        handler = self._handlers.get(event.__class__)
        if handler is None:
            raise TypeError(f"ActorManager does not handle {type(event).__name__}")
        return handler(event)

    # --- queries -----------------------------------------------------------------------

    def state(self, actor: ActorID) -> ActorState | None:
        """The actor's state, or None if it is unknown (or dead and forgotten)."""
        a = self._actors.get(actor)
        return None if a is None else a.state

    def node_of(self, actor: ActorID) -> NodeID | None:
        """The node of the worker hosting the actor (or running its constructor)."""
        a = self._actors.get(actor)
        return None if a is None or a.worker is None else a.node

    def worker_of(self, actor: ActorID) -> WorkerID | None:
        a = self._actors.get(actor)
        return None if a is None else a.worker

    def restarts(self, actor: ActorID) -> int:
        """Restarts consumed so far (0 for an unknown actor)."""
        a = self._actors.get(actor)
        return 0 if a is None else a.restarts

    def lookup(self, name: str, namespace: str = "") -> ActorID | None:
        """The actor that is not dead holding ``name`` in ``namespace`` (for
        ``get_actor`` and ``get_if_exists``), or None."""
        return self._names.get((namespace, name))

    def death_cause(self, actor: ActorID) -> Failure | None:
        a = self._actors.get(actor)
        return None if a is None else a.death_cause

    def spec_of(self, actor: ActorID) -> ActorSpec | None:
        a = self._actors.get(actor)
        return None if a is None else a.spec

    def actor_ids(self) -> tuple[ActorID, ...]:
        """Known actors, in registration order."""
        return tuple(self._actors)

    def queued_calls(self, actor: ActorID) -> tuple[tuple[TaskID, int], ...]:
        """Queued (task, attempt) pairs, in arrival order."""
        a = self._actors.get(actor)
        return () if a is None else tuple((t, q[0]) for t, q in a.queued.items())

    def running_calls(self, actor: ActorID) -> tuple[tuple[TaskID, int], ...]:
        """(task, attempt) pairs started on the actor and not yet finished."""
        a = self._actors.get(actor)
        return () if a is None else tuple(a.in_flight.items())

    def story(self, key: str) -> list[str]:
        """Recent history of an actor, task or node id (bounded, oldest first)."""
        return [f"{now:.6f} [{stim}] {text}" for k, now, stim, text in self._log if k == key]

    # --- actor registration and placement ------------------------------------------------

    def _on_actor_created(self, e: ActorCreated) -> list[Command]:
        spec = e.spec
        _validate(spec)
        actor = spec.actor_id
        if actor in self._actors:
            self.stats["duplicate_actor_created"] += 1
            return []
        a = _Actor(spec, e.node)
        self._actors[actor] = a
        self._by_creation_task[spec.creation.task_id] = actor
        if not spec.detached:
            self._by_owner.setdefault(spec.creation.owner, {})[actor] = None
        self._note(actor, e, f"registered (created from {e.node}, owner {spec.creation.owner})")
        early_args = actor in self._early_args
        if early_args:
            del self._early_args[actor]
        out: list[Command] = []
        if spec.name is not None:
            key = (spec.namespace, spec.name)
            holder = self._names.get(key)
            if holder is not None:
                self.stats["actor_name_taken"] += 1
                message = (
                    f"the actor name {spec.name!r} is already taken in namespace "
                    f"{spec.namespace!r} by {holder}"
                )
                out.append(
                    Warn(stimulus_id=e.stimulus_id, code="actor_name_taken", message=message, subject=actor)
                )
                cause = failure(
                    ErrorKind.ACTOR_DIED,
                    message,
                    actor=actor,
                    cause="name_taken",
                    holder=holder,
                    name=spec.name,
                    namespace=spec.namespace,
                )
                self._die(a, cause, "name taken", e, out)
                return out
            self._names[key] = actor
        if early_args:
            a.args_ready = True
            self._place(a, e, out)
        return out

    def _on_arguments_ready(self, e: ActorArgumentsReady) -> list[Command]:
        actor = e.spec.actor_id
        a = self._actors.get(actor)
        if a is None:
            # The task manager's CreateActor overtook ActorCreated: keep it for then.
            self.stats["early_arguments_ready"] += 1
            self._early_args[actor] = None
            return []
        if a.state is ActorState.DEAD:
            self.stats["arguments_ready_dead_actor"] += 1
            return []
        if a.args_ready:
            self.stats["duplicate_arguments_ready"] += 1
            return []
        a.args_ready = True
        out: list[Command] = []
        self._place(a, e, out)
        return out

    def _place(self, a: _Actor, e: Event, out: list[Command]) -> None:
        """Send the creation task of a new incarnation to a node's scheduler."""
        actor = a.spec.actor_id
        node = self._placement_node(a)
        if node is None:
            self._awaiting_node[actor] = None
            self._note(actor, e, "no live node: creation waits for a node to join")
            return
        a.creation_attempt = a.restarts + 1
        a.creation_open = True
        a.creation_started = False
        self._move(a, node)
        out.append(
            ScheduleTask(
                stimulus_id=e.stimulus_id, spec=a.spec.creation, attempt=a.creation_attempt, node=node
            )
        )
        self._note(actor, e, f"creation attempt {a.creation_attempt} scheduled at {node}")

    def _placement_node(self, a: _Actor) -> NodeID | None:
        if a.origin in self._live_nodes or a.origin not in self._dead_nodes:
            return a.origin
        if self._live_nodes:
            return min(self._live_nodes)
        return None

    # --- the creation task -----------------------------------------------------------------

    def _current_creation(self, task: TaskID, attempt: int) -> _Actor | None:
        """The actor whose outstanding creation attempt is ``(task, attempt)``."""
        actor = self._by_creation_task.get(task)
        if actor is None:
            return None
        a = self._actors[actor]
        if not a.creation_open or attempt != a.creation_attempt:
            return None
        return a

    def _on_task_arrived(self, e: TaskArrived) -> list[Command]:
        if e.spec.kind is not TaskKind.ACTOR_CREATION:
            return []
        a = self._current_creation(e.spec.task_id, e.attempt)
        if a is None or a.creation_started:
            self.stats["stale_creation_arrived"] += 1
            return []
        if not self._node_usable(e.node):
            # Forwarded to a node that died meanwhile: the attempt is lost with it.
            self.stats["creation_arrived_at_dead_node"] += 1
            out: list[Command] = []
            cause = failure(
                ErrorKind.ACTOR_DIED,
                f"the actor's creation was sent to {e.node}, which died",
                actor=a.spec.actor_id,
                cause="node_died",
                node=e.node,
            )
            self._end_incarnation(a, cause, e, out, restartable=True, kill_worker=False)
            return out
        if a.node != e.node:
            self._move(a, e.node)
            self._note(a.spec.actor_id, e, f"creation attempt {e.attempt} forwarded to {e.node}")
        return []

    def _on_task_started(self, e: TaskStarted) -> list[Command]:
        if e.task not in self._by_creation_task:
            return []  # a call or a normal task: nothing to decide
        a = self._current_creation(e.task, e.attempt)
        if a is None or a.creation_started or not self._node_usable(e.node):
            return self._stale_creation_start(e)
        self._adopt_worker(a, e.worker, e.node)
        self._note(a.spec.actor_id, e, f"constructor attempt {e.attempt} started on {e.worker}")
        return []

    def _stale_creation_start(self, e: TaskStarted) -> list[Command]:
        """A superseded creation attempt started: free its worker, unless it hosts an actor."""
        self.stats["stale_creation_started"] += 1
        key = self._by_creation_task[e.task]
        self._note(key, e, f"stale creation attempt {e.attempt} started on {e.worker}")
        if e.worker in self._by_worker or e.worker in self._retired_workers or not self._node_usable(e.node):
            return []
        self._retire_worker(e.worker, key)
        return [KillWorker(stimulus_id=e.stimulus_id, worker=e.worker, node=e.node)]

    def _adopt_worker(self, a: _Actor, worker: WorkerID, node: NodeID) -> None:
        a.creation_started = True
        a.worker = worker
        self._by_worker[worker] = a.spec.actor_id
        if a.node != node:
            self._move(a, node)

    def _creation_finished(self, actor: ActorID, e: TaskFinished) -> list[Command]:
        a = self._current_creation(e.task, e.attempt)
        if a is None or not self._creation_report_matches(a, e.worker, e.node):
            self.stats["stale_creation_finished"] += 1
            self._note(actor, e, f"stale creation attempt {e.attempt} finished on {e.worker}")
            return []
        if not a.creation_started:
            self._adopt_worker(a, e.worker, e.node)
        a.creation_open = False
        a.creation_started = False
        self._set_state(a, ActorState.ALIVE, e)
        self._note(actor, e, f"alive on {e.worker} at {e.node}")
        out: list[Command] = []
        self._dispatch(a, e, out)
        return out

    def _creation_failed(self, actor: ActorID, e: TaskFailed) -> list[Command]:
        a = self._current_creation(e.task, e.attempt)
        if a is None or not self._creation_report_matches(a, e.worker, e.node):
            self.stats["stale_creation_failed"] += 1
            self._note(actor, e, f"stale creation attempt {e.attempt} failed on {e.worker}")
            return []
        if not a.creation_started:
            self._adopt_worker(a, e.worker, e.node)
        error_type = e.error_types[0] if e.error_types else "unknown"
        cause = failure(
            ErrorKind.ACTOR_DIED,
            f"the actor's constructor raised {error_type}",
            actor=actor,
            cause="constructor_error",
            error_type=error_type,
            cancelled=e.cancelled,
        )
        out: list[Command] = []
        # Ray does not restart an actor whose constructor raised; its process exits.
        self._end_incarnation(a, cause, e, out, restartable=False, kill_worker=True)
        return out

    def _creation_report_matches(self, a: _Actor, worker: WorkerID, node: NodeID) -> bool:
        if a.creation_started:
            return worker == a.worker
        return worker not in self._by_worker and self._node_usable(node)

    def _on_task_unschedulable(self, e: TaskUnschedulable) -> list[Command]:
        actor = self._by_creation_task.get(e.task)
        if actor is None:
            return []
        a = self._current_creation(e.task, e.attempt)
        if a is None or a.creation_started:
            self.stats["stale_creation_unschedulable"] += 1
            return []
        if e.failure.kind in _UNSCHEDULABLE_KINDS:
            cause = failure(
                ErrorKind.ACTOR_UNSCHEDULABLE,
                f"the actor cannot be scheduled: {e.failure.message}",
                actor=actor,
                cause="unschedulable",
            )
        else:
            # A constructor argument can never be obtained (its task failed, it was lost).
            cause = failure(
                ErrorKind.ACTOR_DIED,
                f"a constructor argument failed: {e.failure.message}",
                actor=actor,
                argument_error=e.failure.kind.value,
                cause="argument_failed",
            )
        a.creation_open = False  # its scheduler dropped it: nothing to withdraw
        out: list[Command] = []
        self._end_incarnation(a, cause, e, out, restartable=False, kill_worker=False)
        return out

    # --- calls -------------------------------------------------------------------------------

    def _on_task_ready(self, e: ActorTaskReady) -> list[Command]:
        spec = e.spec
        actor = spec.actor_id
        if actor is None:
            raise ValueError(f"ActorTaskReady for {spec.task_id}, which names no actor")
        task = spec.task_id
        a = self._actors.get(actor)
        if a is None or a.state is ActorState.DEAD:
            return [self._abort_dead(actor, a, task, e)]
        if a.exiting is not None:
            return self._call_while_exiting(a, e)
        queued = a.queued.get(task)
        running = a.in_flight.get(task)
        if (queued is not None and queued[0] >= e.attempt) or (running is not None and running >= e.attempt):
            self.stats["stale_actor_task"] += 1
            return []
        if running is not None:
            # A newer attempt proves the older one ended (its report is late).
            self.stats["superseded_in_flight"] += 1
            del a.in_flight[task]
        if queued is not None:
            self.stats["superseded_queued"] += 1
        a.queued[task] = (e.attempt, spec)
        self._by_task[task] = actor
        self._note(task, e, f"attempt {e.attempt} queued at {actor} ({a.state.name})")
        caller = spec.owner
        heap = a.queues.get(caller)
        if heap is None:
            heap = a.queues[caller] = []
        self._arrivals += 1
        heapq.heappush(heap, (spec.caller_seq, self._arrivals, task, e.attempt))
        if caller not in a.rotation:
            a.rotation[caller] = None
        if a.state is not ActorState.ALIVE:
            return []
        out: list[Command] = []
        self._dispatch(a, e, out)
        return out

    def _abort_dead(self, actor: ActorID, a: _Actor | None, task: TaskID, e: ActorTaskReady) -> Command:
        if a is None:
            self.stats["task_for_unknown_actor"] += 1
            message = "the actor is unknown (dead and forgotten)"
            cause = failure(ErrorKind.ACTOR_DIED, message, actor=actor, cause="unknown")
        else:
            self.stats["task_for_dead_actor"] += 1
            assert a.death_cause is not None, f"dead actor {actor} has no death cause"
            cause = a.death_cause
        return _abort(e, task, e.attempt, actor, cause)

    def _call_while_exiting(self, a: _Actor, e: ActorTaskReady) -> list[Command]:
        """A call (or a newer attempt of a running one) for an actor that is exiting fails."""
        task = e.spec.task_id
        running = a.in_flight.get(task)
        if running is not None and running >= e.attempt:
            self.stats["stale_actor_task"] += 1
            return []
        assert a.exiting is not None
        self.stats["task_for_exiting_actor"] += 1
        self._note(task, e, f"attempt {e.attempt} aborted: actor exiting")
        out: list[Command] = [_abort(e, task, e.attempt, a.spec.actor_id, a.exiting)]
        if running is not None:
            # A newer attempt proves the older one ended (its report is late).
            self.stats["superseded_in_flight"] += 1
            del a.in_flight[task]
            del self._by_task[task]
            self._exit_if_drained(a, e, out)
        return out

    def _dispatch(self, a: _Actor, e: Event, out: list[Command]) -> None:
        """Start queued calls while the actor has room (caller order, round-robin)."""
        assert a.state is ActorState.ALIVE and a.worker is not None and a.node is not None
        in_flight = a.in_flight
        queued = a.queued
        rotation = a.rotation
        cap = a.spec.max_concurrency
        while len(in_flight) < cap and rotation:
            caller = next(iter(rotation))
            heap = a.queues[caller]
            task: TaskID | None = None
            attempt = 0
            while heap:
                _, _, candidate, candidate_attempt = heapq.heappop(heap)
                current = queued.get(candidate)
                if current is not None and current[0] == candidate_attempt:
                    task, attempt = candidate, candidate_attempt
                    break
            del rotation[caller]
            if heap:
                rotation[caller] = None
            else:
                del a.queues[caller]
            if task is None:
                continue
            spec = queued.pop(task)[1]
            in_flight[task] = attempt
            self._note(task, e, f"attempt {attempt} started on {a.worker}")
            out.append(
                StartTask(stimulus_id=e.stimulus_id, spec=spec, attempt=attempt, node=a.node, worker=a.worker)
            )

    def _call_ended(self, actor: ActorID, e: TaskFinished | TaskFailed, stale_key: str) -> list[Command]:
        a = self._actors[actor]
        if a.in_flight.get(e.task) != e.attempt or e.worker != a.worker:
            self.stats[stale_key] += 1
            return []
        del a.in_flight[e.task]
        if e.task not in a.queued:
            del self._by_task[e.task]
        self._note(e.task, e, f"attempt {e.attempt} ended ({type(e).__name__})")
        out: list[Command] = []
        if a.exiting is None:
            self._dispatch(a, e, out)
        else:
            self._exit_if_drained(a, e, out)
        return out

    def _on_task_finished(self, e: TaskFinished) -> list[Command]:
        actor = self._by_task.get(e.task)
        if actor is not None:
            return self._call_ended(actor, e, "stale_task_finished")
        actor = self._by_creation_task.get(e.task)
        if actor is not None:
            return self._creation_finished(actor, e)
        self._count_unknown(e.worker, "stale_task_finished", "ignored_task_finished")
        return []

    def _on_task_failed(self, e: TaskFailed) -> list[Command]:
        actor = self._by_task.get(e.task)
        if actor is not None:
            return self._call_ended(actor, e, "stale_task_failed")
        actor = self._by_creation_task.get(e.task)
        if actor is not None:
            return self._creation_failed(actor, e)
        self._count_unknown(e.worker, "stale_task_failed", "ignored_task_failed")
        return []

    def _count_unknown(self, worker: WorkerID, stale_key: str, ignored_key: str) -> None:
        """A report of a task this machine does not track: late (from an actor's worker) or not ours."""
        if worker in self._by_worker or worker in self._retired_workers:
            self.stats[stale_key] += 1
        else:
            self.stats[ignored_key] += 1

    def _on_task_withdrawn(self, e: TaskWithdrawn) -> list[Command]:
        actor = self._by_task.get(e.task)
        if actor is None:
            self.stats["ignored_task_withdrawn"] += 1
            return []
        a = self._actors[actor]
        queued = a.queued.get(e.task)
        if queued is None or queued[0] != e.attempt:
            # Running calls are interrupted by the task manager; their result still comes.
            self.stats["stale_task_withdrawn"] += 1
            return []
        del a.queued[e.task]  # its heap entry is now stale and skipped by _dispatch
        if e.task not in a.in_flight:
            del self._by_task[e.task]
        self._note(e.task, e, f"attempt {e.attempt} withdrawn from {actor}'s queue")
        return []

    # --- deaths ------------------------------------------------------------------------------

    def _on_worker_died(self, e: WorkerDied) -> list[Command]:
        actor = self._by_worker.get(e.worker)
        if actor is None:
            if e.worker in self._retired_workers:
                self.stats["stale_worker_died"] += 1
            else:
                self.stats["ignored_worker_died"] += 1
            return []
        a = self._actors[actor]
        cause = failure(
            ErrorKind.ACTOR_DIED,
            f"the actor's worker {e.worker} died",
            actor=actor,
            cause="worker_died",
            node=e.node,
            worker=e.worker,
        )
        out: list[Command] = []
        self._end_incarnation(a, cause, e, out, restartable=True, kill_worker=False)
        return out

    def _on_node_joined(self, e: NodeJoined) -> list[Command]:
        out: list[Command] = []
        live = self._live_nodes.get(e.node)
        if live is not None:
            if e.incarnation <= live:
                self.stats["stale_node_joined"] += 1
                return []
            # A newer incarnation proves the one we knew is gone.
            del self._live_nodes[e.node]
            self._node_lost(e.node, live, e, out)
        else:
            dead = self._dead_nodes.get(e.node)
            if dead is not None and e.incarnation <= dead:
                self.stats["stale_node_joined"] += 1
                return []
        self._dead_nodes.pop(e.node, None)
        self._live_nodes[e.node] = e.incarnation
        self._note(e.node, e, f"joined (incarnation {e.incarnation})")
        for actor in list(self._awaiting_node):
            del self._awaiting_node[actor]
            self._place(self._actors[actor], e, out)
        return out

    def _on_node_died(self, e: NodeDied) -> list[Command]:
        live = self._live_nodes.get(e.node)
        if live is not None:
            if e.incarnation < live:
                self.stats["stale_node_died"] += 1
                return []
            del self._live_nodes[e.node]
        else:
            dead = self._dead_nodes.get(e.node)
            if dead is not None and e.incarnation <= dead:
                self.stats["stale_node_died"] += 1
                return []
        self._dead_nodes[e.node] = e.incarnation
        out: list[Command] = []
        self._node_lost(e.node, e.incarnation, e, out)
        return out

    def _node_lost(self, node: NodeID, incarnation: int, e: Event, out: list[Command]) -> None:
        self._note(node, e, f"incarnation {incarnation} lost")
        for actor in list(self._by_node.get(node, ())):
            a = self._actors[actor]
            cause = failure(
                ErrorKind.ACTOR_DIED,
                f"the actor's node {node} died",
                actor=actor,
                cause="node_died",
                incarnation=incarnation,
                node=node,
            )
            self._end_incarnation(a, cause, e, out, restartable=True, kill_worker=False)

    def _on_kill_requested(self, e: ActorKillRequested) -> list[Command]:
        if e.exit_call is not None:
            return self._on_exit_requested(e, e.exit_call)
        a = self._actors.get(e.actor)
        if a is None or a.state is ActorState.DEAD:
            self.stats["kill_ignored"] += 1
            return []
        cause = failure(
            ErrorKind.ACTOR_DIED,
            "the actor was killed by ray.kill",
            actor=e.actor,
            cause="killed",
            no_restart=e.no_restart,
        )
        out: list[Command] = []
        self._end_incarnation(a, cause, e, out, restartable=not e.no_restart, kill_worker=True)
        return out

    def _on_exit_requested(self, e: ActorKillRequested, task: TaskID) -> list[Command]:
        """The actor's own call ``(task, exit_attempt)`` on ``e.worker`` called ``exit_actor()``."""
        a = self._actors.get(e.actor)
        if (
            a is None
            or a.state is not ActorState.ALIVE
            or a.worker != e.worker
            or a.in_flight.get(task) != e.exit_attempt
        ):
            self.stats["stale_exit_requested"] += 1
            return []
        actor = a.spec.actor_id
        out: list[Command] = []
        cause = a.exiting
        if cause is None:
            cause = failure(
                ErrorKind.ACTOR_DIED,
                "the actor exited intentionally: its code called exit_actor()",
                actor=actor,
                cause="intended_exit",
                node=a.node,
                worker=a.worker,
            )
            a.exiting = cause
            self.stats["intended_exits"] += 1
            self._note(actor, e, f"exiting intentionally (exit_actor() in {task} attempt {e.exit_attempt})")
        # The call that asked sees the actor's death rather than a value (Ray's rule).
        del a.in_flight[task]
        if task not in a.queued:
            del self._by_task[task]
        self._note(task, e, f"attempt {e.exit_attempt} called exit_actor(): aborted")
        out.append(_abort(e, task, e.exit_attempt, actor, cause))
        self._abort_queued(a, cause, e, out)
        self._exit_if_drained(a, e, out)
        return out

    def _exit_if_drained(self, a: _Actor, e: Event, out: list[Command]) -> None:
        """An exiting actor with no call left running ends: its worker is killed, it is dead."""
        cause = a.exiting
        if cause is not None and not a.in_flight:
            self._end_incarnation(a, cause, e, out, restartable=False, kill_worker=True)

    def _on_owner_died(self, e: OwnerDied) -> list[Command]:
        owned = self._by_owner.get(e.owner)
        if owned is None:
            self.stats["ignored_owner_died"] += 1
            return []
        out: list[Command] = []
        for actor in list(owned):
            cause = failure(
                ErrorKind.ACTOR_DIED,
                f"the actor's owner {e.owner} died",
                actor=actor,
                cause="owner_died",
                owner=e.owner,
            )
            self._end_incarnation(self._actors[actor], cause, e, out, restartable=False, kill_worker=True)
        return out

    def _end_incarnation(
        self,
        a: _Actor,
        cause: Failure,
        e: Event,
        out: list[Command],
        *,
        restartable: bool,
        kill_worker: bool,
    ) -> None:
        """The current incarnation (created or being created) is gone: restart or die."""
        if a.exiting is not None:
            restartable = False  # it was exiting intentionally: whatever ends it, it stays dead
            a.exiting = None
        self._release_placement(a, e, out, kill_worker=kill_worker)
        budget = a.spec.max_restarts
        if restartable and (budget == INFINITE or a.restarts < budget):
            a.restarts += 1
            self.stats["restarts"] += 1
            self._set_state(a, ActorState.RESTARTING, e)
            self._note(a.spec.actor_id, e, f"restart {a.restarts}: {cause.message}")
            self._abort_running(a, cause, e, out, restarting=True)
            if a.args_ready:
                self._place(a, e, out)
            return
        if restartable:
            self.stats["restarts_exhausted"] += 1
        self._die(a, cause, cause.detail("cause") or "died", e, out)

    def _release_placement(self, a: _Actor, e: Event, out: list[Command], *, kill_worker: bool) -> None:
        """Detach the actor from its worker, node and outstanding creation attempt."""
        actor = a.spec.actor_id
        worker = a.worker
        if worker is not None:
            assert a.node is not None, f"{actor} has worker {worker} but no node"
            del self._by_worker[worker]
            self._retire_worker(worker, actor)
            if kill_worker:
                out.append(KillWorker(stimulus_id=e.stimulus_id, worker=worker, node=a.node))
            a.worker = None
        elif a.creation_open and a.node is not None and a.node in self._live_nodes:
            # Not started yet: ask its scheduler to forget it (a late start is killed).
            out.append(
                WithdrawTask(
                    stimulus_id=e.stimulus_id,
                    task=a.spec.creation.task_id,
                    attempt=a.creation_attempt,
                    node=a.node,
                )
            )
        if a.node is not None:
            self._unindex_node(a)
            a.node = None
        a.creation_open = False
        a.creation_started = False
        self._awaiting_node.pop(actor, None)

    def _abort_running(
        self, a: _Actor, cause: Failure, e: Event, out: list[Command], *, restarting: bool
    ) -> None:
        actor = a.spec.actor_id
        for task, attempt in a.in_flight.items():
            self._note(task, e, f"attempt {attempt} aborted (actor_restarting={restarting})")
            out.append(_abort(e, task, attempt, actor, cause, restarting))
            if task not in a.queued:
                del self._by_task[task]
        a.in_flight.clear()

    def _die(self, a: _Actor, cause: Failure, label: str, e: Event, out: list[Command]) -> None:
        actor = a.spec.actor_id
        self._set_state(a, ActorState.DEAD, e)
        a.death_cause = cause
        self._note(actor, e, f"dead ({label}): {cause.message}")
        self._abort_running(a, cause, e, out, restarting=False)
        self._abort_queued(a, cause, e, out)
        spec = a.spec
        if spec.name is not None and self._names.get((spec.namespace, spec.name)) == actor:
            del self._names[(spec.namespace, spec.name)]
        owned = self._by_owner.get(spec.creation.owner)
        if owned is not None and actor in owned:
            del owned[actor]
            if not owned:
                del self._by_owner[spec.creation.owner]
        out.append(ReportActorDead(stimulus_id=e.stimulus_id, actor=actor, failure=cause))
        self._dead.append(actor)
        if len(self._dead) > self._dead_actors_max:
            self._forget(self._dead.popleft())

    def _abort_queued(self, a: _Actor, cause: Failure, e: Event, out: list[Command]) -> None:
        """Every queued call fails with ``cause`` (in each caller's submission order)."""
        actor = a.spec.actor_id
        for caller in a.queues:
            # Heap order is this caller's submission order; stale entries are skipped.
            for _, _, task, attempt in sorted(a.queues[caller]):
                current = a.queued.get(task)
                if current is None or current[0] != attempt:
                    continue
                self._note(task, e, f"queued attempt {attempt} aborted: actor dead")
                out.append(_abort(e, task, attempt, actor, cause))
                del a.queued[task]
                del self._by_task[task]
        assert not a.queued, f"{actor}: queued calls missing from the caller heaps: {sorted(a.queued)}"
        a.queues.clear()
        a.rotation.clear()

    def _forget(self, actor: ActorID) -> None:
        a = self._actors.pop(actor)
        assert a.state is ActorState.DEAD, f"forgetting {actor} in state {a.state}"
        del self._by_creation_task[a.spec.creation.task_id]
        self.stats["dead_actors_forgotten"] += 1

    # --- small helpers -------------------------------------------------------------------------

    def _set_state(self, a: _Actor, new: ActorState, e: Event) -> None:
        old = a.state
        if (old, new) not in TRANSITIONS:
            actor = a.spec.actor_id
            raise InvalidTransition(
                f"{actor}: no transition {old.name} -> {new.name} (stimulus {e.stimulus_id})",
                self.story(actor),
            )
        a.state = new

    def _move(self, a: _Actor, node: NodeID) -> None:
        if a.node is not None:
            self._unindex_node(a)
        a.node = node
        self._by_node.setdefault(node, {})[a.spec.actor_id] = None

    def _unindex_node(self, a: _Actor) -> None:
        assert a.node is not None
        on_node = self._by_node[a.node]
        del on_node[a.spec.actor_id]
        if not on_node:
            del self._by_node[a.node]

    def _node_usable(self, node: NodeID) -> bool:
        """Live, or never heard of (it may not have joined our view yet); not known dead."""
        return node in self._live_nodes or node not in self._dead_nodes

    def _retire_worker(self, worker: WorkerID, actor: ActorID) -> None:
        self._retired_workers[worker] = actor
        if len(self._retired_workers) > self._retired_workers_max:
            self._retired_workers.popitem(last=False)

    def _note(self, key: str, e: Event, text: str) -> None:
        self._log.append((key, e.now, e.stimulus_id, text))

    # --- invariants ------------------------------------------------------------------------------

    def check_invariants(self) -> None:
        """Cross-check every index against the actor records; AssertionError names the break."""
        for actor, a in self._actors.items():
            self._check_actor(actor, a)
        self._check_indexes()

    def _check_actor(self, actor: ActorID, a: _Actor) -> None:
        spec = a.spec
        assert spec.actor_id == actor, f"{actor}: record holds spec of {spec.actor_id}"
        assert isinstance(a.state, ActorState), f"{actor}: state {a.state!r} is not an ActorState"
        assert a.restarts >= 0, f"{actor}: negative restarts {a.restarts}"
        if spec.max_restarts != INFINITE:
            assert a.restarts <= spec.max_restarts, (
                f"{actor}: {a.restarts} restarts > max {spec.max_restarts}"
            )
        assert len(a.in_flight) <= spec.max_concurrency, (
            f"{actor}: {len(a.in_flight)} calls in flight > max_concurrency {spec.max_concurrency}"
        )
        assert not a.in_flight or a.state is ActorState.ALIVE, (
            f"{actor}: calls in flight while {a.state.name}"
        )
        if a.exiting is not None:
            assert a.state is ActorState.ALIVE and a.in_flight, (
                f"{actor}: exiting while {a.state.name} with {len(a.in_flight)} calls running"
            )
            assert not a.queued and not a.queues and not a.rotation, f"{actor}: exiting with queued calls"
        assert self._by_creation_task.get(spec.creation.task_id) == actor, (
            f"{actor}: creation task not indexed"
        )
        if a.state is ActorState.DEAD:
            assert a.death_cause is not None, f"{actor}: dead without a cause"
            assert a.worker is None and a.node is None, f"{actor}: dead but placed ({a.worker}, {a.node})"
            assert not a.queued and not a.queues and not a.rotation, f"{actor}: dead with queued calls"
            assert not a.creation_open, f"{actor}: dead with an open creation attempt"
            assert actor not in self._awaiting_node, f"{actor}: dead but awaiting a node"
            return
        assert a.death_cause is None, f"{actor}: {a.state.name} with a death cause"
        if a.state is ActorState.ALIVE:
            assert a.worker is not None and a.node is not None, f"{actor}: alive without worker or node"
            assert not a.creation_open, f"{actor}: alive with an open creation attempt"
            assert self._node_usable(a.node), f"{actor}: alive on dead node {a.node}"
        else:
            assert not a.in_flight, f"{actor}: {a.state.name} with calls in flight"
            assert a.creation_open == (a.node is not None), (
                f"{actor}: {a.state.name}, creation_open={a.creation_open} but node={a.node}"
            )
            assert a.creation_started == (a.worker is not None), (
                f"{actor}: creation_started={a.creation_started} but worker={a.worker}"
            )
            if a.creation_open:
                assert a.args_ready, f"{actor}: creation placed before its arguments were ready"
                assert a.creation_attempt == a.restarts + 1, (
                    f"{actor}: creation attempt {a.creation_attempt} != 1 + restarts {a.restarts}"
                )
            awaiting = actor in self._awaiting_node
            assert awaiting == (a.args_ready and not a.creation_open), (
                f"{actor}: awaiting_node={awaiting}, args_ready={a.args_ready}, "
                f"creation_open={a.creation_open}"
            )
            assert not awaiting or not self._live_nodes, f"{actor}: awaits a node while nodes are live"
        if a.worker is not None:
            assert self._by_worker.get(a.worker) == actor, f"{actor}: worker {a.worker} not indexed"
        if a.node is not None:
            assert actor in self._by_node.get(a.node, {}), f"{actor}: node {a.node} not indexed"
            assert self._node_usable(a.node), f"{actor}: {a.state.name} on dead node {a.node}"
        in_heaps = {(x[2], x[3]): caller for caller, heap in a.queues.items() for x in heap}
        for task, (attempt, task_spec) in a.queued.items():
            assert self._by_task.get(task) == actor, f"{actor}: queued {task} not indexed"
            assert task_spec.task_id == task and task_spec.actor_id == actor, (
                f"{actor}: queued spec of {task}"
            )
            assert in_heaps.get((task, attempt)) == task_spec.owner, (
                f"{actor}: queued {task}#{attempt} missing from caller {task_spec.owner}'s heap"
            )
        for task in a.in_flight:
            assert self._by_task.get(task) == actor, f"{actor}: running {task} not indexed"
        assert set(a.rotation) == set(a.queues), (
            f"{actor}: rotation {list(a.rotation)} != queues {list(a.queues)}"
        )
        for caller, heap in a.queues.items():
            assert heap, f"{actor}: empty heap kept for caller {caller}"
        if spec.name is not None and self._names.get((spec.namespace, spec.name)) != actor:
            raise AssertionError(f"{actor}: live named actor does not hold its name {spec.name!r}")
        if not spec.detached:
            assert actor in self._by_owner.get(spec.creation.owner, {}), f"{actor}: owner index misses it"

    def _check_indexes(self) -> None:
        for key, actor in self._names.items():
            a = self._actors.get(actor)
            assert a is not None and a.state is not ActorState.DEAD, (
                f"name {key} held by dead/unknown {actor}"
            )
            assert (a.spec.namespace, a.spec.name) == key, f"name {key} maps to {actor} named {a.spec.name!r}"
        for task, actor in self._by_task.items():
            a = self._actors.get(actor)
            assert a is not None and (task in a.queued or task in a.in_flight), (
                f"task index: {task} -> {actor}"
            )
        for worker, actor in self._by_worker.items():
            a = self._actors.get(actor)
            assert a is not None and a.worker == worker, f"worker index: {worker} -> {actor}"
        for node, actors in self._by_node.items():
            assert actors, f"node index keeps empty entry for {node}"
            for actor in actors:
                a = self._actors.get(actor)
                assert a is not None and a.node == node, f"node index: {node} -> {actor}"
        for owner, actors in self._by_owner.items():
            assert actors, f"owner index keeps empty entry for {owner}"
            for actor in actors:
                a = self._actors.get(actor)
                assert a is not None and a.state is not ActorState.DEAD, (
                    f"owner index: {owner} -> dead {actor}"
                )
                assert not a.spec.detached and a.spec.creation.owner == owner, (
                    f"owner index: {owner} -> {actor}"
                )
        for task, actor in self._by_creation_task.items():
            a = self._actors.get(actor)
            assert a is not None and a.spec.creation.task_id == task, f"creation index: {task} -> {actor}"
        for actor in self._awaiting_node:
            assert actor in self._actors, f"awaiting unknown actor {actor}"
        for actor in self._dead:
            a = self._actors.get(actor)
            assert a is not None and a.state is ActorState.DEAD, f"dead list holds {actor}"
        dead_count = sum(1 for a in self._actors.values() if a.state is ActorState.DEAD)
        assert dead_count == len(self._dead), (
            f"{dead_count} dead actors but {len(self._dead)} in the dead list"
        )
        assert len(self._dead) <= self._dead_actors_max, "dead list over its bound"
        assert len(self._retired_workers) <= self._retired_workers_max, "retired workers over their bound"
        for node in self._live_nodes:
            assert node not in self._dead_nodes, f"node {node} both live and dead"


def _validate(spec: ActorSpec) -> None:
    """Refuse a spec the driver should never have built (before any state changes)."""
    if spec.max_concurrency < 1:
        raise ValueError(f"{spec.actor_id}: max_concurrency must be >= 1, got {spec.max_concurrency}")
    if spec.max_restarts < INFINITE:
        raise ValueError(f"{spec.actor_id}: max_restarts must be >= -1, got {spec.max_restarts}")
    if spec.creation.actor_id is not None and spec.creation.actor_id != spec.actor_id:
        raise ValueError(f"{spec.actor_id}: creation task belongs to {spec.creation.actor_id}")
