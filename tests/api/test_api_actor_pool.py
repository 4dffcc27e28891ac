"""``ray.util.ActorPool``: ordered and unordered maps, submit/get_next, timeouts, errors, push/pop_idle."""

from __future__ import annotations

import time

import pytest

import detray as ray
from detray.util import ActorPool


@ray.remote
class Worker:
    def __init__(self, name):
        self.name = name
        self.calls = 0

    def double(self, value):
        self.calls += 1
        return 2 * value

    def nap(self, seconds):
        time.sleep(seconds)
        return seconds

    def who(self, value):
        return self.name, value

    def fail(self, value):
        raise ValueError(f"cannot take {value}")

    def count(self):
        return self.calls


def double(actor, value):
    return actor.double.remote(value)


def test_map_returns_results_in_submission_order_using_every_actor(driver):
    driver.init(num_cpus=4)
    actors = [Worker.remote("a"), Worker.remote("b")]
    pool = ActorPool(actors)
    assert list(pool.map(double, [1, 2, 3, 4, 5])) == [2, 4, 6, 8, 10]
    assert sorted(ray.get([actor.count.remote() for actor in actors])) == [2, 3]
    assert not pool.has_next() and pool.has_free()


def test_map_unordered_yields_the_fast_results_before_the_slow_one(driver):
    driver.init(num_cpus=4)
    actors = [Worker.remote("a"), Worker.remote("b")]
    ray.get([actor.count.remote() for actor in actors])  # both started: the naps begin together
    pool = ActorPool(actors)
    results = list(pool.map_unordered(lambda actor, s: actor.nap.remote(s), [1.0, 0.01, 0.02]))
    assert sorted(results) == [0.01, 0.02, 1.0]
    assert results[-1] == 1.0  # the second actor ran both short naps while the first slept


def test_submit_more_values_than_actors_and_get_them_in_order(driver):
    driver.init(num_cpus=4)
    pool = ActorPool([Worker.remote("a"), Worker.remote("b")])
    for value in range(5):
        pool.submit(double, value)
    assert pool.has_next() and not pool.has_free()  # three submissions wait for an actor
    assert [pool.get_next() for _ in range(5)] == [0, 2, 4, 6, 8]
    assert not pool.has_next() and pool.has_free()
    with pytest.raises(StopIteration):
        pool.get_next()
    with pytest.raises(StopIteration):
        pool.get_next_unordered()
    # map() called while results are still pending drops them: only its own results come out
    pool.submit(double, 100)
    assert list(pool.map(double, [7])) == [14]


def test_get_next_raises_timeout_error_and_can_drop_the_late_result(driver):
    driver.init(num_cpus=4)
    pool = ActorPool([Worker.remote("a")])
    nap = lambda actor, s: actor.nap.remote(s)  # noqa: E731
    pool.submit(nap, 0.5)
    with pytest.raises(TimeoutError):
        pool.get_next(timeout=0.05)
    assert pool.has_next()  # still pending: a later get_next returns it
    assert pool.get_next() == 0.5
    pool.submit(nap, 0.5)
    with pytest.raises(TimeoutError):
        pool.get_next_unordered(timeout=0.05)
    with pytest.raises(TimeoutError, match="has been ignored"):
        pool.get_next(timeout=0.05, ignore_if_timedout=True)
    assert not pool.has_next() and pool.has_free()  # dropped, and its actor is back
    pool.submit(nap, 0.01)
    assert pool.get_next(timeout=30) == 0.01


def test_an_actor_method_error_is_raised_and_the_actor_stays_in_the_pool(driver):
    driver.init(num_cpus=4)
    pool = ActorPool([Worker.remote("a")])
    pool.submit(lambda actor, v: actor.fail.remote(v), 3)
    with pytest.raises(ValueError, match="cannot take 3"):
        pool.get_next()
    assert pool.has_free()
    results = pool.map(lambda actor, v: actor.fail.remote(v) if v == 2 else actor.double.remote(v), [1, 2])
    assert next(results) == 2
    with pytest.raises(ValueError, match="cannot take 2"):
        next(results)
    with pytest.raises(TypeError, match="must return an ObjectRef"):
        pool.submit(lambda actor, v: v, 1)
    assert pool.has_free() and list(pool.map(double, [4])) == [8]


def test_push_and_pop_idle_move_actors_in_and_out_of_the_pool(driver):
    driver.init(num_cpus=4)
    first, second = Worker.remote("first"), Worker.remote("second")
    pool = ActorPool([first])
    who = lambda actor, v: actor.who.remote(v)  # noqa: E731
    pool.submit(who, 1)
    assert pool.pop_idle() is None  # the only actor is busy
    assert pool.get_next() == ("first", 1)
    assert pool.pop_idle() == first
    assert not pool.has_free() and pool.pop_idle() is None
    pool.submit(who, 2)  # no actor: it waits
    assert not pool.has_free()
    pool.push(second)  # the waiting submission starts on it
    assert pool.get_next() == ("second", 2)
    with pytest.raises(ValueError, match="already belongs"):
        pool.push(second)
