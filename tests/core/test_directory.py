"""The object directory, one story per test: what a user of get/wait/fetch would see."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest

from detray.core import directory as D
from detray.core.commands import (
    Command,
    DeleteCopy,
    FetchArguments,
    PullObject,
    ReleaseArguments,
    ReportArgumentsMissing,
    ReportLost,
    RequestObjects,
    RestoreObject,
    SetTimer,
    SpillObject,
    WakeWaiter,
)
from detray.core.directory import CopyState, ObjectDirectory, ObjectStatus
from detray.core.errors import ErrorKind, InvalidTransition, failure
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

N0, N1, N2 = node_id(0), node_id(1), node_id(2)
A, B, C = ObjectID("t.r1"), ObjectID("t.r2"), ObjectID("t.r3")
OWNER = WorkerID("driver")


class Story:
    """A directory plus a clock and stimulus ids; every step checks the invariants."""

    def __init__(self) -> None:
        self.d = ObjectDirectory()
        self.step = 0

    def send(self, event_type: type[Event], **fields: object) -> list[Command]:
        self.step += 1
        event = event_type(now=float(self.step), stimulus_id=f"s{self.step}", **fields)
        out = self.d.handle(event)
        for command in out:
            assert command.stimulus_id == event.stimulus_id
        self.d.check_invariants()
        return out

    def join(self, node: NodeID, capacity: int = 100, *, spill: bool = True, inc: int = 1) -> None:
        assert self.send(
            NodeJoined,
            node=node,
            incarnation=inc,
            resources={},
            object_store_bytes=capacity,
            spill_enabled=spill,
        ) == []

    def put(self, obj: ObjectID, node: NodeID, size: int) -> list[Command]:
        return self.send(ObjectPut, obj=obj, node=node, size_bytes=size, owner=OWNER)

    def finish(self, node: NodeID, *returns: tuple[ObjectID, int]) -> list[Command]:
        return self.send(
            TaskFinished,
            task=TaskID("t"),
            attempt=1,
            node=node,
            worker=WorkerID(f"{node}/w0"),
            return_sizes=tuple(returns),
        )

    def get(
        self,
        waiter: str,
        node: NodeID,
        objects: Sequence[ObjectID],
        required: int | None = None,
        *,
        fetch: bool = True,
    ) -> list[Command]:
        return self.send(
            ObjectsRequested,
            waiter=waiter,
            node=node,
            objects=tuple(objects),
            num_required=len(objects) if required is None else required,
            fetch=fetch,
        )

    def copy_to(self, obj: ObjectID, node: NodeID) -> list[Command]:
        return self.send(ObjectCopied, obj=obj, node=node)


def of(out: list[Command], kind: type[Command]) -> list[Command]:
    return [c for c in out if isinstance(c, kind)]


def wake(out: list[Command]) -> WakeWaiter:
    wakes = of(out, WakeWaiter)
    assert len(wakes) == 1, out
    w = wakes[0]
    assert isinstance(w, WakeWaiter)
    return w


@pytest.fixture
def s() -> Story:
    story = Story()
    for node in (N0, N1, N2):
        story.join(node)
    return story


# --- get, wait, fetch ----------------------------------------------------------------


def test_get_of_a_local_object_wakes_at_once(s: Story) -> None:
    s.put(A, N0, 10)
    out = s.get("g1", N0, [A])
    assert out == [WakeWaiter(stimulus_id="s5", waiter="g1", ready=(A,), failed=())]
    assert not s.d.is_waiting("g1")


def test_get_before_creation_waits_then_wakes_when_the_task_finishes(s: Story) -> None:
    assert s.get("g1", N0, [A]) == []
    assert s.d.status(A) is ObjectStatus.PENDING
    out = s.finish(N0, (A, 10))
    assert wake(out).ready == (A,)
    assert s.d.status(A) is ObjectStatus.AVAILABLE


def test_remote_object_is_pulled_from_the_lowest_id_holder_then_the_waiter_wakes(s: Story) -> None:
    s.put(A, N2, 10)
    s.get("g0", N1, [A])
    s.copy_to(A, N1)  # now held by N1 and N2
    out = s.get("g1", N0, [A])
    assert out == [PullObject(stimulus_id=out[0].stimulus_id, obj=A, source=N1, node=N0, size_bytes=10)]
    assert s.d.is_waiting("g1")
    out = s.copy_to(A, N0)
    assert wake(out).ready == (A,)
    assert s.d.locations(A) == (N0, N1, N2)
    assert s.d.primary(A) == N2


def test_a_second_fetch_to_the_same_node_shares_the_pull_in_flight(s: Story) -> None:
    s.put(A, N1, 10)
    assert len(of(s.get("g1", N0, [A]), PullObject)) == 1
    assert of(s.get("g2", N0, [A]), PullObject) == []
    out = s.copy_to(A, N0)
    assert sorted(c.waiter for c in of(out, WakeWaiter)) == ["g1", "g2"]  # type: ignore[attr-defined]


def test_wait_for_one_of_three_wakes_after_the_first(s: Story) -> None:
    assert s.get("w", N0, [A, B, C], required=1, fetch=False) == []
    out = s.finish(N1, (B, 5))
    assert wake(out) == WakeWaiter(stimulus_id=out[0].stimulus_id, waiter="w", ready=(B,), failed=())
    assert s.finish(N1, (A, 5)) == []  # woken once, never again


def test_existence_request_wakes_on_a_spilled_copy_without_fetching(s: Story) -> None:
    s.join(N0, 10, spill=True, inc=2)
    out = s.put(A, N0, 50)  # larger than the store: spilled at once
    assert of(out, SpillObject)
    out = s.get("task:x", N2, [A], fetch=False)
    assert wake(out).ready == (A,) and of(out, RestoreObject) == []


def test_duplicate_objects_count_once_and_the_requirement_is_clamped(s: Story) -> None:
    s.put(A, N0, 10)
    out = s.get("g", N0, [A, A], required=5)
    assert wake(out).ready == (A,)


def test_cancelled_waiter_is_forgotten_and_never_woken(s: Story) -> None:
    s.get("g", N0, [A])
    s.send(WaiterCancelled, waiter="g")
    assert s.d.status(A) is None  # nobody waits for it: no record kept
    assert of(s.finish(N0, (A, 10)), WakeWaiter) == []
    s.send(WaiterCancelled, waiter="g")
    assert s.d.stats["unknown_waiter_cancelled"] == 1


# --- capacity: eviction, spilling, store full ---------------------------------------------


def test_lru_eviction_of_secondary_copies_keeps_pinned_primaries(s: Story) -> None:
    s.put(A, N1, 30)
    s.put(B, N1, 30)
    s.put(C, N1, 30)
    s.put(ObjectID("own"), N0, 40)  # N0's pinned primary
    for obj in (A, B):
        s.get(f"g-{obj}", N0, [obj])
        s.copy_to(obj, N0)
    s.get("again-A", N0, [A])  # an access: A is now more recent than B
    s.get("g-C", N0, [C])
    out = s.copy_to(C, N0)  # 40 + 30 + 30 + 30 > 100: one secondary must go
    assert of(out, DeleteCopy) == [
        DeleteCopy(
            stimulus_id=out[0].stimulus_id, obj=B, node=N0, reason="evicted (least recently used) to make room"
        )
    ]
    assert wake(out).ready == (C,)
    assert s.d.locations(ObjectID("own")) == (N0,)
    assert s.d.used_bytes(N0) == 100
    assert s.d.stats["evictions"] == 1


def test_pinned_data_beyond_capacity_spills_when_enabled(s: Story) -> None:
    s.put(A, N0, 60)
    out = s.put(B, N0, 60)
    assert of(out, SpillObject) == [SpillObject(stimulus_id=out[0].stimulus_id, obj=A, node=N0, size_bytes=60)]
    assert s.d.copy_state(A, N0) is CopyState.SPILLED
    assert s.d.copy_state(B, N0) is CopyState.IN_MEMORY
    assert s.d.used_bytes(N0) == 60
    assert s.d.status(A) is ObjectStatus.AVAILABLE


def test_pinned_data_beyond_capacity_fails_with_store_full_sizes_when_spilling_is_off(s: Story) -> None:
    s.join(N0, 100, spill=False, inc=2)
    s.put(A, N0, 70)
    out = s.put(B, N0, 40)
    assert of(out, DeleteCopy) == [
        DeleteCopy(stimulus_id=out[0].stimulus_id, obj=B, node=N0, reason="object store full")
    ]
    assert s.d.status(B) is ObjectStatus.FAILED
    why = s.d.failure(B)
    assert why is not None and why.kind is ErrorKind.OBJECT_STORE_FULL
    assert why.detail("object_size_bytes") == "40"
    assert why.detail("store_capacity_bytes") == "100"
    assert why.detail("pinned_bytes") == "70"
    out = s.get("g", N1, [B])
    assert wake(out).failed == ((B, why),)


def test_store_full_evicts_nothing_when_eviction_could_not_make_room(s: Story) -> None:
    s.join(N0, 100, spill=False, inc=2)
    s.put(A, N1, 20)
    s.get("g", N0, [A])
    s.copy_to(A, N0)  # an unheld secondary of 20 bytes
    s.put(B, N0, 70)
    out = s.put(C, N0, 40)  # 70 pinned + 40 > 100 even without A
    assert of(out, DeleteCopy) == [
        DeleteCopy(stimulus_id=out[0].stimulus_id, obj=C, node=N0, reason="object store full")
    ]
    assert s.d.locations(A) == (N0, N1)


def test_fetch_of_a_spilled_object_restores_it(s: Story) -> None:
    s.put(A, N0, 60)
    s.put(B, N0, 60)  # A spilled
    out = s.get("g", N0, [A])
    assert out == [RestoreObject(stimulus_id=out[0].stimulus_id, obj=A, node=N0, size_bytes=60)]
    out = s.send(ObjectRestored, obj=A, node=N0)
    assert of(out, SpillObject)[0].obj == B  # type: ignore[attr-defined]
    assert wake(out).ready == (A,)
    assert s.d.copy_state(A, N0) is CopyState.IN_MEMORY


def test_a_restore_that_finds_no_room_stays_on_disk_and_fails_the_fetch(s: Story) -> None:
    s.put(A, N0, 60)
    s.put(B, N0, 60)  # A spilled
    s.get("g", N0, [A])  # RestoreObject(A) in flight
    s.get("args", N0, [B, C])  # B is local and held until C exists
    out = s.send(ObjectRestored, obj=A, node=N0)  # B cannot be spilled: no room for A
    assert of(out, SpillObject) == [SpillObject(stimulus_id=out[0].stimulus_id, obj=A, node=N0, size_bytes=60)]
    woken = wake(out)
    assert woken.waiter == "g" and woken.failed[0][1].kind is ErrorKind.OBJECT_STORE_FULL
    assert s.d.copy_state(A, N0) is CopyState.SPILLED
    assert s.d.used_bytes(N0) == 60
    assert s.d.stats["restores_without_room"] == 1


def test_fetch_elsewhere_of_an_object_only_on_disk_restores_then_pulls(s: Story) -> None:
    s.put(A, N0, 60)
    s.put(B, N0, 60)  # A spilled on N0
    out = s.get("g", N1, [A])
    assert of(out, RestoreObject)[0].node == N0  # type: ignore[attr-defined]
    out = s.send(ObjectRestored, obj=A, node=N0)
    assert of(out, PullObject)[0].source == N0  # type: ignore[attr-defined]
    assert wake(s.copy_to(A, N1)).ready == (A,)


def test_fetched_arguments_stay_pinned_until_the_last_one_arrives(s: Story) -> None:
    s.put(A, N1, 50)
    s.put(B, N1, 50)
    s.put(C, N2, 40)
    s.get("fetch", N0, [A, B])
    s.copy_to(A, N0)  # A is local but the waiter still waits for B
    s.get("other", N0, [C])
    out = s.copy_to(C, N0)  # 50 + 40 fits; then B cannot evict the held A
    assert wake(out).waiter == "other"
    out = s.copy_to(B, N0)  # 50 + 40 + 50 > 100: C (unheld) is evicted, A is kept
    assert [c.obj for c in of(out, DeleteCopy)] == [C]  # type: ignore[attr-defined]
    assert wake(out).ready == (A, B)


# --- an attempt's argument fetch holds its copies until the attempt leaves ---------------------

T9 = TaskID("t9")
FETCH_T9 = D.fetch_waiter_id(T9, 1, N0)


def release_t9(s: Story) -> list[Command]:
    command = ReleaseArguments(stimulus_id="release", task=T9, attempt=1, node=N0)
    event = D.argument_release(command, now=float(s.step))
    assert event.waiter == FETCH_T9
    return s.send(WaiterCancelled, waiter=event.waiter)


def test_answered_argument_fetch_keeps_its_copies_until_the_attempt_leaves(s: Story) -> None:
    s.put(A, N1, 50)
    s.get(FETCH_T9, N0, [A])
    assert wake(s.copy_to(A, N0)).ready == (A,)
    assert s.d.held_arguments(FETCH_T9) == (A,)  # the attempt now waits for a worker
    s.put(B, N0, 40)
    out = s.put(C, N0, 30)  # 50 + 40 + 30 > 100: the held A stays, the primary B spills
    assert of(out, DeleteCopy) == []
    assert [c.obj for c in of(out, SpillObject)] == [B]  # type: ignore[attr-defined]
    assert s.d.copy_state(A, N0) is CopyState.IN_MEMORY
    assert release_t9(s) == []
    assert s.d.held_arguments(FETCH_T9) is None and s.d.stats["fetch_holds_released"] == 1
    s.put(ObjectID("t.r4"), N0, 60)  # released: A is an ordinary secondary again
    assert s.d.locations(A) == (N1,)


def test_argument_fetch_satisfied_at_once_holds_too(s: Story) -> None:
    s.put(A, N0, 60)
    assert wake(s.get(FETCH_T9, N0, [A])).ready == (A,)
    assert s.d.held_arguments(FETCH_T9) == (A,)
    s.put(B, N0, 60)  # spilling the held primary is not allowed: the newcomer spills
    assert s.d.copy_state(A, N0) is CopyState.IN_MEMORY
    assert s.d.copy_state(B, N0) is CopyState.SPILLED


def test_a_get_keeps_no_holds_after_its_wake(s: Story) -> None:
    s.put(A, N1, 50)
    s.get("get:1", N0, [A])
    s.copy_to(A, N0)
    assert s.d.held_fetches() == ()
    s.put(B, N0, 60)
    assert s.d.locations(A) == (N1,)  # evicted: nobody holds it


def test_a_failed_argument_fetch_keeps_nothing(s: Story) -> None:
    s.put(A, N1, 50)
    s.send(ObjectFailed, obj=B, failure=failure(ErrorKind.OBJECT_LOST, "gone"))
    s.get(FETCH_T9, N0, [A, B])
    assert wake(s.copy_to(A, N0)).failed[0][0] == B
    assert s.d.held_fetches() == ()
    assert release_t9(s) == [] and s.d.stats["unknown_waiter_cancelled"] == 1


def test_releasing_a_fetch_still_waiting_cancels_it(s: Story) -> None:
    s.put(A, N1, 50)
    s.get(FETCH_T9, N0, [A])
    release_t9(s)  # withdrawn while fetching
    assert not s.d.is_waiting(FETCH_T9)
    assert of(s.copy_to(A, N0), WakeWaiter) == []


def test_a_fault_taking_a_held_copy_reports_the_argument_missing(s: Story) -> None:
    s.put(A, N1, 20)
    s.put(B, N1, 20)
    s.get(FETCH_T9, N0, [A, B])
    s.copy_to(A, N0)
    s.copy_to(B, N0)
    out = s.send(CopiesEvicted, node=N0, objects=(A,))
    missing = of(out, ReportArgumentsMissing)
    assert missing == [ReportArgumentsMissing(stimulus_id=f"s{s.step}", task=T9, attempt=1, node=N0, objects=(A,))]
    assert s.d.held_arguments(FETCH_T9) == (B,)
    event = D.arguments_missing(missing[0], now=0.0)  # type: ignore[arg-type]
    assert (event.task, event.attempt, event.node, event.objects) == (T9, 1, N0, (A,))
    # The scheduler fetches again: the new waiter takes over the holds.
    out = s.get(FETCH_T9, N0, [A, B])
    assert [c.obj for c in of(out, PullObject)] == [A]  # type: ignore[attr-defined]
    assert s.d.held_arguments(FETCH_T9) is None and s.d.stats["refetches"] == 1
    assert wake(s.copy_to(A, N0)).ready == (A, B)
    assert s.d.held_arguments(FETCH_T9) == (A, B)


def test_owner_death_of_a_held_argument_reports_it_missing(s: Story) -> None:
    s.put(A, N1, 20)
    s.get(FETCH_T9, N0, [A])
    s.copy_to(A, N0)
    out = s.send(ObjectFailed, obj=A, failure=failure(ErrorKind.OWNER_DIED, "owner died"))
    assert [c.objects for c in of(out, ReportArgumentsMissing)] == [(A,)]  # type: ignore[attr-defined]
    assert s.d.held_arguments(FETCH_T9) == ()


def test_node_death_drops_the_holds_there_silently(s: Story) -> None:
    s.put(A, N1, 20)
    s.get(FETCH_T9, N0, [A])
    s.copy_to(A, N0)
    out = s.send(NodeDied, node=N0, incarnation=1)
    assert of(out, ReportArgumentsMissing) == []
    assert s.d.held_fetches() == () and s.d.stats["held_fetches_dropped_node_died"] == 1


def test_a_copy_that_cannot_fit_is_not_kept_and_the_fetch_fails_with_store_full(s: Story) -> None:
    s.join(N0, 100, spill=False, inc=2)
    s.put(A, N0, 80)  # pinned
    s.put(B, N1, 50)
    s.get("g", N0, [B])
    out = s.copy_to(B, N0)
    assert [c.reason for c in of(out, DeleteCopy)] == ["no room for a secondary copy"]  # type: ignore[attr-defined]
    woken = wake(out)
    assert woken.ready == () and woken.failed[0][1].kind is ErrorKind.OBJECT_STORE_FULL
    assert s.d.status(B) is ObjectStatus.AVAILABLE  # only this waiter failed


def test_an_object_larger_than_the_destination_store_fails_the_fetch_at_once(s: Story) -> None:
    s.join(N2, 1000, inc=2)
    s.put(A, N2, 500)
    out = s.get("g", N0, [A])
    assert of(out, PullObject) == []
    assert wake(out).failed[0][1].detail("store_capacity_bytes") == "100"


# --- pulls that fail -----------------------------------------------------------------------


def test_failed_pull_retries_from_the_next_holder_then_waits_for_a_timer(s: Story) -> None:
    s.put(A, N1, 10)
    s.get("g2", N2, [A])
    s.copy_to(A, N2)
    out = s.get("g", N0, [A])
    assert of(out, PullObject)[0].source == N1  # type: ignore[attr-defined]
    out = s.send(ObjectPullFailed, obj=A, node=N0, source=N1)
    assert of(out, PullObject)[0].source == N2  # type: ignore[attr-defined]
    out = s.send(ObjectPullFailed, obj=A, node=N0, source=N2)
    timers = of(out, SetTimer)
    assert len(timers) == 1 and of(out, ReportLost) == []  # copies exist: not lost
    timer = timers[0]
    assert isinstance(timer, SetTimer)
    out = s.send(TimerFired, timer=timer.timer)
    assert of(out, PullObject)[0].source == N1  # type: ignore[attr-defined]
    assert s.d.stats["pull_failures"] == 2


def test_a_late_answer_for_a_pull_no_longer_in_flight_is_dropped_and_counted(s: Story) -> None:
    s.put(A, N1, 10)
    s.get("g", N0, [A])
    s.send(ObjectPullFailed, obj=A, node=N0, source=N2)
    assert s.d.stats["stale_pull_failed"] == 1
    out = s.copy_to(A, N2)  # nobody pulled it there
    assert [c.reason for c in of(out, DeleteCopy)] == ["copy not expected (no pull in flight)"]  # type: ignore[attr-defined]


# --- node death, faults, loss ----------------------------------------------------------------


def test_node_death_with_another_copy_promotes_the_lowest_id_secondary(s: Story) -> None:
    s.put(A, N0, 10)
    for node in (N2, N1):
        s.get(f"g{node}", node, [A])
        s.copy_to(A, node)
    out = s.send(NodeDied, node=N0, incarnation=1)
    assert out == []
    assert s.d.primary(A) == N1
    assert s.d.locations(A) == (N1, N2)
    assert s.d.stats["promotions"] == 1


def test_node_death_with_no_copy_left_reports_lost_only_when_needed(s: Story) -> None:
    s.put(A, N0, 10)
    assert s.send(NodeDied, node=N0, incarnation=1) == []  # lazy: nobody needs it yet
    assert s.d.status(A) is ObjectStatus.LOST
    out = s.get("g", N1, [A])
    assert out == [ReportLost(stimulus_id=out[0].stimulus_id, obj=A)]
    assert s.get("g2", N2, [A]) == []  # once per loss


def test_losing_an_object_a_waiter_is_pulling_reports_it_at_once(s: Story) -> None:
    s.put(A, N0, 10)
    s.get("g", N1, [A])
    out = s.send(NodeDied, node=N0, incarnation=1)
    assert of(out, ReportLost) == [ReportLost(stimulus_id=out[0].stimulus_id, obj=A)]
    assert s.d.is_waiting("g")


def test_a_recreated_object_wakes_the_waiters(s: Story) -> None:
    s.put(A, N0, 10)
    s.send(NodeDied, node=N0, incarnation=1)
    s.get("g", N1, [A], fetch=False)
    out = s.finish(N2, (A, 10))  # the resubmitted task finished elsewhere
    assert wake(out).ready == (A,)
    assert s.d.primary(A) == N2
    s.send(NodeDied, node=N2, incarnation=1)
    assert of(s.get("g3", N1, [A]), ReportLost)  # a new loss is reported again


def test_fail_object_wakes_the_waiters_with_the_failure(s: Story) -> None:
    s.put(A, N0, 10)
    s.send(NodeDied, node=N0, incarnation=1)
    s.get("g", N1, [A, B], required=2, fetch=False)
    lost = failure(ErrorKind.OBJECT_LOST, "put objects cannot be rebuilt", object=A)
    assert s.send(ObjectFailed, obj=A, failure=lost) == []  # still waits for B
    out = s.finish(N1, (B, 5))
    assert wake(out) == WakeWaiter(stimulus_id=out[0].stimulus_id, waiter="g", ready=(B,), failed=((A, lost),))


def test_fail_object_of_an_object_with_a_value_is_ignored_and_counted(s: Story) -> None:
    s.put(A, N0, 10)
    s.send(ObjectFailed, obj=A, failure=failure(ErrorKind.OBJECT_LOST, "late"))
    assert s.d.status(A) is ObjectStatus.AVAILABLE
    assert s.d.stats["fail_ignored_available"] == 1


def test_copies_evicted_by_a_fault_are_forgotten_and_refetched(s: Story) -> None:
    s.put(A, N1, 10)
    s.get("g0", N0, [A])
    s.copy_to(A, N0)
    s.send(CopiesEvicted, node=N0, objects=(A,))
    assert s.d.locations(A) == (N1,)
    assert of(s.get("g1", N0, [A]), PullObject)


def test_error_values_of_failed_tasks_are_stored_objects(s: Story) -> None:
    s.get("g", N0, [A], fetch=False)
    out = s.send(
        TaskFailed, task=TaskID("t"), attempt=1, node=N1, worker=WorkerID("w"), return_sizes=((A, 3),)
    )
    assert wake(out).ready == (A,)


def test_stale_node_died_is_dropped_and_counted(s: Story) -> None:
    s.put(A, N0, 10)
    s.send(NodeDied, node=N0, incarnation=1)
    s.join(N0, inc=2)
    s.put(B, N0, 10)
    assert s.send(NodeDied, node=N0, incarnation=1) == []
    assert s.d.stats["stale_node_died"] == 1
    assert s.d.locations(B) == (N0,)
    assert s.d.node_alive(N0)


def test_a_higher_incarnation_starts_with_an_empty_store(s: Story) -> None:
    s.put(A, N0, 10)
    s.join(N0, inc=2)  # it restarted before the failure detector noticed
    assert s.d.locations(A) == ()
    assert s.d.used_bytes(N0) == 0
    assert s.d.status(A) is ObjectStatus.LOST
    assert s.d.stats["implicit_node_deaths"] == 1


def test_results_reported_by_a_dead_node_are_dropped_and_counted(s: Story) -> None:
    s.send(NodeDied, node=N0, incarnation=1)
    assert s.finish(N0, (A, 10)) == []
    assert s.d.status(A) is None
    assert s.d.stats["stale_task_result"] == 1


def test_a_fetch_waiter_on_a_node_that_dies_is_dropped(s: Story) -> None:
    s.put(A, N1, 10)
    s.get("g", N0, [A])
    s.send(NodeDied, node=N0, incarnation=1)
    assert not s.d.is_waiting("g")
    assert s.d.pulls_in_flight(A) == ()
    assert s.d.stats["waiters_dropped_node_died"] == 1


# --- freeing ---------------------------------------------------------------------------------


def test_free_object_deletes_every_copy_and_a_later_request_reports_it_lost(s: Story) -> None:
    s.put(A, N0, 60)
    s.get("g", N1, [A])
    s.copy_to(A, N1)
    s.put(B, N0, 60)  # A's primary spilled on N0
    out = s.send(ObjectFreed, obj=A)
    assert sorted((c.node, c.reason) for c in of(out, DeleteCopy)) == [  # type: ignore[attr-defined]
        (N0, "freed"),
        (N1, "freed"),
    ]
    assert s.d.status(A) is ObjectStatus.FREED
    assert s.d.used_bytes(N1) == 0
    # Ray: the owner kept A's lineage, so a later request makes it lost again
    # and the owner decides (rebuild it, or fail it).
    out = s.get("late", N2, [A])
    assert not of(out, WakeWaiter)
    assert [c.obj for c in of(out, ReportLost)] == [A]  # type: ignore[attr-defined]
    assert s.d.status(A) is ObjectStatus.LOST


def test_a_waiter_waiting_when_freed_fails_as_freed_and_a_rebuilt_object_wakes_later_ones(s: Story) -> None:
    assert not of(s.get("early", N1, [A]), WakeWaiter)
    woken = wake(s.send(ObjectFreed, obj=A))
    assert woken.waiter == "early"
    assert woken.failed[0][1].detail("reason") == "freed"
    # Satisfied at once (nothing required): a freed object is only not ready there.
    assert wake(s.get("none", N1, [A], 0)).failed == ()
    assert s.d.status(A) is ObjectStatus.FREED
    out = s.get("late", N1, [A])
    assert [c.obj for c in of(out, ReportLost)] == [A]  # type: ignore[attr-defined]
    woken = wake(s.finish(N1, (A, 10)))  # the owner rebuilt it
    assert woken.waiter == "late" and s.d.status(A) is ObjectStatus.AVAILABLE


def test_an_object_created_after_it_was_freed_is_deleted_on_arrival(s: Story) -> None:
    s.send(ObjectFreed, obj=A)
    out = s.finish(N0, (A, 10))
    assert [c.reason for c in of(out, DeleteCopy)] == ["freed before it was stored"]  # type: ignore[attr-defined]
    assert s.d.used_bytes(N0) == 0


# --- access order ----------------------------------------------------------------------------


def test_an_access_refreshes_lru_order(s: Story) -> None:
    for obj in (A, B):
        s.put(obj, N1, 40)
        s.get(f"g{obj}", N0, [obj])
        s.copy_to(obj, N0)
    s.get("touch-A", N0, [A])  # B is now the least recently used
    s.put(C, N0, 30)
    assert s.d.locations(B) == (N1,)
    assert s.d.locations(A) == (N0, N1)


# --- router helpers, queries, story ------------------------------------------------------------


def test_fetch_arguments_round_trip_through_the_router_helpers(s: Story) -> None:
    s.put(A, N1, 10)
    command = FetchArguments(stimulus_id="x", task=TaskID("t9"), attempt=2, node=N0, objects=(A, A))
    event = D.fetch_request(command, now=1.0)
    assert event.waiter == "fetch:t9:2:node-00000" and event.fetch
    assert of(s.d.handle(event), PullObject)
    out = s.copy_to(A, N0)
    fetched = D.arguments_fetched(wake(out), now=2.0)
    assert fetched is not None
    assert (fetched.task, fetched.attempt, fetched.node, fetched.failure) == (TaskID("t9"), 2, N0, None)
    assert D.arguments_fetched(WakeWaiter(stimulus_id="y", waiter="task:t9", ready=()), now=0) is None


def test_request_objects_becomes_an_existence_request() -> None:
    command = RequestObjects(stimulus_id="x", waiter="task:t1", node=N0, objects=(A, B))
    event = D.existence_request(command, now=1.0)
    assert (event.fetch, event.num_required, event.waiter) == (False, 2, "task:t1")


def test_bytes_by_node_is_the_locality_hint(s: Story) -> None:
    s.put(A, N1, 10)
    s.put(B, N1, 20)
    s.put(C, N0, 5)
    s.get("g", N2, [A])
    s.copy_to(A, N2)
    assert s.d.bytes_by_node([A, B, C, A]) == ((N0, 5), (N1, 30), (N2, 10))


def test_story_tells_an_objects_history(s: Story) -> None:
    s.put(A, N0, 10)
    s.send(NodeDied, node=N0, incarnation=1)
    lines = s.d.story(A)
    assert any("pending -> available" in line for line in lines)
    assert any("available -> lost" in line for line in lines)


def test_an_impossible_transition_raises_with_the_story() -> None:
    d = ObjectDirectory()
    rec = D._Object(obj=A, status=ObjectStatus.FAILED)
    with pytest.raises(InvalidTransition):
        d._set_status(rec, ObjectStatus.AVAILABLE, "impossible")


def test_every_status_is_in_the_transition_table_and_only_freed_is_terminal() -> None:
    used = {state for pair in D.TRANSITIONS for state in pair}
    assert used == set(ObjectStatus)
    sources = {source for source, _ in D.TRANSITIONS}
    assert set(ObjectStatus) - sources == {ObjectStatus.FREED}


def test_unknown_event_types_are_refused() -> None:
    with pytest.raises(TypeError):
        ObjectDirectory().handle(Event(now=0.0, stimulus_id="x"))


def test_owner_death_drops_every_copy_and_readers_get_owner_died(s: Story) -> None:
    s.put(A, N0, 60)
    s.get("g", N1, [A])
    s.copy_to(A, N1)
    died = failure(ErrorKind.OWNER_DIED, "owner driver died")
    out = s.send(ObjectFailed, obj=A, failure=died)
    assert sorted((c.node, c.reason) for c in of(out, DeleteCopy)) == [  # type: ignore[attr-defined]
        (N0, "owner died"),
        (N1, "owner died"),
    ]
    assert s.d.status(A) is ObjectStatus.FAILED
    assert s.d.used_bytes(N0) == s.d.used_bytes(N1) == 0
    woken = wake(s.get("late", N2, [A]))
    assert woken.failed[0][1].kind is ErrorKind.OWNER_DIED


def test_other_failures_never_overwrite_a_value(s: Story) -> None:
    s.put(A, N0, 60)
    out = s.send(ObjectFailed, obj=A, failure=failure(ErrorKind.WORKER_CRASHED, "late duplicate"))
    assert out == []
    assert s.d.status(A) is ObjectStatus.AVAILABLE


# --- admission: an argument fetch waits for room (Ray's pull admission control) ------------------


@pytest.fixture
def r(s: Story) -> Story:
    """N0 with a store of 100 bytes; N1 and N2 with room to spare (sources of pulls)."""
    s.join(N1, 1000, inc=2)
    s.join(N2, 1000, inc=2)
    return s


def fetch_id(task: str, node: NodeID = N0) -> str:
    return D.fetch_waiter_id(TaskID(task), 1, node)


def fetch_args(s: Story, task: str, objects: Sequence[ObjectID], node: NodeID = N0) -> list[Command]:
    """What the router makes of the scheduler's FetchArguments for attempt 1 of ``task``."""
    command = FetchArguments(stimulus_id="fetch", task=TaskID(task), attempt=1, node=node, objects=tuple(objects))
    event = D.fetch_request(command, now=float(s.step))
    return s.get(event.waiter, node, list(event.objects))


