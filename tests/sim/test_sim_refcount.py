"""Reference counting in the simulator: hooks record, switch points apply, objects are freed
when the last reference goes, nested refs keep their objects, actors out of scope exit."""

from __future__ import annotations

import gc
import time

import detray as ray
import detray.sim
from detray.core.directory import ObjectStatus


@ray.remote
def value(x):
    return x


def status(ref_id: str) -> ObjectStatus | None:
    return detray.sim.current_cluster().router.directory.status(ref_id)


def test_dropping_a_ref_is_recorded_and_applied_at_the_next_switch_point():
    ray.init(mode="sim")
    ref = value.remote("x")
    assert ray.get(ref) == "x"
    object_id = ref.id
    cluster = detray.sim.current_cluster()
    del ref
    assert cluster.ledger.pending()  # recorded only
    assert status(object_id) is ObjectStatus.AVAILABLE
    time.sleep(0)  # a switch point
    assert not cluster.ledger.pending()
    assert status(object_id) in (ObjectStatus.FREED, None)
    assert cluster.values.get(object_id) is None  # the bytes went with it


def test_a_ref_made_and_dropped_in_one_step_still_counts_up_first():
    ray.init(mode="sim", num_cpus=1)
    value.remote("dropped at once")  # never bound: created and dropped before any switch
    kept = value.remote("kept")
    assert ray.get(kept) == "kept"
    stats = detray.sim.current_cluster().router.tasks.stats
    assert stats["refs_removed_unknown"] == 0


def test_refs_nested_in_a_stored_value_keep_their_objects_until_it_is_freed():
    ray.init(mode="sim")
    inner = value.remote("inner")
    inner_id = inner.id
    box = ray.put([inner])
    del inner
    gc.collect()
    time.sleep(0.1)  # the task has finished and the drop was applied
    assert status(inner_id) is ObjectStatus.AVAILABLE  # the box holds it
    (again,) = ray.get(box)
    assert ray.get(again) == "inner"
    del box, again
    gc.collect()
    time.sleep(0)
    assert status(inner_id) in (ObjectStatus.FREED, None)


def test_ref_changes_are_applied_in_object_id_order_adds_first():
    from detray.core.events import RefsAdded, RefsRemoved
    from detray.sim.refs import RefLedger

    ledger = RefLedger()
    for obj in ["b", "a", "c"]:
        ledger.ref_added(obj)
    ledger.ref_removed("a")
    ledger.ref_removed("b")
    events, unknown = ledger.take_ref_events({"a": "w1", "b": "w1", "c": "w0"}.get, now=0.0, stimulus_id="s")
    assert unknown == 0
    assert [(type(e).__name__, e.owner, e.objects) for e in events] == [
        ("RefsAdded", "w0", ("c",)),
        ("RefsAdded", "w1", ("a", "b")),
        ("RefsRemoved", "w1", ("a", "b")),
    ]
    assert isinstance(events[0], RefsAdded) and isinstance(events[-1], RefsRemoved)


def test_an_actor_whose_handles_are_gone_exits_after_its_calls():
    ray.init(mode="sim")

    @ray.remote
    class Temp:
        def slow(self):
            time.sleep(1.0)
            return "done"

    temp = Temp.remote()
    actor_id = temp.actor_id
    result = temp.slow.remote()
    del temp
    gc.collect()
    time.sleep(0)
    actors = detray.sim.current_cluster().router.actors
    assert actors.state(actor_id).name != "DEAD"  # a call is still in flight
    assert ray.get(result) == "done"
    time.sleep(0.1)
    assert actors.state(actor_id).name == "DEAD"


def test_a_detached_actor_outlives_its_handles():
    ray.init(mode="sim")

    @ray.remote
    class Service:
        def ping(self):
            return "pong"

    service = Service.options(name="svc", lifetime="detached").remote()
    actor_id = service.actor_id
    assert ray.get(service.ping.remote()) == "pong"
    del service
    gc.collect()
    time.sleep(0.1)
    assert detray.sim.current_cluster().router.actors.state(actor_id).name == "ALIVE"
    assert ray.get(ray.get_actor("svc").ping.remote()) == "pong"


def test_a_large_argument_is_put_for_the_task_and_freed_after_it():
    ray.init(mode="sim")
    big = b"x" * (200 * 1024)

    @ray.remote
    def size(data):
        return len(data)

    assert ray.get(size.remote(big)) == len(big)
    time.sleep(0.1)
    cluster = detray.sim.current_cluster()
    puts = [line for line in cluster.trace.lines if '"kind":"object.put"' in line]
    assert len(puts) == 1
    put_id = puts[0].split('"obj":"')[1].split('"')[0]
    assert status(put_id) in (ObjectStatus.FREED, None)
