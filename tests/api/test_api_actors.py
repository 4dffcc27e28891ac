"""Actors: state, call order, handles passed around, failures, async and threaded actors."""

from __future__ import annotations

import asyncio
import time

import pytest

import detray as ray


@ray.remote
class Counter:
    def __init__(self, start=0):
        self.value = start

    def incr(self, by=1):
        self.value += by
        return self.value

    def get(self):
        return self.value

    def fail(self):
        raise RuntimeError("method failed")


@ray.remote
def bump(counter, times):
    return ray.get([counter.incr.remote() for _ in range(times)])[-1]


def test_an_actor_keeps_state_between_calls(driver):
    driver.init()
    counter = Counter.remote(10)
    assert ray.get(counter.incr.remote()) == 11
    assert ray.get(counter.incr.remote(5)) == 16
    assert ray.get(counter.get.remote()) == 16


def test_calls_from_one_caller_run_in_submission_order(driver):
    driver.init()
    counter = Counter.remote()
    refs = [counter.incr.remote() for _ in range(50)]
    assert ray.get(refs) == list(range(1, 51))


def test_a_handle_can_be_passed_to_tasks(driver):
    driver.init(num_cpus=4)
    counter = Counter.remote()
    ray.get([bump.remote(counter, 5) for _ in range(3)])
    assert ray.get(counter.get.remote()) == 15


def test_an_actor_method_error_is_raised_and_the_actor_lives_on(driver):
    driver.init()
    counter = Counter.remote()
    with pytest.raises(RuntimeError, match="method failed"):
        ray.get(counter.fail.remote())
    assert ray.get(counter.incr.remote()) == 1


def test_a_failing_constructor_makes_calls_raise_actor_died(driver):
    driver.init()

    @ray.remote
    class Broken:
        def __init__(self):
            raise ValueError("cannot build")

        def ping(self):
            return "pong"

    broken = Broken.remote()
    with pytest.raises(ray.exceptions.RayActorError) as raised:
        ray.get(broken.ping.remote())
    assert "cannot build" in str(raised.value)


def test_kill_makes_later_calls_raise_actor_died(driver):
    driver.init()
    counter = Counter.remote()
    assert ray.get(counter.incr.remote()) == 1
    ray.kill(counter)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(counter.incr.remote())


def test_actor_methods_with_several_returns(driver):
    driver.init()

    @ray.remote
    class Splitter:
        @ray.method(num_returns=2)
        def split(self, pair):
            return pair[0], pair[1]

    splitter = Splitter.remote()
    left, right = splitter.split.remote(("l", "r"))
    assert ray.get([left, right]) == ["l", "r"]


def test_an_actor_sees_its_own_id_in_the_runtime_context(driver):
    driver.init()

    @ray.remote
    class Self:
        def my_id(self):
            return ray.get_runtime_context().get_actor_id()

    actor = Self.remote()
    assert ray.get(actor.my_id.remote()) == actor.actor_id


def test_async_actor_methods_run_concurrently(driver):
    driver.init()

    @ray.remote
    class Sleeper:
        def __init__(self):
            self.order = []

        async def nap(self, name, seconds):
            self.order.append(("start", name))
            await asyncio.sleep(seconds)
            self.order.append(("end", name))
            return name

        async def log(self):
            return self.order

    sleeper = Sleeper.remote()
    assert ray.get(sleeper.log.remote()) == []  # created (on the real runtime, in its own process)
    start = time.monotonic()
    assert ray.get([sleeper.nap.remote("long", 0.4), sleeper.nap.remote("short", 0.1)]) == ["long", "short"]
    assert time.monotonic() - start < 0.8  # concurrent, not 0.5 in a row plus overhead
    log = ray.get(sleeper.log.remote())
    assert log[:2] == [("start", "long"), ("start", "short")]  # the second started before the first ended
    assert log[2:] == [("end", "short"), ("end", "long")]


def test_async_actor_can_await_refs(driver):
    driver.init()

    @ray.remote
    def slow_value(x):
        time.sleep(0.1)
        return x

    @ray.remote
    class Awaiter:
        async def double(self, refs):
            return 2 * await refs[0]

    awaiter = Awaiter.remote()
    assert ray.get(awaiter.double.remote([slow_value.remote(21)])) == 42


def test_async_actor_respects_max_concurrency(driver):
    driver.init()

    @ray.remote(max_concurrency=2)
    class Limited:
        def __init__(self):
            self.running = 0
            self.peak = 0

        async def work(self):
            self.running += 1
            self.peak = max(self.peak, self.running)
            await asyncio.sleep(0.05)
            self.running -= 1
            return self.peak

    limited = Limited.remote()
    assert max(ray.get([limited.work.remote() for _ in range(6)])) == 2


def test_threaded_actor_runs_calls_side_by_side(driver):
    driver.init()

    @ray.remote(max_concurrency=3)
    class Threaded:
        def wait_for(self, seconds):
            time.sleep(seconds)
            return seconds

    threaded = Threaded.remote()
    start = time.monotonic()
    assert ray.get([threaded.wait_for.remote(0.3) for _ in range(3)]) == [0.3] * 3
    assert time.monotonic() - start < 0.85
