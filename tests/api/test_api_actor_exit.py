"""Intentional actor exit: ``exit_actor()``, ``__ray_terminate__``, and ``kill(no_restart=False)``."""

from __future__ import annotations

import asyncio
import time

import pytest

import detray as ray
from detray.actor import exit_actor
from detray.exceptions import RayActorError

GET_TIMEOUT_S = 60


@ray.remote(max_restarts=2)
class Counter:
    def __init__(self):
        self.value = 0

    def incr(self):
        self.value += 1
        return self.value

    def leave(self):
        exit_actor()
        return "unreachable"

    def restarted(self):
        return ray.get_runtime_context().was_current_actor_reconstructed


@ray.remote
class AsyncWorker:
    async def slow(self, seconds):
        await asyncio.sleep(seconds)
        return seconds

    async def leave(self):
        ray.actor.exit_actor()


@ray.remote(max_concurrency=2)
class ThreadedWorker:
    def slow(self, seconds):
        time.sleep(seconds)
        return seconds

    def leave(self):
        ray.actor.exit_actor()


def _actor_error(ref):
    with pytest.raises(RayActorError) as info:
        ray.get(ref, timeout=GET_TIMEOUT_S)
    return str(info.value)


def test_exit_actor_ends_a_sync_actor_for_good_and_fails_its_calls(driver):
    driver.init()
    assert ray.actor.exit_actor is exit_actor  # ``ray.actor`` is detray.actor
    counter = Counter.options(name="leaver").remote()
    assert ray.get(counter.incr.remote(), timeout=GET_TIMEOUT_S) == 1
    leaving = counter.leave.remote()
    queued = counter.incr.remote()
    # The call that exits sees the actor's death, not its return value; so does the queued one.
    message = _actor_error(leaving)
    assert "exit_actor()" in message and "intentionally" in message
    assert "exit_actor()" in _actor_error(queued)
    # max_restarts=2 does not bring it back: later calls fail too, and its name is free.
    assert "intentionally" in _actor_error(counter.incr.remote())
    with pytest.raises(ValueError):
        ray.get_actor("leaver")


@pytest.mark.parametrize("cls", [AsyncWorker, ThreadedWorker], ids=["async", "threaded"])
def test_a_concurrent_actor_finishes_its_running_calls_then_exits(driver, cls):
    driver.init()
    worker = cls.remote()
    assert ray.get(worker.slow.remote(0), timeout=GET_TIMEOUT_S) == 0
    running = worker.slow.remote(0.5)
    leaving = worker.leave.remote()
    assert "exit_actor()" in _actor_error(leaving)
    # The call already running when the actor asked to exit completes with its value.
    assert ray.get(running, timeout=GET_TIMEOUT_S) == 0.5
    assert "intentionally" in _actor_error(worker.slow.remote(0))


def test_ray_terminate_lets_earlier_calls_finish_then_ends_the_actor(driver):
    driver.init()
    counter = Counter.remote()
    earlier = [counter.incr.remote() for _ in range(3)]
    terminate = counter.__ray_terminate__.remote()
    later = counter.incr.remote()
    assert ray.get(earlier, timeout=GET_TIMEOUT_S) == [1, 2, 3]
    _actor_error(terminate)
    assert "intentionally" in _actor_error(later)
    assert ray.get(Counter.remote().__ray_ready__.remote(), timeout=GET_TIMEOUT_S) is True


def test_an_exited_actor_gives_its_resources_back(driver):
    driver.init(num_cpus=1)
    first = Counter.options(num_cpus=1).remote()
    _actor_error(first.leave.remote())
    second = Counter.options(num_cpus=1).remote()  # needs the only CPU
    assert ray.get(second.incr.remote(), timeout=GET_TIMEOUT_S) == 1


def test_kill_allowing_restart_restarts_with_fresh_state_while_restarts_remain(driver):
    driver.init()
    counter = Counter.options(max_restarts=1).remote()
    assert ray.get([counter.incr.remote(), counter.incr.remote()], timeout=GET_TIMEOUT_S) == [1, 2]
    assert ray.get(counter.restarted.remote(), timeout=GET_TIMEOUT_S) is False
    ray.kill(counter, no_restart=False)
    assert ray.get(counter.incr.remote(), timeout=GET_TIMEOUT_S) == 1  # the constructor ran again
    assert ray.get(counter.restarted.remote(), timeout=GET_TIMEOUT_S) is True
    ray.kill(counter, no_restart=False)  # no restart left
    message = _actor_error(counter.incr.remote())
    assert "kill" in message and "intentionally" not in message


@ray.remote
def exit_from_a_task():
    exit_actor()


def test_exit_actor_outside_an_actor_raises_type_error(driver):
    with pytest.raises(TypeError, match="exit_actor API is called on a non-actor worker"):
        exit_actor()  # before init: no runtime at all
    driver.init()
    with pytest.raises(TypeError, match="non-actor worker"):
        exit_actor()
    with pytest.raises(TypeError, match="non-actor worker"):
        ray.get(exit_from_a_task.remote(), timeout=GET_TIMEOUT_S)


@ray.remote
class Tidy:
    def __init__(self, path):
        import atexit

        atexit.register(lambda: open(path, "w").write("bye"))

    def leave(self):
        exit_actor()


def test_an_intentional_exit_runs_the_actors_atexit_handlers(driver, tmp_path):
    if driver.mode == "sim":
        pytest.skip("the simulator runs every actor in one interpreter: atexit is per process")
    driver.init()
    path = tmp_path / "atexit.txt"
    _actor_error(Tidy.remote(str(path)).leave.remote())
    deadline = time.monotonic() + GET_TIMEOUT_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists() and path.read_text() == "bye"
