"""``os._exit`` in simulated user code: in a task or an actor it is the death of that
worker process (as the ``KillWorker`` fault), never the end of the simulating process;
in the driver it ends the real process, as it would under Ray."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap

import pytest

import detray as ray
import detray.sim


@ray.remote
class Counter:
    def __init__(self):
        self.n = 0

    def hit(self):
        self.n += 1
        return self.n


@ray.remote(max_restarts=1)
class Fragile:
    def __init__(self):
        self.calls = 0

    def incr(self):
        self.calls += 1
        return self.calls

    def die(self, code):
        os._exit(code)


def test_an_actor_calling_os_exit_is_restarted_once_then_dies():
    ray.init(mode="sim", seed=0, num_cpus=2)
    actor = Fragile.remote()
    assert ray.get(actor.incr.remote()) == 1
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.die.remote(0))
    assert ray.get(actor.incr.remote()) == 1  # restarted: its constructor ran again
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.die.remote(3))
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(actor.incr.remote())  # max_restarts=1 is used up: dead for good
    lines = detray.sim.current_cluster().trace.lines
    assert sum("worker.died" in line and "os._exit(" in line for line in lines) == 2
    assert any("actor.restarting" in line for line in lines)


def test_a_task_calling_os_exit_on_its_first_attempt_is_retried_and_returns():
    @ray.remote(max_retries=2)
    def crash_first(counter):
        if ray.get(counter.hit.remote()) == 1:
            os._exit(1)
        return "recovered"

    ray.init(mode="sim", seed=0, num_cpus=2)
    counter = Counter.remote()
    assert ray.get(crash_first.remote(counter)) == "recovered"
    assert ray.get(counter.hit.remote()) == 3  # two attempts hit it, then this call


def test_a_task_calling_os_exit_without_retries_raises_worker_crashed_and_the_driver_goes_on():
    @ray.remote(max_retries=0)
    def crash():
        try:
            os._exit(7)
        finally:
            ray.put("discarded")  # its worker is gone: the call is refused, not run

    @ray.remote
    def fine():
        return 2

    ray.init(mode="sim", seed=0, num_cpus=2)
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        ray.get(crash.remote())
    assert ray.get(fine.remote()) == 2
    assert ray.available_resources()["CPU"] == 2.0


@ray.remote
class DiesInInit:
    def __init__(self):
        os._exit(2)

    def ping(self):
        return 1


@ray.remote
class AsyncDies:
    async def die(self):
        os._exit(1)


def test_os_exit_in_a_constructor_or_an_async_method_kills_the_actor_quietly(capfd):
    ray.init(mode="sim", seed=0, num_cpus=2)
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(DiesInInit.remote().ping.remote())
    with pytest.raises(ray.exceptions.RayActorError):
        ray.get(AsyncDies.remote().die.remote())
    ray.shutdown()
    gc.collect()
    assert "never retrieved" not in capfd.readouterr().err  # the killed call's asyncio task is read


def test_os_exit_rejects_what_the_real_one_rejects_inside_a_task():
    @ray.remote(max_retries=0)
    def bad_code():
        os._exit("nope")

    ray.init(mode="sim", seed=0, num_cpus=1)
    with pytest.raises(TypeError, match="integer"):
        ray.get(bad_code.remote())


def _run(script: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120, env=env
    )


def test_a_program_whose_tasks_and_actors_call_os_exit_runs_to_its_end_and_exits_zero():
    done = _run(
        """
        import os
        import detray as ray

        @ray.remote(max_restarts=0)
        class A:
            def die(self):
                os._exit(0)

        @ray.remote(max_retries=0)
        def crash():
            os._exit(0)

        ray.init(mode="sim", num_cpus=2)
        try:
            ray.get(A.remote().die.remote())
        except ray.exceptions.RayActorError:
            print("actor died")
        try:
            ray.get(crash.remote())
        except ray.exceptions.WorkerCrashedError:
            print("task crashed")
        ray.shutdown()
        print("end of program")
        """
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["actor died", "task crashed", "end of program"]


def test_os_exit_in_the_driver_ends_the_process_with_its_code():
    done = _run(
        """
        import os
        import detray as ray

        ray.init(mode="sim", num_cpus=1)
        os._exit(5)
        print("never printed")
        """
    )
    assert done.returncode == 5, done.stderr
    assert "never printed" not in done.stdout
