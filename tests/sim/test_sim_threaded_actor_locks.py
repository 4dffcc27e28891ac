"""``threading`` locks, events, conditions, semaphores and queues that simulated code
makes are cooperative (``detray.sim.coop``): a threaded actor's call that waits for one
blocks only itself, in virtual time, and a wait nothing can end is a ``DeadlockError``
naming the unit and the holder, never a silent hang of the process."""

from __future__ import annotations

import queue
import threading
import time

import pytest

import detray as ray
from detray.sim import DeadlockError


@ray.remote(max_concurrency=4)
class Cache:
    def __init__(self):
        self.lock = threading.Lock()
        self.data = {}
        self.loads = 0

    def load(self, key):
        with self.lock:
            if key not in self.data:
                time.sleep(0.2)  # a slow load under the lock
                self.loads += 1
                self.data[key] = key * 2
            return self.data[key]

    def loads_done(self):
        return self.loads


def test_a_lock_held_across_a_sleep_serializes_the_calls_that_need_it():
    ray.init(mode="sim", seed=0, num_cpus=2)
    cache = Cache.remote()
    start = time.monotonic()
    assert ray.get([cache.load.remote(i % 2) for i in range(6)], timeout=30) == [0, 2, 0, 2, 0, 2]
    assert ray.get(cache.loads_done.remote()) == 2  # each key loaded once: the lock excluded
    assert 0.4 <= time.monotonic() - start < 0.6  # the two loads one after the other


@ray.remote(max_concurrency=3)
class Mailbox:
    def __init__(self):
        self.items = queue.Queue()
        self.go = threading.Event()
        self.slots = threading.Semaphore(2)
        self.inside = 0
        self.peak = 0

    def take(self, timeout_s=None):
        try:
            return self.items.get(timeout=timeout_s)
        except queue.Empty:
            return "empty"

    def put(self, item):
        self.items.put(item)

    def wait_go(self):
        return self.go.wait(timeout=60)

    def set_go(self):
        self.go.set()

    def limited(self):
        with self.slots:
            self.inside += 1
            self.peak = max(self.peak, self.inside)
            time.sleep(0.5)
            self.inside -= 1
        return self.peak


def test_a_queue_get_waits_for_a_put_from_another_call():
    ray.init(mode="sim", seed=0, num_cpus=2)
    box = Mailbox.remote()
    taken = box.take.remote()
    time.sleep(1.0)
    box.put.remote("parcel")
    assert ray.get(taken, timeout=30) == "parcel"


def test_a_queue_get_with_a_timeout_gives_up_after_that_many_virtual_seconds():
    ray.init(mode="sim", seed=0, num_cpus=2)
    box = Mailbox.remote()
    start = time.monotonic()
    assert ray.get(box.take.remote(2.0), timeout=30) == "empty"
    assert 2.0 <= time.monotonic() - start < 2.1


def test_an_event_set_by_one_call_releases_another_and_a_semaphore_bounds_concurrency():
    ray.init(mode="sim", seed=0, num_cpus=2)
    box = Mailbox.remote()
    waiting = box.wait_go.remote()
    time.sleep(0.5)
    ray.get(box.set_go.remote())
    assert ray.get(waiting, timeout=30) is True
    assert max(ray.get([box.limited.remote() for _ in range(3)], timeout=30)) == 2


@ray.remote(max_concurrency=2)
class Reentrant:
    def __init__(self):
        self.lock = threading.RLock()
        self.log = []

    def hold(self, name, seconds):
        with self.lock:
            with self.lock:  # re-entrant within one call
                self.log.append(f"{name} in")
                time.sleep(seconds)
                self.log.append(f"{name} out")
        return list(self.log)

    def try_for(self, seconds):
        if self.lock.acquire(timeout=seconds):
            self.lock.release()
            return "got it"
        return "gave up"


def test_an_rlock_is_owned_by_one_call_not_by_the_thread_every_unit_shares():
    ray.init(mode="sim", seed=0, num_cpus=2)
    actor = Reentrant.remote()
    first = actor.hold.remote("a", 1.0)
    second = actor.hold.remote("b", 0.1)
    assert ray.get(second, timeout=30) == ["a in", "a out", "b in", "b out"]
    ray.get(first)


def test_a_timed_acquire_gives_up_in_virtual_time_while_another_call_holds_the_lock():
    ray.init(mode="sim", seed=0, num_cpus=2)
    actor = Reentrant.remote()
    holding = actor.hold.remote("a", 5.0)
    time.sleep(0.1)
    start = time.monotonic()
    assert ray.get(actor.try_for.remote(1.0), timeout=30) == "gave up"
    assert 1.0 <= time.monotonic() - start < 1.1
    ray.get(holding)
    assert ray.get(actor.try_for.remote(1.0), timeout=30) == "got it"


