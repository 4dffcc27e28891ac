"""``ray.cancel``, held to Ray's documented rule on both drivers.

A normal task that runs gets ``KeyboardInterrupt`` in its code and its caller's
``get`` raises ``TaskCancelledError``. With ``force=True`` its worker is killed
and ``get`` raises ``WorkerCrashedError`` (it is not retried); a task that was
still queued is cancelled (``TaskCancelledError``) and never runs. An actor call that has not started is
cancelled and never runs. One that runs on a regular or threaded actor is not
interrupted (an actor has state): it finishes and its value is returned. One
that runs on an async actor has its asyncio task cancelled.

Calls wait on a ``Gate`` (an async actor holding named events) instead of
sleeping, so "running" and "queued" are facts when the cancel is sent, not
guesses about timing. A held call waits on a ref the driver made (not on a
call of its own: ``ray.cancel`` is recursive by default and would cancel that
child, whose error would then end the call).
"""

from __future__ import annotations

import asyncio
import time

import pytest

import detray as ray
from detray.exceptions import TaskCancelledError, WorkerCrashedError

TIMEOUT_S = 30


@ray.remote
class Gate:
    """Named one-shot events: a call says it started, the driver lets it go on."""

    def __init__(self):
        self.events = {}

    def _event(self, key):
        return self.events.setdefault(key, asyncio.Event())

    async def set(self, key):
        self._event(key).set()

    async def wait(self, key):
        await self._event(key).wait()


@ray.remote
class Log:
    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)

    def items_seen(self):
        return self.items


@ray.remote
class Stateful:
    def __init__(self):
        self.ran = []

    def hold(self, gate, key, release):
        ray.get(gate.set.remote(f"started-{key}"))
        ray.get(release[0])  # a ref in a list: not an argument the call waits for
        self.ran.append(key)
        return key

    def record(self, key):
        self.ran.append(key)
        return key

    def calls_that_ran(self):
        return self.ran


@ray.remote
class AsyncStateful:
    def __init__(self):
        self.seen = []

    async def hold(self, gate):
        await gate.set.remote("started")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.seen.append("CancelledError")
            raise
        return "finished"

    async def seen_so_far(self):
        return self.seen


@pytest.mark.parametrize("max_concurrency", [1, 2], ids=["regular", "threaded"])
def test_a_running_sync_actor_call_runs_on_and_a_queued_one_is_cancelled(driver, max_concurrency):
    driver.init(num_cpus=2)
    gate = Gate.remote()
    actor = Stateful.options(max_concurrency=max_concurrency).remote()
    release = gate.wait.remote("release")
    running = [actor.hold.remote(gate, index, [release]) for index in range(max_concurrency)]
    ray.get([gate.wait.remote(f"started-{index}") for index in range(max_concurrency)], timeout=TIMEOUT_S)
    queued = actor.record.remote("queued")  # every slot of the actor is busy: it waits its turn
    ray.cancel(running[0])
    ray.cancel(queued)
    with pytest.raises(TaskCancelledError):
        ray.get(queued, timeout=TIMEOUT_S)
    time.sleep(0.5)  # the interrupt reaches the running call's worker meanwhile
    ray.get(gate.set.remote("release"))
    assert ray.get(running, timeout=TIMEOUT_S) == list(range(max_concurrency))
    assert sorted(ray.get(actor.calls_that_ran.remote(), timeout=TIMEOUT_S)) == list(range(max_concurrency))


def test_a_running_async_actor_call_is_cancelled_as_an_asyncio_task(driver):
    driver.init(num_cpus=2)
    gate = Gate.remote()
    actor = AsyncStateful.remote()
    call = actor.hold.remote(gate)
    ray.get(gate.wait.remote("started"), timeout=TIMEOUT_S)
    ray.cancel(call)
    with pytest.raises(TaskCancelledError):
        ray.get(call, timeout=TIMEOUT_S)
    assert ray.get(actor.seen_so_far.remote(), timeout=TIMEOUT_S) == ["CancelledError"]  # and it still serves calls


def test_a_running_task_gets_keyboard_interrupt_and_its_caller_task_cancelled(driver):
    driver.init(num_cpus=2)

    @ray.remote
    def interruptible(gate, log):
        ray.get(gate.set.remote("started"))
        try:
            time.sleep(3600)
        except BaseException as exc:
            ray.get(log.add.remote(type(exc).__name__))
            raise
        return "finished"

    gate, log = Gate.remote(), Log.remote()
    ref = interruptible.remote(gate, log)
    ray.get(gate.wait.remote("started"), timeout=TIMEOUT_S)
    ray.cancel(ref)
    with pytest.raises(TaskCancelledError):
        ray.get(ref, timeout=TIMEOUT_S)
    assert ray.get(log.items_seen.remote(), timeout=TIMEOUT_S) == ["KeyboardInterrupt"]


def test_force_cancel_kills_a_running_task_as_a_crash_and_cancels_a_queued_one(driver):
    driver.init(num_cpus=2)

    @ray.remote(num_cpus=2, max_retries=3)
    def occupy_every_cpu(gate, log):
        ray.get(log.add.remote("attempt"))
        ray.get(gate.set.remote("started"))
        time.sleep(3600)
        return "finished"

    @ray.remote(num_cpus=1)
    def queued(log):
        ray.get(log.add.remote("queued ran"))
        return "ran"

    gate, log = Gate.remote(), Log.remote()
    running = occupy_every_cpu.remote(gate, log)
    ray.get(gate.wait.remote("started"), timeout=TIMEOUT_S)
    waiting = queued.remote(log)  # no CPU is free: it waits in the queue
    ray.cancel(waiting, force=True)
    with pytest.raises(TaskCancelledError):
        ray.get(waiting, timeout=TIMEOUT_S)
    ray.cancel(running, force=True)
    with pytest.raises(WorkerCrashedError):
        ray.get(running, timeout=TIMEOUT_S)
    # Not retried (max_retries=3 notwithstanding), and the queued task never ran.
    assert ray.get(log.items_seen.remote(), timeout=TIMEOUT_S) == ["attempt"]
