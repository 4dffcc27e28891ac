"""``ray.util.queue``: a queue shared by tasks and actors, its limits, timeouts, batches, shutdown."""

from __future__ import annotations

import queue as stdlib_queue
import time

import pytest

import detray as ray
from detray.util.queue import Empty, Full, Queue


@ray.remote
def produce(q, items):
    for item in items:
        q.put(item)
    return len(items)


@ray.remote
def consume(q, count):
    return [q.get(timeout=30) for _ in range(count)]


@ray.remote
def consume_forever(q, started):
    started.put("waiting")
    return q.get()  # no timeout: only the queue's shutdown ends it


def test_the_queue_module_is_provided_with_ray_names():
    import detray.util.queue as module

    assert ray.util.queue is module and hasattr(ray.util, "queue")
    assert ray.util.queue.Queue is Queue
    assert issubclass(Empty, stdlib_queue.Empty) and issubclass(Full, stdlib_queue.Full)
    assert "ray.util.queue" not in ray.NOT_IMPLEMENTED


def test_a_producer_task_and_a_consumer_task_pass_items_in_order(driver):
    driver.init(num_cpus=4)
    q = Queue(maxsize=2)  # smaller than the stream: the producer must block and resume
    consumer = consume.remote(q, 6)
    producer = produce.remote(q, list(range(6)))
    assert ray.get([producer, consumer], timeout=60) == [6, [0, 1, 2, 3, 4, 5]]
    assert q.empty() and q.qsize() == 0


def test_a_bounded_queue_refuses_puts_when_full(driver):
    driver.init()
    q = Queue(maxsize=2)
    assert q.empty() and not q.full() and q.size() == 0
    q.put("a")
    q.put_nowait("b")
    assert q.full() and not q.empty() and q.qsize() == 2 and len(q) == 2
    with pytest.raises(Full, match="full"):
        q.put_nowait("c")
    with pytest.raises(stdlib_queue.Full):  # the standard library's type catches it too
        q.put("c", block=False)
    start = time.monotonic()
    with pytest.raises(Full):
        q.put("c", timeout=0.2)
    assert time.monotonic() - start >= 0.2
    assert q.get_nowait() == "a" and not q.full()
    q.put("c", timeout=0)  # room now: no wait needed
    assert [q.get(), q.get()] == ["b", "c"]


def test_get_on_an_empty_queue_raises_empty_after_the_timeout(driver):
    driver.init()
    q = Queue()
    with pytest.raises(Empty, match="empty"):
        q.get_nowait()
    start = time.monotonic()
    with pytest.raises(stdlib_queue.Empty):
        q.get(timeout=0.3)
    waited_s = time.monotonic() - start
    assert 0.3 <= waited_s < 10
    with pytest.raises(ValueError, match="non-negative"):
        q.get(timeout=-1)
    q.put(5)
    assert q.get(timeout=0) == 5
    assert not q.full()  # maxsize 0: unbounded


def test_batches_are_all_or_nothing(driver):
    driver.init()
    q = Queue(maxsize=3)
    q.put_nowait_batch([1, 2])
    with pytest.raises(Full, match="cannot add 2 items"):
        q.put_nowait_batch(iter([3, 4]))
    assert q.qsize() == 2
    with pytest.raises(Empty, match="cannot get 3 items"):
        q.get_nowait_batch(3)
    assert q.qsize() == 2
    assert q.get_nowait_batch(2) == [1, 2]
    assert q.get_nowait_batch(0) == []
    with pytest.raises(TypeError, match="num_items must be an int"):
        q.get_nowait_batch("2")
    with pytest.raises(ValueError, match="non-negative"):
        q.get_nowait_batch(-1)
    with pytest.raises(TypeError, match="iterable"):
        q.put_nowait_batch(7)


def test_async_actors_use_the_queue_with_get_async_and_put_async(driver):
    driver.init()

    @ray.remote
    class Doubler:
        async def relay(self, source, sink, count):
            for _ in range(count):
                await sink.put_async(2 * await source.get_async(timeout=30))
            try:
                await source.get_async(block=False)
            except Empty:
                return count
            return "the source should be empty"

    source, sink = Queue(), Queue()
    source.put_nowait_batch([1, 2, 3])
    assert ray.get(Doubler.remote().relay.remote(source, sink, 3), timeout=60) == 3
    assert sink.get_nowait_batch(3) == [2, 4, 6]


def test_shutdown_kills_the_queue_actor_and_fails_blocked_gets(driver):
    driver.init(num_cpus=2)
    q = Queue(actor_options={"num_cpus": 1})
    started = Queue()
    q.put(0)
    assert ray.available_resources()["CPU"] == 1  # the queue's actor holds one CPU
    assert q.get() == 0
    blocked = consume_forever.remote(q, started)
    assert started.get(timeout=30) == "waiting"
    q.shutdown(grace_period_s=0.2)
    with pytest.raises(ray.exceptions.ActorDiedError):
        ray.get(blocked, timeout=60)
    with pytest.raises(RuntimeError, match="shut down"):
        q.get()
    q.shutdown()  # a second shutdown does nothing
    start = time.monotonic()
    started.shutdown(grace_period_s=30)  # nothing running in it: no grace period to wait
    assert time.monotonic() - start < 10
    deadline = time.monotonic() + 30
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.available_resources()["CPU"] == 2


def test_a_forced_shutdown_kills_the_actor_for_every_copy_of_the_queue(driver):
    driver.init()
    q = Queue()
    q.put("x")
    actor = q.actor  # what a copy of q passed to a task holds
    q.shutdown(force=True)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.qsize.remote(), timeout=60)
    with pytest.raises(RuntimeError, match=r"Queue.put\(\): this queue was shut down"):
        q.put("y")