def release(s: Story, task: str, node: NodeID = N0) -> list[Command]:
    """What the router makes of the scheduler's ReleaseArguments (the attempt left)."""
    command = ReleaseArguments(stimulus_id="release", task=TaskID(task), attempt=1, node=node)
    return s.send(WaiterCancelled, waiter=D.argument_release(command, now=float(s.step)).waiter)


def test_a_fetch_waits_while_held_arguments_fill_the_store_and_is_admitted_when_a_hold_is_released(
    r: Story,
) -> None:
    s = r
    s.put(A, N1, 60)
    s.put(B, N1, 60)
    fetch_args(s, "t1", [A])
    assert wake(s.copy_to(A, N0)).waiter == fetch_id("t1")  # t1 holds A (60 of 100) until it leaves
    out = fetch_args(s, "t2", [B])  # 60 + 60 > 100: t2 waits, pulls nothing, fails nothing
    assert out == []
    assert s.d.fetch_state(fetch_id("t2")) is D.FetchState.WAITING_FOR_ROOM
    assert s.d.waiting_for_room(N0) == (fetch_id("t2"),) and s.d.is_waiting(fetch_id("t2"))
    out = release(s, "t1")  # t1 finished: its hold goes, t2 is admitted and pulls
    assert out == [PullObject(stimulus_id=f"s{s.step}", obj=B, source=N1, node=N0, size_bytes=60)]
    assert s.d.fetch_state(fetch_id("t2")) is D.FetchState.ADMITTED and s.d.waiting_for_room(N0) == ()
    out = s.copy_to(B, N0)  # A (unheld now) is evicted to make room
    assert [c.obj for c in of(out, DeleteCopy)] == [A]  # type: ignore[attr-defined]
    assert wake(out).ready == (B,) and s.d.held_arguments(fetch_id("t2")) == (B,)


