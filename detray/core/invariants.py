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
- an attempt queued or waiting for a worker has every argument in memory on
  its node, held by its answered fetch; a fetching attempt's fetch waits at
  the directory; every fetch the directory waits for or holds belongs to an
  attempt still on that node: ``_check_fetched_arguments``;
- an alive actor's worker is on a live node: ``_check_actors_on_live_nodes``.
"""

from __future__ import annotations

from detray.core.actors import ActorState
from detray.core.directory import ObjectStatus, fetch_waiter_id, parse_fetch_waiter
from detray.core.ids import ObjectID, creating_task, is_put
from detray.core.router import Router
from detray.core.scheduler import TaskState as AttemptState
from detray.core.tasks import ACTIVE_STATES, TaskState


def check_all(router: Router, *, touched_only: bool = False) -> None:
    """Run every machine's own checks, then the cross-machine ones.

    ``touched_only``: check the schedulers that handled an event since the last such
    check (the others cannot have changed), then forget them; a driver checking after
    every step uses it to keep the cost of a check independent of the cluster's size.
    """
    router.tasks.check_invariants()
    router.actors.check_invariants()
    router.directory.check_invariants()
    schedulers = router.touched.values() if touched_only else router.schedulers.values()
    for scheduler in schedulers:
        scheduler.check_invariants()
    router.touched.clear()
    _check_nodes_agree(router)
    _check_shared_view(router)
    _check_attempts_on_live_nodes(router)
    _check_copies_on_live_nodes(router)
    _check_pinned_are_referenced(router)
    _check_waiting_arguments(router)
    _check_actors_on_live_nodes(router)
    _check_fetched_arguments(router)


def _check_nodes_agree(router: Router) -> None:
    for node in router.incarnations:
        live = node in router.schedulers
        assert router.directory.node_alive(node) == live, (
            f"{node}: router says {'live' if live else 'dead'}, the directory disagrees"
        )


def _check_shared_view(router: Router) -> None:
    router.table.check()
    assert router.table.order == list(router.schedulers), (
        f"the resource table's nodes {router.table.order} are not the live schedulers {list(router.schedulers)}"
    )
    for node, scheduler in router.schedulers.items():
        assert router.table.incarnation_of(node) == scheduler.incarnation, f"{node}: table incarnation"
    waiting = [node for node, s in router.schedulers.items() if s.waits_for_view()]
    assert router._watchers == waiting, f"watchers {router._watchers} != waiting schedulers {waiting}"
    assert router._watching == set(waiting), f"watching {router._watching} != waiting schedulers {waiting}"


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


def _check_fetched_arguments(router: Router) -> None:
    directory = router.directory
    fetches: set[str] = set()
    for node, scheduler in router.schedulers.items():
        for task, attempt, state in scheduler.attempts():
            if state is AttemptState.INFEASIBLE:
                continue
            spec_args = scheduler.arguments_of(task, attempt)
            if not spec_args:
                continue
            waiter = fetch_waiter_id(task, attempt, node)
            fetches.add(waiter)
            held = directory.held_arguments(waiter)
            if state is AttemptState.FETCHING:
                assert directory.is_waiting(waiter), (
                    f"{task}#{attempt} fetches its arguments on {node}, but the directory "
                    f"does not wait for them (held: {held})"
                )
                continue
            assert held is not None, f"{task}#{attempt} is {state.name} on {node} and holds no arguments"
            if state is AttemptState.RUNNING:
                continue  # a fault may take a copy from under a running attempt
            missing = [arg for arg in spec_args if arg not in held]
            assert not missing, f"{task}#{attempt} is {state.name} on {node} without its arguments {missing}"
    for waiter in (*directory.fetch_waiters(), *directory.held_fetches()):
        parsed = parse_fetch_waiter(waiter)
        assert parsed is not None, waiter
        assert waiter in fetches, (
            f"the directory fetches or holds for {waiter}, which is no attempt on {parsed[2]}"
        )
