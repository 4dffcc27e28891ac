"""Review of ``detray.sim.coop`` (cooperative threading locks for simulated code): lost
wake-ups, a dying unit's unwinding, and cooperative locks used after the simulation."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import pytest

import detray as ray
from detray.sim import coop

_shared: dict[str, threading.Condition] = {}


def _module() -> Any:
    # This module itself (remote functions may travel by value, with a copy of its globals).
    return sys.modules[__name__]


def _shared_condition() -> threading.Condition:
    # Made lazily inside a unit (as a library's module-level lock first made in a task):
    # one object every simulated worker of the interpreter sees.
    shared = _module()._shared
    if "cond" not in shared:
        shared["cond"] = threading.Condition(threading.Lock())
    return shared["cond"]  # type: ignore[no-any-return]


@ray.remote
def _waits_on_shared_condition():
    cond = _shared_condition()
    with cond:
        cond.wait()
    return "woken"


@ray.remote
def _holds_shared_condition(seconds):
    cond = _shared_condition()
    with cond:
        entered = time.monotonic()
        time.sleep(seconds)
        left = time.monotonic()
    return entered, left


@ray.remote
def _enters_shared_condition():
    cond = _shared_condition()
    with cond:
        return time.monotonic()


def test_a_unit_killed_in_a_condition_wait_does_not_release_the_lock_another_unit_holds():
    _shared.clear()
    ray.init(mode="sim", seed=0, num_cpus=4)
    waiter = _waits_on_shared_condition.remote()
    time.sleep(0.1)  # it waits in the condition (lock released)
    holder = _holds_shared_condition.remote(1.0)
    time.sleep(0.2)  # the holder holds the condition's lock, in its sleep
    ray.cancel(waiter, force=True)  # kills the waiter's worker: its wait unwinds
    time.sleep(0.1)
    third = _enters_shared_condition.remote()
    entered, left = ray.get(holder, timeout=30)  # the holder's own release works
    assert ray.get(third, timeout=30) >= left  # and nobody entered while it held the lock
    with pytest.raises(ray.exceptions.WorkerCrashedError):  # Ray's error for force=True
        ray.get(waiter, timeout=30)
    _shared.clear()


def test_a_release_between_a_real_wait_and_the_cooperative_one_is_not_lost(monkeypatch: pytest.MonkeyPatch):
    # A unit waits in real time while a user thread is alive; the thread releases the lock and
    # ends just as the unit's wait slice times out: the unit must take the free lock, not
    # wait cooperatively for a release that already happened.
    monkeypatch.setattr(coop, "REAL_WAIT_SLICE_S", 0.01)
    checks = []

    @ray.remote
    def unit():
        lock = threading.Lock()
        lock.acquire()
        started = threading.Event()
        thread = threading.Thread(target=started.wait)
        thread.start()
        real_user_threads = coop._user_threads

        def user_threads():
            checks.append(1)
            if len(checks) == 2:  # after the first real slice: the thread releases, then ends
                lock.release()
                started.set()
                thread.join()
            return real_user_threads()

        monkeypatch.setattr(coop, "_user_threads", user_threads)
        got = lock.acquire(timeout=5)
        monkeypatch.setattr(coop, "_user_threads", real_user_threads)
        return got

    ray.init(mode="sim", seed=0, num_cpus=1)
    assert ray.get(unit.remote(), timeout=30) is True


def test_a_lock_a_unit_held_at_shutdown_times_out_afterwards_as_a_real_one():
    ray.init(mode="sim", seed=0, num_cpus=1)
    lock = threading.Lock()  # made in the driver's unit: cooperative
    assert type(lock) is coop.CoopLock
    lock.acquire()
    ray.shutdown()
    assert lock.acquire(timeout=0.05) is False  # held: a timed acquire times out
    lock.release()
    assert lock.acquire(timeout=0.05) is True
    lock.release()


def test_patches_are_undone_at_shutdown_and_init_works_again():
    real = (threading.Lock, threading._allocate_lock, threading.RLock, threading._time)  # type: ignore[attr-defined]
    import queue

    real_queue_time = queue.time
    for _ in range(2):
        ray.init(mode="sim", seed=0, num_cpus=1)
        assert type(threading.Lock()) is coop.CoopLock
        ray.shutdown()
        assert (threading.Lock, threading._allocate_lock, threading.RLock, threading._time) == real  # type: ignore[attr-defined]
        assert queue.time is real_queue_time
        assert type(threading.Lock()) is not coop.CoopLock


@pytest.mark.xfail(
    strict=True,
    reason="needs the loop (cluster.py) to wait in real time for a user thread's release before "
    "calling a wait a deadlock; until then a unit's self-held wait is real while any user thread lives",
)
def test_a_long_lived_background_thread_does_not_stall_a_future_the_loop_completes():
    ray.init(mode="sim", seed=0, num_cpus=1)
    stop = threading.Event()  # made in the driver's unit; the thread waits on it in real time
    idle = threading.Thread(target=stop.wait, daemon=True)  # as a progress bar's monitor thread
    idle.start()
    try:

        @ray.remote
        def one():
            return 1

        started = time.perf_counter()
        # The loop must run to complete it; the driver's wait is real while the thread lives.
        assert one.remote().future().result(timeout=3) == 1
        assert time.perf_counter() - started < 2
    finally:
        stop.set()
        idle.join(timeout=5)


@ray.remote(max_concurrency=2)
class _Guarded:
    def __init__(self):
        self.lock = threading.Lock()

    def hold(self, seconds):
        with self.lock:
            time.sleep(seconds)

    def try_now(self):
        started = time.monotonic()
        got = self.lock.acquire(timeout=0)
        return got, time.monotonic() - started


def test_a_zero_timeout_acquire_only_tries_as_a_real_one_does():
    ray.init(mode="sim", seed=0, num_cpus=1)
    guarded = _Guarded.remote()
    held = guarded.hold.remote(1.0)
    time.sleep(0.1)
    assert ray.get(guarded.try_now.remote(), timeout=30) == (False, 0.0)  # no wait, not even 1 us
    ray.get(held, timeout=30)


_driver_lock: list[threading.Lock] = []


@ray.remote
def _takes_the_driver_lock():
    with _module()._driver_lock[0]:
        return "in"


def test_a_task_waiting_for_a_lock_the_driver_holds_is_a_deadlock_naming_the_driver():
    ray.init(mode="sim", seed=0, num_cpus=1)
    _driver_lock[:] = [threading.Lock()]  # made by the driver's unit: cooperative
    try:
        with _driver_lock[0]:
            with pytest.raises(ray.exceptions.RayError) as caught:  # DeadlockError
                ray.get(_takes_the_driver_lock.remote())  # no timeout: the loop finds the deadlock
        assert "held by the driver" in str(caught.value)
    finally:
        _driver_lock.clear()