def test_three_spilled_results_reach_three_consumers_one_after_another(r: Story) -> None:
    s = r
    """The reproducer: one node, three results of 60 in a store of 100, three consumers."""
    for obj in (A, B, C):
        s.put(obj, N0, 60)  # each new one spills the one before
    assert [s.d.copy_state(o, N0) for o in (A, B, C)] == [CopyState.SPILLED, CopyState.SPILLED, CopyState.IN_MEMORY]
    assert wake(fetch_args(s, "c3", [C])).ready == (C,)  # local: answered at once, held
    assert fetch_args(s, "c1", [A]) == [] and fetch_args(s, "c2", [B]) == []  # both wait: nothing restored
    assert s.d.waiting_for_room(N0) == (fetch_id("c1"), fetch_id("c2"))
    out = release(s, "c3")
    assert [(type(c).__name__, c.obj) for c in out] == [("RestoreObject", A)]  # type: ignore[attr-defined]
    out = s.send(ObjectRestored, obj=A, node=N0)  # C (unheld) spills to make room
    assert [c.obj for c in of(out, SpillObject)] == [C]  # type: ignore[attr-defined]
    assert wake(out).waiter == fetch_id("c1")
    assert s.d.waiting_for_room(N0) == (fetch_id("c2"),)
    out = release(s, "c1")
    assert [c.obj for c in of(out, RestoreObject)] == [B]  # type: ignore[attr-defined]
    assert wake(s.send(ObjectRestored, obj=B, node=N0)).waiter == fetch_id("c2")
    assert s.d.stats["restores_without_room"] == 0


