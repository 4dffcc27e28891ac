"""The object directory against a fake driver and a tiny model, under random event orders.

The fake driver carries out the directory's commands on per-node stores
(memory and disk) the way a simulator would: pulls and restores complete
later or fail, copies vanish by faults, nodes die and come back empty. After
every step an outside checker compares three views: the directory's own
indexes (``check_invariants``), the driver's stores (what is physically
where), and a tiny model of which objects should be available, failed, lost
or freed. Argument fetches (waiters named like the scheduler's) keep their
copies held from their wake until released: never evicted nor spilled, and
a copy a fault takes from under them is reported missing. At the end, the same events replayed into a fresh directory must
give the same commands.

Run longer: ``DETRAY_LONG_EXAMPLES=2000 pytest tests/core/test_directory_stateful.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from detray.core.commands import (
    Command,
    DeleteCopy,
    PullObject,
    ReportArgumentsMissing,
    ReportLost,
    RestoreObject,
    SetTimer,
    SpillObject,
    WakeWaiter,
)
from detray.core.directory import CopyState, ObjectDirectory, ObjectStatus, fetch_waiter_id, parse_fetch_waiter
from detray.core.errors import ErrorKind, failure
from detray.core.events import (
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
from detray.core.ids import NodeID, ObjectID, TaskID, WorkerID, node_id

NODES = [node_id(i) for i in range(3)]
SIZES = {
    ObjectID("t.r1"): 10,
    ObjectID("t.r2"): 20,
    ObjectID("t.r3"): 30,
    ObjectID("u.r1"): 50,
    ObjectID("u.r2"): 70,
    ObjectID("u.p1"): 130,
}
OBJECTS = list(SIZES)
CAPACITIES = [40, 80, 120]

nodes = st.sampled_from(NODES)
objects = st.sampled_from(OBJECTS)
picks = st.integers(min_value=0, max_value=10_000)


@dataclass
class Request:
    waiter: str
    node: NodeID
    objects: tuple[ObjectID, ...]
    required: int
    fetch: bool
    node_epoch: int
    stale: bool
    wakes: int = 0
    cancelled: bool = False
    holds: bool = False
    """An argument fetch woken with every argument local: it holds them until released."""
    released: bool = False
    missing: set[ObjectID] = field(default_factory=set)
    """Held arguments reported missing (a fault took the copy)."""
    freed_while_waiting: set[ObjectID] = field(default_factory=set)
    """Objects freed while this waiter waited: it fails them as freed (final)."""


@dataclass
class Model:
    """What each object should be, decided from the driver's stores and the owner's decisions."""

    freed: set[ObjectID] = field(default_factory=set)
    failed: set[ObjectID] = field(default_factory=set)
    created: set[ObjectID] = field(default_factory=set)
    reported_since_loss: set[ObjectID] = field(default_factory=set)


class DirectoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.d = ObjectDirectory(pull_retry_s=0.5)
        self.step = 0
        self.events: list[Event] = []
        self.outputs: list[list[Command]] = []
        self.incarnation = {n: 0 for n in NODES}
        self.alive = {n: False for n in NODES}
        self.epoch = {n: 0 for n in NODES}
        self.capacity = {n: 0 for n in NODES}
        self.spill = {n: True for n in NODES}
        self.mem: dict[NodeID, dict[ObjectID, None]] = {n: {} for n in NODES}
        self.disk: dict[NodeID, dict[ObjectID, int]] = {n: {} for n in NODES}
        self.generation = 0
        self.pulls: list[tuple[ObjectID, NodeID, NodeID]] = []
        self.restores: list[tuple[ObjectID, NodeID, int]] = []
        self.timers: list[str] = []
        self.requests: dict[str, Request] = {}
        self.model = Model()
        self.lost_reports_this_step: list[ObjectID] = []
        self.held_before: set[tuple[ObjectID, NodeID]] = set()

    # -- feeding events and carrying out commands ---------------------------------------

    def send(self, event_type: type[Event], **fields: object) -> list[Command]:
        self.step += 1
        event = event_type(now=float(self.step), stimulus_id=f"s{self.step}", **fields)
        self.held_before = {
            (obj, self.requests[w].node) for w in self.d.held_fetches() for obj in self.d.held_arguments(w) or ()
        }
        out = self.d.handle(event)
        self.events.append(event)
        self.outputs.append(out)
        self.lost_reports_this_step = []
        for command in out:
            assert command.stimulus_id == event.stimulus_id
            self.carry_out(command)
        return out

    def carry_out(self, command: Command) -> None:
        if isinstance(command, PullObject):
            assert SIZES[command.obj] == command.size_bytes
            assert command.obj in self.mem[command.source], f"pull from a node without it: {command}"
            self.pulls.append((command.obj, command.source, command.node))
        elif isinstance(command, RestoreObject):
            gen = self.disk[command.node].get(command.obj)
            assert gen is not None, f"restore of what is not on disk: {command}"
            self.restores.append((command.obj, command.node, gen))
        elif isinstance(command, SetTimer):
            self.timers.append(command.timer)
        elif isinstance(command, DeleteCopy):
            if command.reason.startswith("evicted"):
                assert (command.obj, command.node) not in self.held_before, f"held copy evicted: {command}"
            self.mem[command.node].pop(command.obj, None)
            self.disk[command.node].pop(command.obj, None)
            if command.reason == "object store full":
                self.check_store_full(command.obj, command.node)
        elif isinstance(command, SpillObject):
            assert command.obj in self.mem[command.node], f"spill of what is not in memory: {command}"
            assert self.spill[command.node], f"spill on a node without spilling: {command}"
            assert (command.obj, command.node) not in self.held_before, f"held copy spilled: {command}"
            del self.mem[command.node][command.obj]
            self.generation += 1
            self.disk[command.node][command.obj] = self.generation
        elif isinstance(command, WakeWaiter):
            self.check_wake(command)
        elif isinstance(command, ReportLost):
            obj = command.obj
            assert obj not in self.model.reported_since_loss, f"{obj} reported lost twice"
            self.model.reported_since_loss.add(obj)
            self.lost_reports_this_step.append(obj)
        elif isinstance(command, ReportArgumentsMissing):
            waiter = fetch_waiter_id(command.task, command.attempt, command.node)
            request = self.requests[waiter]
            assert request.holds and not request.released, f"missing reported for {waiter}, which holds nothing"
            for obj in command.objects:
                assert (obj, command.node) in self.held_before, f"{obj} reported missing, was not held"
                assert obj not in self.mem[command.node], f"{obj} reported missing, still in memory"
                request.missing.add(obj)
        else:
            raise AssertionError(f"unexpected command {command}")

    def check_store_full(self, obj: ObjectID, node: NodeID) -> None:
        why = self.d.failure(obj)
        assert why is not None and why.kind is ErrorKind.OBJECT_STORE_FULL, (obj, why)
        assert not self.spill[node], "store full on a node that can spill"
        size = int(why.detail("object_size_bytes") or -1)
        capacity = int(why.detail("store_capacity_bytes") or -1)
        pinned = int(why.detail("pinned_bytes") or -1)
        assert size == SIZES[obj] and capacity == self.capacity[node], why
        assert pinned + size > capacity, f"store full although it fits: {why}"
        self.model.failed.add(obj)

    def check_wake(self, wake: WakeWaiter) -> None:
        request = self.requests[wake.waiter]
        assert request.wakes == 0, f"{wake.waiter} woken twice"
        assert not request.cancelled, f"{wake.waiter} woken after cancel"
        request.wakes += 1
        failed = dict(wake.failed)
        assert not set(wake.ready) & set(failed)
        assert set(wake.ready) | set(failed) <= set(request.objects)
        assert len(wake.ready) + len(failed) >= request.required
        request.holds = request.fetch and not failed and parse_fetch_waiter(wake.waiter) is not None
        for obj in wake.ready:
            if request.fetch:
                assert obj in self.mem[request.node], f"{wake.waiter}: {obj} not local"
            else:
                assert self.holders(obj), f"{wake.waiter}: {obj} ready without a copy"
        for obj, why in failed.items():
            if obj in request.freed_while_waiting:
                assert why.kind is ErrorKind.OBJECT_LOST and why.detail("reason") == "freed"
            elif obj in self.model.failed and why == self.d.failure(obj):
                pass
            else:
                # A fetch can fail for one object on one node (it can never be local
                # there) before, or without, the object failing: a waiter's failures are final.
                assert request.fetch and why.kind is ErrorKind.OBJECT_STORE_FULL, (obj, why)

    def holders(self, obj: ObjectID) -> list[NodeID]:
        return [n for n in NODES if obj in self.mem[n] or obj in self.disk[n]]

    def join(self, node: NodeID, capacity: int, spill: bool) -> None:
        self.incarnation[node] += 1
        self.alive[node] = True
        self.epoch[node] += 1
        self.capacity[node] = capacity
        self.spill[node] = spill
        self.mem[node].clear()
        self.disk[node].clear()
        self.send(
            NodeJoined,
            node=node,
            incarnation=self.incarnation[node],
            resources={},
            object_store_bytes=capacity,
            spill_enabled=spill,
        )

    # -- rules ------------------------------------------------------------------------------

    @initialize(capacities=st.lists(st.sampled_from(CAPACITIES), min_size=3, max_size=3),
                spills=st.lists(st.booleans(), min_size=3, max_size=3))
    def start(self, capacities: list[int], spills: list[bool]) -> None:
        for node, capacity, spill in zip(NODES, capacities, spills):
            self.join(node, capacity, spill)

    @rule(obj=objects, node=nodes, how=st.sampled_from(["finished", "failed", "put"]))
    def create(self, obj: ObjectID, node: NodeID, how: str) -> None:
        if self.alive[node] and obj not in self.mem[node] and obj not in self.disk[node]:
            self.mem[node][obj] = None  # the worker stored it before reporting
        size = SIZES[obj]
        if how == "put":
            self.send(ObjectPut, obj=obj, node=node, size_bytes=size, owner=WorkerID("owner"))
        else:
            kind = TaskFinished if how == "finished" else TaskFailed
            task = TaskID(obj.partition(".")[0])
            self.send(kind, task=task, attempt=1, node=node, worker=WorkerID(f"{node}/w0"),
                      return_sizes=((obj, size),))
        if obj not in self.model.freed and obj not in self.model.failed and self.holders(obj):
            self.model.created.add(obj)

    @rule(chosen=st.lists(objects, min_size=0, max_size=3), node=nodes,
          required=st.integers(min_value=0, max_value=4), fetch=st.booleans())
    def request(
        self, chosen: list[ObjectID], node: NodeID, required: int, fetch: bool, arguments: bool = False
    ) -> None:
        if arguments:  # named as the scheduler names an attempt's argument fetch
            waiter = fetch_waiter_id(TaskID(f"a{self.step}"), 1, node)
        else:
            waiter = f"{'get' if fetch else 'task'}:{self.step}"
        distinct = tuple(dict.fromkeys(chosen))
        self.requests[waiter] = Request(
            waiter=waiter,
            node=node,
            objects=distinct,
            required=min(required, len(distinct)),
            fetch=fetch,
            node_epoch=self.epoch[node],
            stale=fetch and not self.alive[node],
        )
        self.send(ObjectsRequested, waiter=waiter, node=node, objects=tuple(chosen),
                  num_required=required, fetch=fetch)
        self.requested_again_after_free(self.requests[waiter])

    def requested_again_after_free(self, request: Request) -> None:
        """A new waiter not satisfied at once (not woken by its own request): a freed
        object it needs is lost again (Ray: the owner kept its lineage and rebuilds
        it, or fails it). The tombstone goes with whatever failure it had: the new
        record starts afresh."""
        if request.stale or request.wakes:
            return
        for obj in request.objects:
            if obj in self.model.freed:
                self.model.freed.discard(obj)
                self.model.failed.discard(obj)
                self.model.created.add(obj)

    @precondition(lambda self: any(self.mem[n] or self.disk[n] for n in NODES))
    @rule(picks_=st.lists(picks, min_size=1, max_size=3), node=nodes, spilled_first=st.booleans(),
          arguments=st.booleans())
    def fetch_what_exists(self, picks_: list[int], node: NodeID, spilled_first: bool, arguments: bool) -> None:
        """Fetch objects that have a copy (spilled ones if any), all of them required:
        drives pulls, restores, and held copies while the last argument arrives (and,
        for an attempt's argument fetch, until it is released)."""
        on_disk = sorted({o for n in NODES for o in self.disk[n]})
        anywhere = sorted({o for n in NODES for o in (*self.mem[n], *self.disk[n])})
        pool = on_disk if spilled_first and on_disk else anywhere
        chosen = [pool[p % len(pool)] for p in picks_]
        self.request(chosen, node, len(chosen), True, arguments)

    @precondition(lambda self: any(r.holds and not r.released and r.missing for r in self.requests.values()))
    @rule(pick=picks)
    def attempt_fetches_again(self, pick: int) -> None:
        """The scheduler's answer to a missing argument: the same fetch once more,
        which takes over the old holds."""
        missing = sorted(w for w, r in self.requests.items() if r.holds and not r.released and r.missing)
        old = self.requests[missing[pick % len(missing)]]
        self.requests[old.waiter] = Request(
            waiter=old.waiter,
            node=old.node,
            objects=old.objects,
            required=len(old.objects),
            fetch=True,
            node_epoch=self.epoch[old.node],
            stale=not self.alive[old.node],
        )
        self.send(ObjectsRequested, waiter=old.waiter, node=old.node, objects=old.objects,
                  num_required=len(old.objects), fetch=True)
        self.requested_again_after_free(self.requests[old.waiter])

    @precondition(lambda self: any(r.holds and not r.released for r in self.requests.values()))
    @rule(pick=picks)
    def attempt_leaves(self, pick: int) -> None:
        """The scheduler's ReleaseArguments (delivered as WaiterCancelled): the holds go."""
        holding = sorted(w for w, r in self.requests.items() if r.holds and not r.released)
        request = self.requests[holding[pick % len(holding)]]
        request.released = True
        self.send(WaiterCancelled, waiter=request.waiter)
        assert self.d.held_arguments(request.waiter) is None

    @precondition(lambda self: self.pulls)
    @rule(pick=picks, succeed=st.booleans())
    def finish_pull(self, pick: int, succeed: bool) -> None:
        obj, source, dest = self.pulls.pop(pick % len(self.pulls))
        reachable = self.alive[source] and obj in self.mem[source]
        if succeed and reachable:
            if self.alive[dest] and obj not in self.mem[dest] and obj not in self.disk[dest]:
                self.mem[dest][obj] = None
            self.send(ObjectCopied, obj=obj, node=dest)
        else:
            self.send(ObjectPullFailed, obj=obj, node=dest, source=source)

    @precondition(lambda self: self.restores)
    @rule(pick=picks)
    def finish_restore(self, pick: int) -> None:
        obj, node, gen = self.restores.pop(pick % len(self.restores))
        if self.disk[node].get(obj) != gen:
            return  # the file it was reading is gone: a real driver reports nothing
        del self.disk[node][obj]
        self.mem[node][obj] = None
        self.send(ObjectRestored, obj=obj, node=node)

    @precondition(lambda self: self.timers)
    @rule(pick=picks)
    def fire_timer(self, pick: int) -> None:
        self.send(TimerFired, timer=self.timers.pop(pick % len(self.timers)))

    @rule(obj=objects, node=nodes, kind=st.sampled_from(["copied", "restored", "pull", "timer"]))
    def late_or_foreign_answer(self, obj: ObjectID, node: NodeID, kind: str) -> None:
        """An answer nobody asked for: a copy from an abandoned pull, a restore, a timer."""
        if kind == "copied" and obj not in self.disk[node]:
            if self.alive[node]:
                self.mem[node][obj] = None
            self.send(ObjectCopied, obj=obj, node=node)
        elif kind == "restored" and obj not in self.disk[node]:
            self.send(ObjectRestored, obj=obj, node=node)
        elif kind == "pull":
            self.send(ObjectPullFailed, obj=obj, node=node, source=node)
        else:
            self.send(TimerFired, timer=f"someone-else:{obj}")

    @rule(node=nodes, pick=picks, extra=st.lists(objects, max_size=1), held_first=st.booleans())
    def copies_vanish(self, node: NodeID, pick: int, extra: list[ObjectID], held_first: bool) -> None:
        """A fault drops one copy the node holds (and maybe names one it does not);
        perhaps one an argument fetch holds."""
        held = sorted({*self.mem[node], *self.disk[node]})
        if held_first:
            pinned = sorted(
                {o for w in self.d.held_fetches() if self.requests[w].node == node for o in self.d.held_arguments(w) or ()}
            )
            held = pinned or held
        chosen = ([held[pick % len(held)]] if held else []) + extra
        if not chosen:
            return
        for obj in chosen:
            self.mem[node].pop(obj, None)
            self.disk[node].pop(obj, None)
        self.send(CopiesEvicted, node=node, objects=tuple(chosen))

    @rule(node=nodes, what=st.sampled_from(["dies", "dies", "stale death", "returns"]),
          capacity=st.sampled_from(CAPACITIES), spill=st.booleans())
    def node_fault(self, node: NodeID, what: str, capacity: int, spill: bool) -> None:
        if what == "returns":
            self.join(node, capacity, spill)
        elif what == "stale death" or not self.alive[node]:
            before = self.d.stats["stale_node_died"]
            self.send(NodeDied, node=node, incarnation=max(self.incarnation[node] - 1, 0))
            assert self.d.stats["stale_node_died"] == before + 1
        else:
            self.alive[node] = False
            self.epoch[node] += 1
            self.mem[node].clear()
            self.disk[node].clear()
            self.send(NodeDied, node=node, incarnation=self.incarnation[node])

    @rule(obj=objects, pick=picks,
          decision=st.sampled_from(["free", "fail", "fail", "cancel", "cancel", "cancel"]))
    def owner_decides(self, obj: ObjectID, pick: int, decision: str) -> None:
        """The task manager frees or fails an object, or a get/wait gives up."""
        if decision == "free":
            self.model.freed.add(obj)
            for request in self.requests.values():
                if obj in request.objects and self.d.is_waiting(request.waiter):
                    request.freed_while_waiting.add(obj)
            self.send(ObjectFreed, obj=obj)
        elif decision == "fail":
            why = failure(ErrorKind.OBJECT_LOST, f"{obj} cannot be rebuilt", object=obj)
            if obj not in self.model.freed and not self.holders(obj):
                self.model.failed.add(obj)
            self.send(ObjectFailed, obj=obj, failure=why)
        elif self.requests:
            waiters = sorted(self.requests)
            request = self.requests[waiters[pick % len(waiters)]]
            if request.wakes == 0 and self.d.is_waiting(request.waiter):
                request.cancelled = True
            if request.holds:
                request.released = True  # for an answered argument fetch: its release
            self.send(WaiterCancelled, waiter=request.waiter)

    # -- invariants -----------------------------------------------------------------------------

    @invariant()
    def directory_indexes_agree(self) -> None:
        self.d.check_invariants()

    @invariant()
    def driver_stores_match_the_directory(self) -> None:
        for node in NODES:
            if not self.alive[node]:
                assert not self.mem[node] and not self.disk[node]
                assert not self.d.node_alive(node)
                continue
            in_memory = {o for o in OBJECTS if self.d.copy_state(o, node) is CopyState.IN_MEMORY}
            on_disk = {o for o in OBJECTS if self.d.copy_state(o, node) is CopyState.SPILLED}
            assert set(self.mem[node]) == in_memory, (node, sorted(self.mem[node]), sorted(in_memory))
            assert set(self.disk[node]) == on_disk, (node, sorted(self.disk[node]), sorted(on_disk))
            used = sum(SIZES[o] for o in self.mem[node])
            assert used == self.d.used_bytes(node) <= self.capacity[node], (node, used)

    @invariant()
    def argument_fetches_hold_their_copies_until_released(self) -> None:
        for request in self.requests.values():
            held = self.d.held_arguments(request.waiter)
            alive_since = self.alive[request.node] and self.epoch[request.node] == request.node_epoch
            if not request.holds or request.released or not alive_since:
                assert held is None, f"{request.waiter} holds {held}"
                continue
            expected = set(request.objects) - request.missing
            assert held is not None and set(held) == expected, (request.waiter, held, expected)
            for obj in held:
                assert obj in self.mem[request.node], f"{request.waiter}: held {obj} not in memory"

    @invariant()
    def every_available_object_has_one_pinned_primary(self) -> None:
        for obj in OBJECTS:
            status = self.d.status(obj)
            primary = self.d.primary(obj)
            if status is ObjectStatus.AVAILABLE:
                assert primary is not None and self.alive[primary]
                assert obj in self.mem[primary] or obj in self.disk[primary]
                assert self.d.failure(obj) is None, f"{obj} both available and failed"
            else:
                assert primary is None and not self.holders(obj), (obj, status)

    @invariant()
    def the_tiny_model_agrees(self) -> None:
        m = self.model
        for obj in OBJECTS:
            status = self.d.status(obj)
            if obj in m.freed:
                expected: set[ObjectStatus | None] = {ObjectStatus.FREED}
            elif obj in m.failed:
                expected = {ObjectStatus.FAILED}
            elif self.holders(obj):
                expected = {ObjectStatus.AVAILABLE}
            elif obj in m.created:
                expected = {ObjectStatus.LOST}
            else:
                expected = {ObjectStatus.PENDING, None}
            assert status in expected, (obj, status, expected)
            if status is not ObjectStatus.LOST:
                m.reported_since_loss.discard(obj)

    @invariant()
    def lost_is_reported_once_and_only_when_needed(self) -> None:
        for obj in self.lost_reports_this_step:
            assert self.d.status(obj) is ObjectStatus.LOST
            assert any(obj in self.d.waiting_for(w) for w in self.d.waiters_of(obj)), obj
        for obj in OBJECTS:
            if self.d.status(obj) is ObjectStatus.LOST and any(
                obj in self.d.waiting_for(w) for w in self.d.waiters_of(obj)
            ):
                assert obj in self.model.reported_since_loss, f"{obj} needed, lost, never reported"

    @invariant()
    def every_waiter_is_woken_once_or_still_waiting_for_something_coming(self) -> None:
        for request in self.requests.values():
            assert request.wakes <= 1
            if request.wakes or request.cancelled:
                assert not self.d.is_waiting(request.waiter)
                continue
            if self.d.is_waiting(request.waiter):
                for obj in self.d.waiting_for(request.waiter):
                    assert self.d.status(obj) in (
                        ObjectStatus.PENDING,
                        ObjectStatus.LOST,
                        ObjectStatus.AVAILABLE,
                    ), (request.waiter, obj, self.d.status(obj))
                continue
            # Never woken and not waiting: only a fetch on a node that died (or was dead).
            assert request.fetch, f"{request.waiter} vanished without a wake"
            assert request.stale or self.epoch[request.node] != request.node_epoch, request

    def teardown(self) -> None:
        replay = ObjectDirectory(pull_retry_s=0.5)
        for event, out in zip(self.events, self.outputs):
            assert replay.handle(event) == out, f"not deterministic at {event}"
        assert replay.stats == self.d.stats


TestDirectoryMachine = DirectoryMachine.TestCase
TestDirectoryMachine.settings = settings(
    max_examples=int(os.environ.get("DETRAY_LONG_EXAMPLES", 400)),
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