@ray.remote(max_concurrency=2)
class Stuck:
    def __init__(self):
        self.lock = threading.Lock()

    def twice(self):
        with self.lock:
            with self.lock:  # a plain Lock is not re-entrant: waits for itself forever
                return "unreachable"

    def leak(self):
        self.lock.acquire()
        return "took it"

    def use(self):
        with self.lock:
            return "used"


def test_a_call_waiting_for_a_lock_it_holds_is_a_deadlock_naming_the_actor():
    ray.init(mode="sim", seed=0, num_cpus=2)
    stuck = Stuck.remote()
    with pytest.raises(DeadlockError) as raised:
        ray.get(stuck.twice.remote())  # no timeout: nothing else can happen
    message = str(raised.value)
    assert "Stuck pid=" in message
    assert "waits for a threading lock (made at" in message and "test_sim_threaded_actor_locks.py" in message
    assert "it holds itself (a Lock is not re-entrant)" in message


def test_an_event_nobody_sets_is_a_deadlock_naming_where_the_call_waits():
    @ray.remote
    def waits_forever():
        threading.Event().wait()

    ray.init(mode="sim", seed=0, num_cpus=1)
    with pytest.raises(DeadlockError) as raised:
        ray.get(waits_forever.remote())
    message = str(raised.value)
    assert "waits_forever pid=" in message
    assert "in a threading Condition's wait" in message and "test_sim_threaded_actor_locks.py" in message


def test_a_lock_a_finished_call_never_released_is_a_deadlock_naming_that_call():
    ray.init(mode="sim", seed=0, num_cpus=2)
    stuck = Stuck.remote()
    assert ray.get(stuck.leak.remote()) == "took it"
    with pytest.raises(DeadlockError, match=r"held by unit Stuck pid=\d+.*finished, it never released it"):
        ray.get(stuck.use.remote())


def test_killing_an_actor_whose_calls_wait_for_a_lock_ends_them_cleanly():
    ray.init(mode="sim", seed=0, num_cpus=2)
    actor = Reentrant.remote()
    holding = actor.hold.remote("a", 10.0)
    waiting = actor.hold.remote("b", 0.1)
    time.sleep(1.0)
    ray.kill(actor)
    for ref in (holding, waiting):
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(ref, timeout=30)
    assert ray.available_resources()["CPU"] == 2.0


def test_a_task_that_starts_a_real_thread_and_waits_on_its_queue_still_works():
    def produce(results):
        time.sleep(0.05)  # real time: a user thread is not simulated
        results.put(sum(range(10)))

    @ray.remote
    def with_thread():
        results = queue.Queue()
        worker = threading.Thread(target=produce, args=(results,))
        worker.start()
        value = results.get(timeout=5)  # a real wait: the user thread puts it
        worker.join()
        return value

    ray.init(mode="sim", seed=0, num_cpus=1)
    assert ray.get(with_thread.remote(), timeout=30) == 45


def test_only_locks_made_by_simulated_code_are_cooperative():
    made_before = threading.Lock()
    ray.init(mode="sim", seed=0, num_cpus=1)

    @ray.remote
    def kinds():
        return repr(threading.Lock()), repr(threading.RLock())

    lock_repr, rlock_repr = ray.get(kinds.remote())
    assert "cooperative _thread.lock" in lock_repr and "cooperative _thread.RLock" in rlock_repr
    assert "cooperative" in repr(threading.Lock())  # the driver is simulated code too
    from_thread = []
    thread = threading.Thread(target=lambda: from_thread.append(repr(threading.Lock())))
    thread.start()
    thread.join()
    assert from_thread[0].startswith("<unlocked _thread.lock")  # a user thread's are real
    ray.shutdown()
    assert "cooperative" not in repr(made_before) + repr(threading.Lock()) + repr(threading.RLock())


def test_a_cooperative_lock_refuses_pickling_as_a_real_one_does():
    ray.init(mode="sim", seed=0, num_cpus=1)
    with pytest.raises(TypeError, match=r"value\['lock'\] .* cannot pickle '_thread.lock' object"):
        ray.put({"lock": threading.Lock()})
    with pytest.raises(TypeError, match=r"cannot pickle '_thread.RLock' object"):
        ray.put(threading.RLock())


@pytest.mark.parametrize("args", [(False, 1), (True, -2), (True, "x"), (True, 1e300), (False, -1), (True, 0.5)])
def test_a_cooperative_lock_checks_acquire_arguments_as_a_real_one(args):
    from detray.sim import coop

    def outcome(lock):
        try:
            return lock.acquire(*args)
        except (TypeError, ValueError, OverflowError) as error:
            return f"{type(error).__name__}: {error}"

    assert outcome(coop.CoopLock()) == outcome(threading._allocate_lock())  # noqa: SLF001
    assert outcome(coop.CoopRLock()) == outcome(threading._CRLock())  # noqa: SLF001