def test_an_argument_fetch_larger_than_the_store_fails_at_once_naming_the_sizes(r: Story) -> None:
    s = r
    s.put(A, N1, 60)
    s.put(B, N1, 50)
    out = fetch_args(s, "big", [A, B])  # 110 bytes together, store of 100
    assert of(out, PullObject) == []
    woken = wake(out)
    assert woken.ready == () and [obj for obj, _ in woken.failed] == [A, B]
    why = woken.failed[0][1]
    assert why.kind is ErrorKind.OBJECT_STORE_FULL
    assert (why.detail("arguments_bytes"), why.detail("store_capacity_bytes")) == ("110", "100")
    assert "110 bytes" in why.message and "100 bytes" in why.message and "never" in why.message
    assert s.d.fetch_state(fetch_id("big")) is None and s.d.waiting_for_room(N0) == ()
    fetched = D.arguments_fetched(woken, now=0.0)
    assert fetched is not None and fetched.failure == why  # the scheduler reports it unschedulable


def test_a_single_argument_larger_than_the_store_fails_at_once(r: Story) -> None:
    s = r
    s.join(N2, 1000, inc=2)
    s.put(A, N2, 500)
    woken = wake(fetch_args(s, "t", [A]))
    why = woken.failed[0][1]
    assert why.kind is ErrorKind.OBJECT_STORE_FULL and why.detail("object_size_bytes") == "500"
    assert "larger than the object store" in why.message and "spill" not in why.message


