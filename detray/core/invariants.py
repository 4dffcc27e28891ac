"""Cross-checks of every index of one cluster's machines against the others.

Owns: ``check_all(router)``, the outside checker that tests and simulations
run after every step (TigerBeetle's state checker, dask's
``validate_state``). Each machine checks its own indexes
(``check_invariants``); this module adds what only the whole cluster can
see. Each check raises ``AssertionError`` naming the ids involved.

The invariants, and where each is checked:
- resources never negative nor above capacity, and exactly conserved:
  ``Scheduler.check_invariants`` (every live node);
- no task running on a dead node: ``_check_attempts_on_live_nodes``;
- every object copy on a live node: ``_check_copies_on_live_nodes`` (and the
  directory's own check);
- every pinned (primary) copy belongs to a referenced object:
  ``_check_pinned_are_referenced``;
- every waiting task's missing arguments are being created, rebuilt, or
  failed: ``_check_waiting_arguments``;
- no object both available and failed: ``ObjectDirectory.check_invariants``;
- the machines agree on which nodes are alive: ``_check_nodes_agree``;
- an alive actor's worker is on a live node: ``_check_actors_on_live_nodes``.
"""

from __future__ import annotations

from detray.core.actors import ActorState
from detray.core.directory import ObjectStatus
from detray.core.ids import ObjectID, creating_task, is_put
from detray.core.router import Router
from detray.core.tasks import ACTIVE_STATES, TaskState


def check_all(router: Router) -> None:
    """Run every machine's own checks, then the cross-machine ones."""
    router.tasks.check_invariants()
    router.actors.check_invariants()
    router.directory.check_invariants()
    for scheduler in router.schedulers.values():
        scheduler.check_invariants()
    _check_nodes_agree(router)
    _check_attempts_on_live_nodes(router)
    _check_copies_on_live_nodes(router)
    _check_pinned_are_referenced(router)
    _check_waiting_arguments(router)
    _check_actors_on_live_nodes(router)


def _check_nodes_agree(router: Router) -> None:
    for node in router.incarnations:
        live = node in router.schedulers
        assert router.directory.node_alive(node) == live, (
            f"{node}: router says {'live' if live else 'dead'}, the directory disagrees"
        )


def _check_attempts_on_live_nodes(router: Router) -> None:
    for task, state, node in router.tasks.attempts_in_flight():
        if state is TaskState.RUNNING and node is not None:
            assert node in router.schedulers, f"task {task} is RUNNING on dead node {node}"


def _check_copies_on_live_nodes(router: Router) -> None:
    for obj in router.directory.objects():
        for node in router.directory.locations(obj):
            assert node in router.schedulers, f"object {obj} has a copy on dead node {node}"


def _check_pinned_are_referenced(router: Router) -> None:
    for obj in router.directory.objects():
        if router.directory.status(obj) is not ObjectStatus.AVAILABLE:
            continue
        assert router.tasks.in_scope(obj) or router.tasks.owner_dead(obj), (
            f"object {obj} is pinned on {router.directory.primary(obj)} but nobody references it "
            f"(refcount {router.tasks.refcount(obj)})"
        )


def _check_waiting_arguments(router: Router) -> None:
    directory = router.directory
    for task, state, _node in router.tasks.attempts_in_flight():
        if state is not TaskState.WAITING_FOR_ARGS:
            continue
        for arg in router.tasks.missing_arguments(task):
            status = directory.status(arg)
            if status is ObjectStatus.AVAILABLE or status is ObjectStatus.FAILED:
                continue  # the answer is on its way through this very cascade's end state
            creator = creating_task(arg)
            creator_state = router.tasks.state(creator)
            being_made = creator_state in ACTIVE_STATES and not is_put(arg)
            assert being_made or router.tasks.owner_dead(arg) or _put_in_flight(router, arg), (
                f"task {task} waits for {arg} ({status.name if status else 'unknown'}), "
                f"which nobody is creating or rebuilding (creator {creator} is "
                f"{creator_state.name if creator_state else 'unknown'})"
            )


def _put_in_flight(router: Router, obj: ObjectID) -> bool:
    # A put whose ObjectPut has not been delivered yet is pending at the directory.
    return is_put(obj) and router.directory.status(obj) in (None, ObjectStatus.PENDING)


def _check_actors_on_live_nodes(router: Router) -> None:
    for actor in router.actors.actor_ids():
        if router.actors.state(actor) is ActorState.ALIVE:
            node = router.actors.node_of(actor)
            assert node in router.schedulers, f"actor {actor} is ALIVE on dead node {node}"
