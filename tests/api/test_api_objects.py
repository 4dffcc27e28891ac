"""Objects: put, get, copies, numpy, timeouts, and failed objects."""

from __future__ import annotations

import time

import numpy as np
import pytest

import detray as ray


def test_put_then_get_gives_an_equal_copy(driver):
    driver.init()
    value = {"a": [1, 2, 3], "b": "text"}
    ref = ray.put(value)
    got = ray.get(ref)
    assert got == value and got is not value


def test_changing_the_original_after_put_does_not_change_the_object(driver):
    driver.init()
    array = np.arange(1000.0)
    ref = ray.put(array)
    array[0] = -1.0
    assert ray.get(ref)[0] == 0.0


def test_numpy_from_get_is_read_only_so_the_object_cannot_change(driver):
    driver.init()
    ref = ray.put(np.zeros(10))
    got = ray.get(ref)
    assert not got.flags.writeable
    with pytest.raises(ValueError):
        got[0] = 1.0
    assert ray.get(ref)[0] == 0.0


def test_large_objects_round_trip(driver):
    driver.init()
    big = np.random.default_rng(0).integers(0, 255, size=2_000_000, dtype=np.uint8)

    @ray.remote
    def checksum(a):
        return int(a.sum())

    ref = ray.put(big)
    assert ray.get(checksum.remote(ref)) == int(big.sum())
    assert ray.get(checksum.remote(big)) == int(big.sum())  # a large argument goes through the store


def test_get_of_a_list_keeps_order_and_repeats(driver):
    driver.init()
    a, b = ray.put(1), ray.put(2)
    assert ray.get([b, a, b]) == [2, 1, 2]


def test_get_with_a_timeout_raises_get_timeout_error(driver):
    driver.init()

    @ray.remote
    def slow():
        time.sleep(30)

    ref = slow.remote()
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(ref, timeout=0.1)
    with pytest.raises(TimeoutError):
        ray.get(ref, timeout=0)
    ray.cancel(ref, force=True)


def test_put_of_an_unpicklable_value_fails_naming_it(driver):
    import threading

    driver.init()
    with pytest.raises(TypeError, match="lock"):
        ray.put({"lock": threading.Lock()})


def test_get_raises_the_first_failed_object_in_list_order(driver):
    driver.init()

    @ray.remote
    def fail(message):
        raise KeyError(message)

    ok = ray.put(1)
    first = fail.remote("first")
    second = fail.remote("second")
    with pytest.raises(KeyError, match="first"):
        ray.get([ok, first, second])


def test_object_ref_basics(driver):
    driver.init()
    ref = ray.put(1)
    assert ref == ref and len({ref, ref}) == 1
    assert isinstance(ref.hex(), str) and ref.hex() in repr(ref)
    with pytest.raises(TypeError):
        ray.put(ref)


def test_future_of_a_ref(driver):
    driver.init()
    ref = ray.put(41)
    assert ref.future().result(timeout=10) == 41
