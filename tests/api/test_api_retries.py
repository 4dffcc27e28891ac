"""Retries on application errors: ``retry_exceptions`` and ``max_retries``."""

from __future__ import annotations

import pytest

import detray as ray


class Flaky(Exception):
    pass


@ray.remote
class Attempts:
    def __init__(self):
        self.count = 0

    def next(self):
        self.count += 1
        return self.count

    def total(self):
        return self.count


def flaky_task(**options):
    @ray.remote(**options)
    def flaky(attempts, fail_times, error=Flaky):
        n = ray.get(attempts.next.remote())
        if n <= fail_times:
            raise error(f"attempt {n}")
        return n

    return flaky


def test_retry_exceptions_true_retries_until_success(driver):
    driver.init()
    attempts = Attempts.remote()
    flaky = flaky_task(max_retries=3, retry_exceptions=True)
    assert ray.get(flaky.remote(attempts, 2)) == 3


def test_retries_stop_at_max_retries(driver):
    driver.init()
    attempts = Attempts.remote()
    flaky = flaky_task(max_retries=2, retry_exceptions=True)
    with pytest.raises(Flaky, match="attempt 3"):
        ray.get(flaky.remote(attempts, 10))
    assert ray.get(attempts.total.remote()) == 3


def test_retry_exceptions_can_name_the_retryable_types(driver):
    driver.init()
    attempts = Attempts.remote()
    flaky = flaky_task(max_retries=3, retry_exceptions=[Flaky])
    assert ray.get(flaky.remote(attempts, 1)) == 2
    other = Attempts.remote()
    with pytest.raises(KeyError):
        ray.get(flaky.remote(other, 1, KeyError))
    assert ray.get(other.total.remote()) == 1


def test_actor_methods_can_retry_exceptions(driver):
    driver.init()

    @ray.remote
    class Wobbly:
        def __init__(self):
            self.calls = 0

        @ray.method(retry_exceptions=True, max_task_retries=2)
        def call(self):
            self.calls += 1
            if self.calls < 3:
                raise Flaky("not yet")
            return self.calls

    wobbly = Wobbly.remote()
    assert ray.get(wobbly.call.remote()) == 3
