"""``cancel(ref, force=True)`` of an actor method call is refused with Ray's ``ValueError``
(killing the worker would kill the actor; ``kill()`` is for that), wherever the ref is."""

from __future__ import annotations

import time

import pytest

import detray as ray


@ray.remote
class Worker:
    def work(self, seconds):
        time.sleep(seconds)
        return seconds


@ray.remote
def force_cancel(refs):
    try:
        ray.cancel(refs[0], force=True)
    except ValueError as error:
        return str(error)
    return "accepted"


def test_force_cancel_of_an_actor_call_raises_value_error_and_leaves_it_running(driver):
    driver.init(num_cpus=2)
    worker = Worker.remote()
    running = worker.work.remote(0.5)
    time.sleep(0.1)
    with pytest.raises(ValueError, match=r"^force=True is not supported for actor tasks\.$"):
        ray.cancel(running, force=True)
    with pytest.raises(ValueError, match="actor tasks"):
        ray.cancel(worker.__ray_ready__.remote(), force=True)
    assert ray.get(running, timeout=60) == 0.5  # the refused cancel did nothing
    assert ray.get(worker.work.remote(0), timeout=60) == 0  # nor did it harm the actor


def test_a_ref_of_an_actor_call_is_known_as_one_in_another_task(driver):
    driver.init(num_cpus=2)
    worker = Worker.remote()

    @ray.remote
    def plain(seconds):
        time.sleep(seconds)
        return seconds

    call = worker.work.remote(0)
    assert ray.get(force_cancel.remote([call]), timeout=60) == (
        "force=True is not supported for actor tasks."
    )
    task = plain.remote(0)
    assert ray.get(task, timeout=60) == 0
    # A finished normal task: force is allowed (and does nothing).
    assert ray.get(force_cancel.remote([task]), timeout=60) == "accepted"
    assert ray.get(call, timeout=60) == 0
