"""``ObjectRef.future()`` with ``concurrent.futures`` in simulated code: waiting on a
future blocks the caller in virtual time (its lock and event are cooperative, see
``detray.sim.coop``), so ``as_completed``, ``wait`` and ``result(timeout=)`` work
as with Ray, in completion order, deterministically."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

import detray as ray
import detray.sim
from detray.sim import DeadlockError


@ray.remote
def after(delay_s, value):
    time.sleep(delay_s)
    return value


@ray.remote
def fails_after(delay_s):
    time.sleep(delay_s)
    raise ValueError("boom")


def test_as_completed_yields_futures_in_virtual_completion_order():
    ray.init(mode="sim", seed=0, num_cpus=4)
    start = time.monotonic()
    refs = [after.remote(delay, name) for delay, name in ((3.0, "c"), (1.0, "a"), (2.0, "b"))]
    futures = [ref.future() for ref in refs]
    assert time.monotonic() == start  # making a future does not wait
    order = []
    for future in concurrent.futures.as_completed(futures):
        order.append((future.result(), round(time.monotonic() - start)))
    assert order == [("a", 1), ("b", 2), ("c", 3)]


def test_result_with_a_timeout_counts_virtual_seconds_then_returns_the_value():
    ray.init(mode="sim", seed=0, num_cpus=1)
    future = after.remote(2.0, 42).future()
    start = time.monotonic()
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.5)
    assert time.monotonic() - start == pytest.approx(0.5, abs=1e-3)
    assert future.result(timeout=10) == 42
    assert time.monotonic() - start == pytest.approx(2.0, abs=0.01)


def test_as_completed_with_a_timeout_raises_in_virtual_time():
    ray.init(mode="sim", seed=0, num_cpus=2)
    futures = [after.remote(1.0, "soon").future(), after.remote(100.0, "late").future()]
    start = time.monotonic()
    seen = []
    with pytest.raises(concurrent.futures.TimeoutError):
        for future in concurrent.futures.as_completed(futures, timeout=5):
            seen.append(future.result())
    assert seen == ["soon"]
    assert time.monotonic() - start == pytest.approx(5.0, abs=1e-3)


def test_wait_first_completed_and_a_failed_task_raises_its_error_from_result():
    ray.init(mode="sim", seed=0, num_cpus=2)
    failing = fails_after.remote(0.5).future()
    slow = after.remote(3.0, "slow").future()
    done, pending = concurrent.futures.wait([failing, slow], return_when=concurrent.futures.FIRST_COMPLETED)
    assert done == {failing} and pending == {slow}
    with pytest.raises(ValueError, match="boom"):
        failing.result()
    assert isinstance(failing.exception(), ray.exceptions.RayTaskError)
    done, pending = concurrent.futures.wait([failing, slow])
    assert not pending and slow.result() == "slow"


def test_a_task_can_wait_on_a_future_of_its_child():
    @ray.remote
    def parent():
        return after.remote(1.0, "child").future().result(timeout=30) + "!"

    ray.init(mode="sim", seed=0, num_cpus=2)
    assert ray.get(parent.remote()) == "child!"


def _as_completed_digest() -> tuple[list[str], str]:
    ray.init(mode="sim", seed=3, num_cpus=3)
    refs = [after.remote(0.1 * (i % 4), i) for i in range(12)]
    order = [future.result() for future in concurrent.futures.as_completed([ref.future() for ref in refs])]
    digest = detray.sim.current_cluster().trace.digest()
    ray.shutdown()
    return order, digest


def test_the_same_seed_gives_the_same_completion_order_and_trace():
    first = _as_completed_digest()
    assert first == _as_completed_digest()
    assert sorted(first[0]) == list(range(12))


def test_waiting_on_a_future_that_can_never_complete_is_a_deadlock_naming_its_object():
    @ray.remote(resources={"missing": 1})
    def never():
        return 0

    ray.init(mode="sim", seed=0, num_cpus=1)
    ref = never.remote()
    with pytest.raises(DeadlockError) as raised:
        ref.future().result()  # no timeout: nothing else can happen
    message = str(raised.value)
    assert "the driver waits at" in message and "test_sim_futures.py" in message
    assert f"a future() waits for {ref.hex()}: its task" in message and "infeasible" in message
