"""Explaining why a simulation cannot progress: what each waiting unit waits for, and why.

Owns: the text of ``DeadlockError``. Reads the core's queries (task states
and pending reasons, object statuses, scheduler states, pulls in flight) and
the network's partition; changes nothing.
"""

from __future__ import annotations

from typing import Any

from detray.core import ids
from detray.core.directory import ObjectStatus, fetch_waiter_id
from detray.core.ids import ActorID, NodeID, ObjectID, TaskID
from detray.core.resources import as_floats

OBJECTS_SHOWN_MAX = 10
UNITS_SHOWN_MAX = 20
HOLDERS_SHOWN_MAX = 8
_WAITS_FOR_RESOURCES = frozenset({"QUEUED", "WAITING_FOR_WORKER"})


def explain(cluster: Any) -> tuple[str, tuple[str, ...]]:
    """(message, one line per blocked unit) for a run where nothing can happen."""
    lines: list[str] = []
    driver = cluster.driver_exec
    execs = [driver] if driver is not None else []
    for worker in cluster.executor.workers.values():
        execs.extend(ex for ex in worker.execs if not ex.dead and (ex.waiter is not None or _waits_for_lock(ex)))
    for ex in execs[:UNITS_SHOWN_MAX]:
        lines.append(_unit_line(cluster, ex))
    if len(execs) > UNITS_SHOWN_MAX:
        lines.append(f"... and {len(execs) - UNITS_SHOWN_MAX} more blocked units")
    head = (
        f"detray (sim): deadlock at t={cluster.now():.6f} s: no event is pending and user code "
        "is waiting, so nothing can ever happen."
    )
    return "\n".join([head, *lines, *_future_lines(cluster)]), tuple(lines)


def _future_lines(cluster: Any) -> list[str]:
    """Why the objects of ``ObjectRef.future()``s still pending are not ready (a unit that
    waits on such a future waits in a threading Condition, which names no object)."""
    pending = [w for w in cluster.waiters.values() if w.kind == "future" and not w.done]
    lines = [f"a future() waits for {w.objects[0]}: {why_not_ready(cluster, w.objects[0], w.node)}" for w in pending]
    if len(lines) > OBJECTS_SHOWN_MAX:
        lines[OBJECTS_SHOWN_MAX:] = [f"... and {len(lines) - OBJECTS_SHOWN_MAX} more pending futures"]
    return lines


def _unit_line(cluster: Any, ex: Any) -> str:
    who = "the driver" if ex.context.kind == "driver" else f"{ex.unit.label or ex.context.kind}"
    waiter = ex.waiter
    if waiter is None:
        if _waits_for_lock(ex):
            return f"{who} {ex.lock_wait.describe()}"
        return f"{who} is blocked (not on objects)"
    missing = [obj for obj in waiter.objects if not _ready(cluster, obj, waiter.node, waiter.fetch)]
    parts = [f"{who} waits in {waiter.kind}() for {len(waiter.objects)} object(s), {len(missing)} not ready:"]
    for obj in missing[:OBJECTS_SHOWN_MAX]:
        parts.append(f"  {obj}: {why_not_ready(cluster, obj, waiter.node)}")
    if len(missing) > OBJECTS_SHOWN_MAX:
        parts.append(f"  ... and {len(missing) - OBJECTS_SHOWN_MAX} more")
    return "\n".join(parts)


def _waits_for_lock(ex: Any) -> bool:
    wait = ex.lock_wait
    return wait is not None and not wait.done


def _ready(cluster: Any, obj: ObjectID, node: NodeID, fetch: bool) -> bool:
    directory = cluster.router.directory
    status = directory.status(obj)
    if status in (ObjectStatus.FAILED, ObjectStatus.FREED):
        return True
    return status is ObjectStatus.AVAILABLE and (not fetch or node in directory.locations(obj))


def why_not_ready(cluster: Any, obj: ObjectID, node: NodeID) -> str:
    """One line: why ``obj`` is not ready for a waiter on ``node``."""
    router = cluster.router
    directory = router.directory
    status = directory.status(obj)
    if status is ObjectStatus.AVAILABLE:
        pulls = [(dest, src) for dest, src in directory.pulls_in_flight(obj) if dest == node]
        for _dest, src in pulls:
            if not cluster.network.connected(src, node):
                return f"its copy on {src} waits on a partition between {src} and {node}"
        return f"available on {', '.join(directory.locations(obj)) or 'no node'}, not yet copied to {node}"
    if status is ObjectStatus.LOST:
        return "lost: no copy is left and it is not being rebuilt"
    if ids.is_put(obj):
        return f"a put object in state {status.value if status else 'unknown'}"
    task = ids.creating_task(obj)
    return _task_reason(cluster, task, 0)


def _task_reason(cluster: Any, task: TaskID, depth: int) -> str:
    router = cluster.router
    reason = router.tasks.pending_reason(task)
    state = router.tasks.state(task)
    if reason is None:
        return f"its task {task} is {state.value if state else 'unknown'} and will not produce it"
    for node_id, scheduler in router.schedulers.items():
        attempt = router.tasks.attempt(task)
        if attempt is None:
            break
        where = scheduler.state_of(task, attempt)
        if where is None:
            continue
        if where.name == "INFEASIBLE":
            spec_resources = _resources_of(cluster, task)
            return (
                f"its task {task} is infeasible: it needs {spec_resources}, which no live node "
                "can provide (it waits for a node that fits to join)"
            )
        room = router.directory.room_wanted(fetch_waiter_id(task, attempt, node_id))
        if room is not None:
            need, kept, capacity, ahead = room
            return (
                f"its task {task} waits for room in the object store of {node_id}: its arguments "
                f"take {need} bytes, and {kept} of its {capacity} bytes are pinned or on their way "
                f"in for others (arguments of queued and running tasks stay until they end); "
                f"{ahead} fetch(es) ahead in line"
            )
        return f"its task {task}: {reason} ({where.value} at {node_id}){_room(cluster, scheduler, task, attempt, where)}"
    return f"its task {task}: {reason}{_actor_reason(cluster, reason, depth)}"