def test_argument_fetches_are_admitted_in_arrival_order(r: Story) -> None:
    s = r
    s.put(A, N1, 70)
    s.put(B, N1, 80)
    s.put(C, N1, 10)
    fetch_args(s, "first", [A])
    wake(s.copy_to(A, N0))  # 70 held
    assert fetch_args(s, "big", [B]) == []  # 70 + 80 > 100: waits
    assert fetch_args(s, "small", [C]) == []  # 70 + 10 fits, but it may not overtake "big"
    assert s.d.waiting_for_room(N0) == (fetch_id("big"), fetch_id("small"))
    out = release(s, "first")  # room for big (80); small (10) follows at once: 80 + 10 <= 100
    assert [c.obj for c in of(out, PullObject)] == [B, C]  # type: ignore[attr-defined]
    assert s.d.waiting_for_room(N0) == ()


def test_a_fetch_waiting_for_room_holds_nothing_and_pulls_nothing(r: Story) -> None:
    s = r
    s.put(A, N1, 60)
    s.put(B, N1, 30)
    s.put(C, N0, 30)  # a local primary
    fetch_args(s, "t1", [A])
    wake(s.copy_to(A, N0))  # 60 held + C 30 unheld
    assert fetch_args(s, "t2", [C, B]) == []  # 60 + 30 + 30 > 100: waits, though C is local
    assert s.d.fetch_state(fetch_id("t2")) is D.FetchState.WAITING_FOR_ROOM
    assert s.d.pinned_bytes(N0) == 60  # C is not held by the waiting fetch: it may spill
    out = s.put(ObjectID("t.r4"), N0, 40)  # needs room: C spills (unheld), A stays
    assert [c.obj for c in of(out, SpillObject)] == [C]  # type: ignore[attr-defined]
    assert s.d.waiting_for_room(N0) == (fetch_id("t2"),)


