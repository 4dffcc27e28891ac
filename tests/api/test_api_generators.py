"""Generators under ``@remote``: with an integer ``num_returns`` a generator yields that many
return values (Ray's rule); without one Ray runs a streaming generator task, which detray
refuses at ``.remote()`` with a ``NotImplementedError`` saying what to do."""

from __future__ import annotations

import pytest

import detray as ray


@ray.remote
def count_to(n):
    for i in range(n):
        yield i


@ray.remote(num_returns=2)
def pair():
    yield "a"
    yield "b"


@ray.remote(num_returns=2)
async def async_pair():
    yield "a"
    yield "b"


def test_a_generator_task_needs_an_integer_num_returns(driver):
    driver.init(num_cpus=2)
    with pytest.raises(NotImplementedError) as refused:
        count_to.remote(3)
    message = str(refused.value)
    assert "count_to() is a generator function" in message
    assert "streaming generator" in message
    assert "count_to.options(num_returns=N)" in message
    with pytest.raises(NotImplementedError, match="count_to"):
        count_to.options(num_returns=None).remote(3)
    # A fixed number of returns makes it a valid task: one ref per yielded value.
    assert ray.get(count_to.options(num_returns=3).remote(3), timeout=60) == [0, 1, 2]
    assert ray.get(pair.remote(), timeout=60) == ["a", "b"]
    assert ray.get(pair.options(name="renamed").remote(), timeout=60) == ["a", "b"]
    # One return is the one yielded value, zero returns runs the body for its effects, and a
    # generator that yields another count than num_returns fails as a list of that length would.
    assert ray.get(count_to.options(num_returns=1).remote(1), timeout=60) == 0
    assert count_to.options(num_returns=0).remote(0) is None
    with pytest.raises(ValueError, match="returned 2 objects, but num_returns=1"):
        ray.get(count_to.options(num_returns=1).remote(2), timeout=60)


def test_an_async_generator_task_is_refused_even_with_num_returns(driver):
    driver.init(num_cpus=2)
    with pytest.raises(NotImplementedError, match=r"async_pair\(\) is an async generator function"):
        async_pair.remote()
    with pytest.raises(NotImplementedError, match="Return a list instead"):
        async_pair.options(num_returns=3).remote()


def test_a_generator_actor_method_needs_an_integer_num_returns(driver):
    driver.init(num_cpus=2)

    @ray.remote
    class Source:
        def values(self, n):
            yield from range(n)

        @ray.method(num_returns=2)
        def two(self):
            yield 1
            yield 2

        def plain(self):
            return "plain"

    source = Source.remote()
    with pytest.raises(NotImplementedError) as refused:
        source.values.remote(3)
    message = str(refused.value)
    assert "Source.values() is a generator function" in message
    assert ".values.options(num_returns=N)" in message
    assert ray.get(source.values.options(num_returns=3).remote(3), timeout=60) == [0, 1, 2]
    assert ray.get(source.two.remote(), timeout=60) == [1, 2]
    assert ray.get(source.plain.remote(), timeout=60) == "plain"

    @ray.remote
    class AsyncSource:
        async def values(self):
            yield 1

    async_source = AsyncSource.remote()
    with pytest.raises(NotImplementedError, match=r"AsyncSource\.values\(\) is an async generator"):
        async_source.values.options(num_returns=1).remote()
