"""A non-forced ``ray.cancel`` of a running normal task raises ``KeyboardInterrupt`` in
its code, as Ray documents, wherever it waits (a sleep, a ``get``, a threading lock), so
its ``except KeyboardInterrupt:`` cleanup runs; the caller's ``get`` raises
``TaskCancelledError``."""

from __future__ import annotations

import threading
import time

import pytest

import detray as ray
import detray.sim


@ray.remote
class Log:
    def __init__(self):
        self.lines = []

    def add(self, line):
        self.lines.append(line)

    def read(self):
        return list(self.lines)


@ray.remote(resources={"missing": 1})
def never():
    return 0


@ray.remote(max_retries=3)
def waits_in(how, log):
    try:
        if how == "sleep":
            time.sleep(1e6)
        elif how == "get":
            ray.get(never.remote())
        else:
            threading.Event().wait()
    except KeyboardInterrupt:
        ray.get(log.add.remote(f"{how}: KeyboardInterrupt"))
        raise
    except BaseException as other:  # noqa: BLE001 -- the test reports what arrived instead
        ray.get(log.add.remote(f"{how}: {type(other).__name__}"))
        raise


@pytest.mark.parametrize("how", ["sleep", "get", "event"])
def test_a_running_task_sees_keyboard_interrupt_and_its_caller_task_cancelled(how):
    ray.init(mode="sim", seed=0, num_cpus=2)
    log = Log.remote()
    ref = waits_in.remote(how, log)
    time.sleep(1.0)
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref)
    assert ray.get(log.read.remote()) == [f"{how}: KeyboardInterrupt"]  # once: a cancel is not retried
    failed = [line for line in detray.sim.current_cluster().trace.lines if "task.failed" in line]
    assert len(failed) == 1 and "TaskCancelledError" in failed[0]


def test_the_cleanup_of_a_cancelled_task_runs_and_its_cpu_comes_back():
    @ray.remote
    def with_cleanup(log):
        try:
            time.sleep(1e6)
        finally:
            ray.get(log.add.remote("cleaned up"))

    ray.init(mode="sim", seed=0, num_cpus=1)
    log = Log.remote()
    ref = with_cleanup.remote(log)
    time.sleep(0.5)
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref)
    assert ray.get(log.read.remote()) == ["cleaned up"]
    assert ray.available_resources()["CPU"] == 1.0
