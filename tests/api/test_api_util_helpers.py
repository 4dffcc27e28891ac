"""``ray.util.as_completed`` and ``ray.util.map_unordered``: results as they finish, in batches."""

from __future__ import annotations

import time

import pytest

import detray as ray


@ray.remote
def nap(seconds):
    time.sleep(seconds)
    return seconds


@ray.remote
def explode(value):
    raise ValueError(f"no {value}")


@ray.remote
class Gauge:
    """Counts the tasks running at once."""

    def __init__(self):
        self.running = 0
        self.peak = 0

    def enter(self):
        self.running += 1
        self.peak = max(self.peak, self.running)

    def leave(self):
        self.running -= 1

    def get_peak(self):
        return self.peak


@ray.remote
def gauged(item):
    gauge, value = item
    ray.get(gauge.enter.remote())
    time.sleep(0.05)
    ray.get(gauge.leave.remote())
    return value


def test_as_completed_yields_the_fast_results_first(driver):
    driver.init(num_cpus=4)
    slow = nap.remote(2.0)
    fast = [nap.remote(0.0), nap.remote(0.01)]
    results = ray.util.as_completed([slow, *fast], chunk_size=1)
    assert {next(results), next(results)} == {0.0, 0.01}
    assert ray.wait([slow], timeout=0)[0] == []  # yielded while the slow one still ran
    assert list(results) == [2.0]
    refs = [nap.remote(0.0), nap.remote(0.0)]
    yielded = list(ray.util.as_completed(refs, yield_obj_refs=True))
    assert sorted(yielded, key=refs.index) == refs


def test_as_completed_with_a_timeout_lets_a_partial_batch_out_early(driver):
    driver.init(num_cpus=4)
    slow, fast = nap.remote(2.0), nap.remote(0.0)
    results = ray.util.as_completed([slow, fast], chunk_size=2, timeout=0.1)
    assert next(results) == 0.0  # a batch of 2 would have waited for the slow one
    assert ray.wait([slow], timeout=0)[0] == []
    assert next(results) == 2.0


def test_map_unordered_keeps_at_most_backpressure_size_tasks_in_flight(driver):
    driver.init(num_cpus=4)
    gauge = Gauge.remote()
    items = [(gauge, value) for value in range(6)]
    results = ray.util.map_unordered(gauged, items, backpressure_size=2, chunk_size=1)
    assert sorted(results) == list(range(6))
    assert ray.get(gauge.get_peak.remote()) <= 2
    assert sorted(ray.util.map_unordered(nap, [0.0, 0.01], backpressure_size=None)) == [0.0, 0.01]


def test_a_task_error_is_raised_when_its_result_comes_out(driver):
    driver.init(num_cpus=4)
    with pytest.raises(ValueError, match="no 3"):
        list(ray.util.map_unordered(explode, [3]))
    with pytest.raises(ValueError, match="no 4"):
        list(ray.util.as_completed([explode.remote(4)]))


def test_bad_arguments_are_refused_when_the_iterator_is_made():
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        ray.util.as_completed([], chunk_size=0)
    with pytest.raises(ValueError, match="instead of num_returns"):
        ray.util.as_completed([], num_returns=2)
    with pytest.raises(TypeError, match="list of ObjectRef"):
        ray.util.as_completed([1, 2])
    with pytest.raises(TypeError, match="remote function"):
        ray.util.map_unordered(lambda x: x, [1])
    with pytest.raises(ValueError, match="backpressure_size must be positive"):
        ray.util.map_unordered(nap, [1], backpressure_size=0)
    with pytest.raises(TypeError, match="unexpected keyword"):
        ray.util.map_unordered(nap, [1], num_cpus=1)
    assert list(ray.util.as_completed([])) == []