def test_cancelling_the_head_of_the_line_lets_the_next_one_in(r: Story) -> None:
    s = r
    s.put(A, N1, 60)
    s.put(B, N1, 50)
    s.put(C, N1, 30)
    fetch_args(s, "t1", [A])
    wake(s.copy_to(A, N0))
    fetch_args(s, "t2", [B])
    fetch_args(s, "t3", [C])
    out = release(s, "t2")  # withdrawn while waiting: never woken
    assert of(out, WakeWaiter) == [] and not s.d.is_waiting(fetch_id("t2"))
    assert [c.obj for c in of(out, PullObject)] == [C]  # type: ignore[attr-defined]


def test_a_lost_argument_of_a_waiting_fetch_is_reported_at_once(r: Story) -> None:
    s = r
    s.put(A, N1, 60)
    s.put(B, N1, 60)
    fetch_args(s, "t1", [A])
    wake(s.copy_to(A, N0))
    fetch_args(s, "t2", [B])  # waits for room
    out = s.send(NodeDied, node=N1, incarnation=2)  # B's only copy goes
    assert of(out, ReportLost) == [ReportLost(stimulus_id=f"s{s.step}", obj=B)]  # rebuilding starts now
    out = s.finish(N2, (B, 60))  # rebuilt elsewhere: still no room on N0, nothing pulled
    assert of(out, PullObject) == [] and s.d.waiting_for_room(N0) == (fetch_id("t2"),)
    assert [c.obj for c in of(release(s, "t1"), PullObject)] == [B]  # type: ignore[attr-defined]


def test_a_failed_argument_answers_a_waiting_fetch(r: Story) -> None:
    s = r
    s.put(A, N1, 60)
    s.put(B, N1, 60)
    fetch_args(s, "t1", [A])
    wake(s.copy_to(A, N0))
    fetch_args(s, "t2", [B])
    out = s.send(ObjectFailed, obj=B, failure=failure(ErrorKind.OWNER_DIED, "owner died"))
    assert wake(out).failed[0][1].kind is ErrorKind.OWNER_DIED
    assert s.d.waiting_for_room(N0) == () and s.d.fetch_state(fetch_id("t2")) is None


def test_an_admitted_fetch_whose_copy_finds_no_room_goes_back_in_line(r: Story) -> None:
    s = r
    s.put(A, N1, 60)
    s.put(B, N1, 60)
    s.put(C, N2, 50)
    fetch_args(s, "t1", [A])  # admitted: 60 fits, A is pulled
    s.get("get:1", N0, [B, C])  # a get is not queued: B and C are pulled at once
    s.copy_to(B, N0)  # the get holds B (60) while C is on its way
    out = s.copy_to(A, N0)  # 60 held + 60 > 100: A is not kept, t1 goes back in line
    assert [c.reason for c in of(out, DeleteCopy)] == ["no room for a secondary copy"]  # type: ignore[attr-defined]
    assert of(out, WakeWaiter) == []  # no failure: it waits
    assert s.d.fetch_state(fetch_id("t1")) is D.FetchState.WAITING_FOR_ROOM
    assert s.d.stats["fetches_sent_back"] == 1
    out = s.copy_to(C, N0)  # no room for C beside the held B: the get fails C and lets go of B
    woken = wake(out)
    assert woken.waiter == "get:1" and woken.failed[0][0] == C
    assert of(out, PullObject) == [PullObject(stimulus_id=f"s{s.step}", obj=A, source=N1, node=N0, size_bytes=60)]
    assert s.d.fetch_state(fetch_id("t1")) is D.FetchState.ADMITTED  # readmitted: A is pulled again


def test_on_a_node_that_cannot_spill_a_fetch_that_cannot_fit_beside_the_primaries_fails(r: Story) -> None:
    s = r
    s.join(N0, 100, spill=False, inc=2)
    s.put(A, N0, 70)  # a primary in scope: stays in memory, cannot spill
    s.put(B, N1, 40)
    woken = wake(fetch_args(s, "t", [B]))
    why = woken.failed[0][1]
    assert why.kind is ErrorKind.OBJECT_STORE_FULL and why.detail("spill_enabled") == "False"
    assert why.detail("pinned_bytes") == "70" and "spilling is disabled" in why.message