def _resources_of(cluster: Any, task: TaskID) -> str:
    attempt = cluster.router.tasks.attempt(task)
    for scheduler in cluster.router.schedulers.values():
        placement = scheduler.placement_of(task, attempt) if attempt is not None else None
        if placement is not None:
            return str(as_floats(placement))
    return "more than any node has"


def _actor_reason(cluster: Any, reason: str, depth: int) -> str:
    marker = "queued at actor "
    at = reason.find(marker)
    if at < 0 or depth > 3:
        return ""
    actor = reason[at + len(marker) :].split()[0]
    state = cluster.router.actors.state(actor)
    if state is None:
        return ""
    if state.name == "ALIVE":
        return f"; actor {actor} is alive (busy with earlier calls?)"
    creation = ids.actor_creation_task(ActorID(actor))
    attempt = cluster.router.actors.restarts(actor) + 1
    for node_id, scheduler in cluster.router.schedulers.items():
        where = scheduler.state_of(creation, attempt)
        if where is None:
            continue
        if where.name == "INFEASIBLE":
            rec = scheduler._tasks.get((creation, attempt))  # diagnostics only
            needs = "more than any node has" if rec is None else str(as_floats(rec.spec.placement))
            return f"; actor {actor} is {state.value}: it is infeasible: it needs {needs}, which no live node can provide"
        room = _room(cluster, scheduler, creation, attempt, where)
        return f"; actor {actor} is {state.value}: its creation is {where.value} at {node_id}{room}"
    return f"; actor {actor} is {state.value}"


def _room(cluster: Any, scheduler: Any, task: TaskID, attempt: int, where: Any) -> str:
    """For an attempt that waits for resources at ``scheduler``'s node: what it needs, what
    the node has free, and who holds the rest (empty for an attempt that waits on anything else)."""
    if where.name not in _WAITS_FOR_RESOURCES:
        return ""
    needs = scheduler.placement_of(task, attempt) or {}
    node = scheduler.node
    text = f": it needs {_amounts(needs)}; {node} has {_amounts(scheduler.available())} free of {_amounts(scheduler.total())}"
    holders = _holders(cluster, scheduler, needs)
    if holders:
        shown = "; ".join(holders[:HOLDERS_SHOWN_MAX])
        more = f"; ... and {len(holders) - HOLDERS_SHOWN_MAX} more" if len(holders) > HOLDERS_SHOWN_MAX else ""
        text += f"; held by: {shown}{more}"
    return text


def _holders(cluster: Any, scheduler: Any, needs: dict[str, int]) -> list[str]:
    """One phrase per running task or live actor holding some of what ``needs`` names
    (all their holdings when it names nothing), largest first, then by name."""
    wanted = {name for name, units in needs.items() if units > 0}
    rows: list[tuple[int, str]] = []
    for holder, units in scheduler.holdings().items():
        relevant = {name: amount for name, amount in units.items() if amount > 0 and (not wanted or name in wanted)}
        if not relevant:
            continue  # holds none of it (a blocked task lends its CPUs)
        what = _holder_name(cluster, scheduler, holder)
        rows.append((-sum(relevant.values()), f"{what} holds {_amounts(relevant)}"))
    rows.sort()
    return [text for _size, text in rows]


def _holder_name(cluster: Any, scheduler: Any, holder: str) -> str:
    kind, _, rest = holder.partition(":")
    executor = cluster.executor
    if kind == "actor":
        worker = executor.workers.get(rest)
        instance = None if worker is None else worker.actor
        if instance is None:
            return f"the actor on worker {rest}"
        actor = instance.actor_id
        spec = executor.actor_specs.get(actor)
        state = cluster.router.actors.state(actor)
        named = f" named {spec.name!r}" if spec is not None and spec.name else ""
        detached = ", detached" if spec is not None and spec.detached else ""
        handles = executor.handle_counts.get(actor, 0)
        scope = f", {handles} handle(s) in scope" if handles > 0 else ""
        status = state.value if state is not None else "unknown"
        return f"actor {instance.meta.class_name} {actor}{named} ({status}{detached}{scope})"
    task, _, attempt = rest.rpartition(":")
    worker_id = scheduler.worker_of(TaskID(task), int(attempt)) if attempt.isdigit() else None
    worker = None if worker_id is None else executor.workers.get(worker_id)
    run = None if worker is None else worker.runs.get(TaskID(task))
    name = f"{run.spec.name} " if run is not None else ""
    blocked = ""
    if run is not None and run.exec is not None and run.exec.waiter is not None:
        blocked = f", blocked in {run.exec.waiter.kind}()"
    return f"running task {name}{task} (attempt {attempt}{blocked})"


def _amounts(units: dict[str, int]) -> str:
    """``{'CPU': 1.0, 'GPU': 0.0}``: resource units as the quantities a user asked for, by name."""
    return str(dict(sorted(as_floats(units).items())))
