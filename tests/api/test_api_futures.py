"""``ObjectRef.future()``: a ``concurrent.futures.Future`` for a ref, usable with the
standard library's ``as_completed``, ``wait`` and ``result(timeout=)``."""

from __future__ import annotations

import concurrent.futures
import time

import pytest

import detray as ray


@ray.remote
def after(delay_s, value):
    time.sleep(delay_s)
    return value


@ray.remote
def fails():
    raise KeyError("missing")


def test_futures_complete_in_completion_order_with_their_values(driver):
    driver.init(num_cpus=3)
    futures = [after.remote(delay, value).future() for delay, value in ((1.0, "slow"), (0.05, "fast"), (0.5, "mid"))]
    assert all(isinstance(f, concurrent.futures.Future) for f in futures)
    done = [f.result() for f in concurrent.futures.as_completed(futures, timeout=60)]
    assert done == ["fast", "mid", "slow"]


def test_a_future_times_out_then_gives_its_value_and_carries_a_task_error(driver):
    driver.init(num_cpus=2)
    future = after.remote(1.0, 7).future()
    with pytest.raises(concurrent.futures.TimeoutError):
        future.result(timeout=0.1)
    assert future.result(timeout=60) == 7
    failed = fails.remote().future()
    finished, _ = concurrent.futures.wait([failed], timeout=60)
    assert finished == {failed}
    assert isinstance(failed.exception(), KeyError)