def test_the_line_is_bounded(r: Story) -> None:
    s = r
    s.d = ObjectDirectory(waiting_for_room_max=2)
    s.join(N0, 100, inc=3)
    s.join(N1, 1000, inc=3)
    s.put(A, N1, 60)
    s.put(B, N1, 60)
    fetch_args(s, "t1", [A])
    fetch_args(s, "t2", [B])  # two fetches on N0 now: t1 pulling, t2 in line
    assert s.d.waiting_for_room(N0) == (fetch_id("t2"),)
    why = wake(fetch_args(s, "t3", [B])).failed[0][1]
    assert why.kind is ErrorKind.OBJECT_STORE_FULL and why.detail("waiting_fetches") == "2"
    assert s.d.waiting_for_room(N0) == (fetch_id("t2"),)


def test_a_restore_for_a_fetch_elsewhere_waits_for_room_on_the_home_node(r: Story) -> None:
    s = r
    s.join(N1, 100, inc=3)
    s.put(A, N1, 60)
    s.put(B, N1, 60)  # A spilled on N1
    fetch_args(s, "t1", [B], node=N1)  # B held on N1: no room there to read A back
    out = s.get("g", N2, [A])
    assert of(out, RestoreObject) == [] and s.d.is_waiting("g")
    out = release(s, "t1", node=N1)
    assert [(c.obj, c.node) for c in of(out, RestoreObject)] == [(A, N1)]  # type: ignore[attr-defined]
    out = s.send(ObjectRestored, obj=A, node=N1)
    assert [c.node for c in of(out, PullObject)] == [N2]  # type: ignore[attr-defined]


def test_a_get_still_fails_when_its_copy_finds_no_room_and_says_why(r: Story) -> None:
    s = r
    s.put(A, N1, 60)
    s.put(B, N1, 60)
    fetch_args(s, "t1", [A])
    wake(s.copy_to(A, N0))
    s.get("get:1", N0, [B])  # gets are not queued (Ray gives them priority)
    why = wake(s.copy_to(B, N0)).failed[0][1]
    assert why.kind is ErrorKind.OBJECT_STORE_FULL and why.detail("spill_enabled") == "True"
    assert "neither evicted nor spilled" in why.message and "disabled" not in why.message


def test_every_fetch_state_is_in_the_fetch_table() -> None:
    used = {state for pair in D.FETCH_TRANSITIONS for state in pair}
    assert used == set(D.FetchState)
    sources = {source for source, _ in D.FETCH_TRANSITIONS}
    assert set(D.FetchState) - sources == {D.FetchState.DONE}


# --- admission, under random orders: a tiny model of room on one node ----------------------------

from hypothesis import HealthCheck, settings  # noqa: E402  (the stateful part of this file)
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule  # noqa: E402

ROOM_SIZES = {
    ObjectID("a.r1"): 10,
    ObjectID("a.r2"): 20,
    ObjectID("a.r3"): 30,
    ObjectID("a.r4"): 50,
    ObjectID("a.r5"): 70,
    ObjectID("a.r6"): 130,
}
"""Arguments made on N1 (plenty of room there); N0's store is small."""
LOCAL_SIZES = {ObjectID("p.r1"): 20, ObjectID("p.r2"): 40, ObjectID("p.r3"): 60}
"""Results made on N0 itself (primaries competing for its room)."""
LINE_MAX = 6


class AdmissionMachine(RuleBasedStateMachine):
    """Argument fetches, gets and new results competing for N0's room. Checked after
    every step: the directory's own invariants (among them: the head of a line never
    fits, the counters match the copies), a fetch fails only when its arguments can
    never fit together (or the line is full), and a fetch leaves the line only when
    no older one is still in it. At the end everything in flight lands and every
    attempt leaves: then no fetch may be left waiting (nothing waits forever)."""

    def __init__(self) -> None:
        super().__init__()
        self.d = ObjectDirectory(waiting_for_room_max=LINE_MAX)
        self.step = 0
        self.capacity = 100
        self.pulls: list[tuple[ObjectID, NodeID]] = []
        self.restores: list[tuple[ObjectID, NodeID]] = []
        self.arrival: dict[str, int] = {}
        self.args_of: dict[str, tuple[ObjectID, ...]] = {}
        self.woken: dict[str, WakeWaiter] = {}
        self.gets: list[str] = []
        self.line_before: tuple[str, ...] = ()

    def send(self, event_type: type[Event], **fields: object) -> list[Command]:
        self.step += 1
        self.line_before = self.d.waiting_for_room(N0)
        event = event_type(now=float(self.step), stimulus_id=f"s{self.step}", **fields)
        out = self.d.handle(event)
        for command in out:
            assert command.stimulus_id == event.stimulus_id
            if isinstance(command, PullObject):
                self.pulls.append((command.obj, command.node))
            elif isinstance(command, RestoreObject):
                self.restores.append((command.obj, command.node))
            elif isinstance(command, WakeWaiter):
                assert command.waiter not in self.woken, f"{command.waiter} woken twice"
                self.woken[command.waiter] = command
                self.check_failures(command)
        self.check_line_order()
        return out

    def check_failures(self, wake: WakeWaiter) -> None:
        for obj, why in wake.failed:
            assert why.kind is ErrorKind.OBJECT_STORE_FULL, (wake.waiter, why)
            if not wake.waiter.startswith("fetch:"):
                continue  # a get may fail for want of room now (it is not queued)
            total = sum(ROOM_SIZES.get(o, LOCAL_SIZES.get(o, 0)) for o in self.args_of[wake.waiter])
            never = total > self.capacity or why.detail("waiting_fetches") is not None
            assert never, f"{wake.waiter} failed though {total} bytes fit in {self.capacity}: {why}"

    def check_line_order(self) -> None:
        line = self.d.waiting_for_room(N0)
        for wid in self.line_before:
            state = self.d.fetch_state(wid)
            if wid in line or state not in (D.FetchState.ADMITTED, D.FetchState.HOLDING):
                continue
            if wid in self.woken and self.woken[wid].failed:
                continue
            older = [w for w in line if self.arrival[w] < self.arrival[wid]]
            assert not older, f"{wid} left the line while older {older} still wait"

    @initialize(capacity=st.sampled_from([60, 100, 150]))
    def start(self, capacity: int) -> None:
        self.capacity = capacity
        for node, room in ((N0, capacity), (N1, 10_000)):
            self.send(NodeJoined, node=node, incarnation=1, resources={}, object_store_bytes=room, spill_enabled=True)
        for obj, size in ROOM_SIZES.items():
            self.send(ObjectPut, obj=obj, node=N1, size_bytes=size, owner=OWNER)

    @rule(args=st.lists(st.sampled_from([*ROOM_SIZES, *LOCAL_SIZES]), min_size=1, max_size=3))
    def fetch(self, args: list[ObjectID]) -> None:
        waiter = fetch_id(f"t{self.step}")
        self.arrival[waiter] = self.step
        self.args_of[waiter] = tuple(dict.fromkeys(args))
        line_before = self.d.waiting_for_room(N0)
        self.send(ObjectsRequested, waiter=waiter, node=N0, objects=tuple(args), num_required=len(args), fetch=True)
        if line_before and waiter not in self.woken:
            assert self.d.fetch_state(waiter) is D.FetchState.WAITING_FOR_ROOM, "overtook the line"

    @rule(args=st.lists(st.sampled_from(list(ROOM_SIZES)), min_size=1, max_size=2))
    def get(self, args: list[ObjectID]) -> None:
        waiter = f"get:{self.step}"
        self.gets.append(waiter)
        self.send(ObjectsRequested, waiter=waiter, node=N0, objects=tuple(args), num_required=len(args), fetch=True)

    @rule(obj=st.sampled_from(list(LOCAL_SIZES)))
    def result_on_n0(self, obj: ObjectID) -> None:
        self.send(TaskFinished, task=TaskID("p"), attempt=1, node=N0, worker=WorkerID("w"),
                  return_sizes=((obj, LOCAL_SIZES[obj]),))

    @rule(pick=st.integers(min_value=0, max_value=100))
    def land(self, pick: int) -> None:
        if self.pulls:
            obj, node = self.pulls.pop(pick % len(self.pulls))
            self.send(ObjectCopied, obj=obj, node=node)
        elif self.restores:
            obj, node = self.restores.pop(pick % len(self.restores))
            self.send(ObjectRestored, obj=obj, node=node)

    @rule(pick=st.integers(min_value=0, max_value=100), withdraw=st.booleans())
    def attempt_leaves(self, pick: int, withdraw: bool) -> None:
        """The attempt finishes (its holds go) or is withdrawn while still fetching."""
        if withdraw:
            candidates = [w for w in self.arrival if self.d.is_waiting(w)]
        else:
            candidates = list(self.d.held_fetches())
        if candidates:
            self.send(WaiterCancelled, waiter=candidates[pick % len(candidates)])

    @invariant()
    def indexes_agree(self) -> None:
        self.d.check_invariants()

    def teardown(self) -> None:
        for obj in LOCAL_SIZES:  # the results fetches may still wait for are made
            if self.d.status(obj) is ObjectStatus.PENDING:
                self.result_on_n0(obj)
        for _ in range(500):
            if self.pulls or self.restores:
                self.land(0)
            elif self.d.held_fetches():
                self.send(WaiterCancelled, waiter=self.d.held_fetches()[0])
            else:
                break
            self.d.check_invariants()
        waiting = [w for w in self.arrival if self.d.is_waiting(w)]
        assert not waiting, f"still waiting with nothing in flight and nothing held: {waiting}"
        assert self.d.pinned_bytes(N0) == 0 and self.d.waiting_for_room(N0) == ()


