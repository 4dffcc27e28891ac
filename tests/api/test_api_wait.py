"""``wait``: ready and not-ready lists, order, counts, timeouts."""

from __future__ import annotations

import time

import pytest

import detray as ray


@ray.remote
def after(seconds, value):
    time.sleep(seconds)
    return value


def test_wait_returns_the_first_ready_and_keeps_input_order(driver):
    driver.init(num_cpus=4)
    refs = [after.remote(0.6, "slow"), after.remote(0.0, "fast"), after.remote(0.05, "medium")]
    ready, not_ready = ray.wait(refs, num_returns=2)
    assert ready == [refs[1], refs[2]]
    assert not_ready == [refs[0]]


def test_wait_for_all_returns_everything(driver):
    driver.init()
    refs = [after.remote(0.0, i) for i in range(5)]
    ready, not_ready = ray.wait(refs, num_returns=5)
    assert ready == refs and not_ready == []


def test_wait_with_a_timeout_returns_what_is_ready(driver):
    driver.init()
    refs = [after.remote(0.0, 1), after.remote(30, 2)]
    ray.get(refs[0])
    ready, not_ready = ray.wait(refs, num_returns=2, timeout=0.2)
    assert ready == [refs[0]] and not_ready == [refs[1]]
    ray.cancel(refs[1], force=True)


def test_wait_with_timeout_zero_does_not_block(driver):
    driver.init()
    slow = after.remote(30, 1)
    done = ray.put(2)
    ready, not_ready = ray.wait([slow, done], timeout=0)
    assert ready == [done] and not_ready == [slow]
    ray.cancel(slow, force=True)


def test_a_failed_object_counts_as_ready(driver):
    driver.init()

    @ray.remote
    def fail():
        raise ValueError("no")

    ref = fail.remote()
    ready, _ = ray.wait([ref])
    assert ready == [ref]
    with pytest.raises(ValueError):
        ray.get(ref)


def test_wait_rejects_bad_arguments(driver):
    driver.init()
    ref = ray.put(1)
    with pytest.raises(ValueError):
        ray.wait([ref, ref])
    with pytest.raises(ValueError):
        ray.wait([ref], num_returns=2)
    with pytest.raises(TypeError):
        ray.wait(ref)