TestAdmissionMachine = AdmissionMachine.TestCase
TestAdmissionMachine.settings = settings(
    max_examples=int(os.environ.get("DETRAY_LONG_EXAMPLES", 150)),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_the_creation_fast_path_does_what_the_general_code_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``_create_for_one_fetch`` fuses the common creation (one fetch waits, here or
    # elsewhere): same commands, stats and stories as the general code, every case.
    def script() -> tuple[list[list[Command]], Story]:
        s = Story()
        s.join(N0, 100)
        s.join(N1, 100)
        s.join(N2, 30, spill=False)
        outs = [
            s.get("g1", N1, [ObjectID(f"o{i}") for i in range(8)]),  # one fetch elsewhere
            s.get("g0", N0, [ObjectID("o8"), ObjectID("o9")]),  # one fetch here
            s.get("g2", N2, [ObjectID("o10")]),  # the creation satisfies it: general
            s.get("e1", N1, [ObjectID("o11")], fetch=False),  # not a fetch: general
            s.get("g3", N2, [ObjectID("o12")]),  # too big for N2: general
        ]
        for i in range(6):
            outs.append(s.finish(N0, (ObjectID(f"o{i}"), 10 + i)))
        outs.append(s.finish(N0, (ObjectID("o6"), 60)))  # needs room on N0: general
        outs.append(s.finish(N0, (ObjectID("o7"), 5), (ObjectID("o8"), 7)))
        outs.append(s.finish(N0, (ObjectID("o9"), 1)))
        outs.append(s.finish(N2, (ObjectID("o10"), 3)))
        outs.append(s.finish(N1, (ObjectID("o11"), 3)))
        outs.append(s.finish(N0, (ObjectID("o12"), 50)))
        return outs, s

    fast_out, fast = script()
    monkeypatch.setattr(ObjectDirectory, "_create_for_one_fetch", lambda *args: False)
    general_out, general = script()
    assert fast_out == general_out
    assert fast.d.stats == general.d.stats
    for key in [*(f"o{i}" for i in range(13)), "g0", "g1", "g2", "g3", "e1"]:
        assert fast.d.story(key) == general.d.story(key)


def test_the_copy_fast_path_does_what_the_general_code_does(monkeypatch: pytest.MonkeyPatch) -> None:
    # ``_copied_for_one_fetch`` fuses the common landing of a pulled copy (one fetch
    # waits for it there, and for more): same commands, stats and stories as the
    # general code, every case.
    def script() -> tuple[list[list[Command]], Story]:
        s = Story()
        s.join(N0, 200)
        s.join(N1, 200)
        s.join(N2, 30)
        objects = [ObjectID(f"o{i}") for i in range(12)]
        outs = [
            s.get("g1", N1, objects[:6]),  # one fetch on N1: fast until the last copy
            s.get("g2", N2, objects[6:9]),  # a small store: the last copies need room
            s.get("g3", N1, objects[9:10]),  # one object: its copy satisfies it (general)
            s.get("g4", N1, objects[10:12]),  # o11 has two waiters (general)
            s.get("g5", N1, objects[11:12], fetch=False),
        ]
        for i, obj in enumerate(objects):
            outs.append(s.finish(N0, (obj, 12 if 6 <= i < 9 else 5 + i)))
        outs.append(s.finish(N2, (ObjectID("o20"), 5)))  # fills N2 a little
        for i in (0, 1, 9, 6, 7, 2, 3, 10, 11, 8, 4, 5):
            outs.append(s.copy_to(objects[i], N2 if 6 <= i < 9 else N1))
        outs.append(s.copy_to(objects[0], N1))  # a duplicate (general)
        return outs, s

    fused = ObjectDirectory._copied_for_one_fetch
    taken: list[str] = []

    def counted(d: ObjectDirectory, rec: Any, node: NodeID) -> bool:
        done = fused(d, rec, node)
        if done:
            taken.append(rec.obj)
        return done

    monkeypatch.setattr(ObjectDirectory, "_copied_for_one_fetch", counted)
    fast_out, fast = script()
    assert taken == ["o0", "o1", "o6", "o7", "o2", "o3", "o10", "o4"]  # the rest: general
    monkeypatch.setattr(ObjectDirectory, "_copied_for_one_fetch", lambda *args: False)
    general_out, general = script()
    assert fast_out == general_out
    assert len(of([c for out in fast_out for c in out], WakeWaiter)) == 5
    assert fast.d.stats == general.d.stats
    for key in [*(f"o{i}" for i in range(12)), "o20", "g1", "g2", "g3", "g4", "g5"]:
        assert fast.d.story(key) == general.d.story(key)
    assert fast.d._story == general.d._story
