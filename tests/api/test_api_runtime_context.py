"""``get_runtime_context()`` in the driver, in a task and in an actor: the ids a
program reads to tell where it runs, the resources it was given, and a handle to
its own actor."""

from __future__ import annotations

import asyncio
import time

import pytest

import detray as ray


@ray.remote(num_cpus=2)
def context_in_a_task():
    context = ray.get_runtime_context()
    return {
        "job": context.get_job_id(),
        "worker": context.get_worker_id(),
        "task": context.get_task_id(),
        "actor": context.get_actor_id(),
        "resources": context.get_assigned_resources(),
        "namespace": context.namespace,
    }


@ray.remote(num_gpus=1, num_cpus=0)
def accelerators():
    return ray.get_runtime_context().get_accelerator_ids()["GPU"], ray.get_gpu_ids()


@ray.remote
class Named:
    def __init__(self):
        self.calls = 0

    def who(self):
        context = ray.get_runtime_context()
        return context.get_actor_id(), context.get_actor_name(), context.get_task_id()

    def bump(self):
        self.calls += 1
        return self.calls

    def reconstructed(self):
        return ray.get_runtime_context().was_current_actor_reconstructed

    def bump_through_my_own_handle(self):
        me = ray.get_runtime_context().current_actor
        return me.bump.remote()  # a ref: awaiting it here would wait on this very actor


def test_the_driver_and_its_tasks_share_the_job_but_not_the_worker(driver):
    driver.init(num_cpus=4, namespace="ctx")
    mine = ray.get_runtime_context()
    theirs = ray.get(context_in_a_task.remote())
    assert theirs["job"] == mine.get_job_id()
    assert theirs["worker"] != mine.get_worker_id()
    assert theirs["task"] and theirs["actor"] is None
    assert theirs["resources"] == {"CPU": 2.0}
    assert theirs["namespace"] == mine.namespace == "ctx"
    assert mine.get_task_id() is None and mine.get_actor_id() is None


def test_a_gpu_task_sees_its_gpu_ids_as_strings_in_the_context(driver):
    driver.init(num_cpus=1, num_gpus=2)
    context_ids, gpu_ids = ray.get(accelerators.remote())
    assert len(context_ids) == 1
    assert context_ids == [str(gpu) for gpu in gpu_ids]
    assert ray.get_runtime_context().get_accelerator_ids()["GPU"] == []  # the driver holds none


def test_an_actor_reads_its_id_and_name_and_calls_itself_through_current_actor(driver):
    driver.init(num_cpus=2)
    actor = Named.options(name="me").remote()
    actor_id, name, task_id = ray.get(actor.who.remote())
    assert actor_id and actor_id == ray.get(actor.who.remote())[0]
    assert name == "me" and task_id
    inner = ray.get(actor.bump_through_my_own_handle.remote())
    assert ray.get(inner) == 1
    assert ray.get(actor.bump.remote()) == 2


def test_current_actor_outside_an_actor_is_an_error(driver):
    driver.init(num_cpus=1)
    with pytest.raises(RuntimeError, match="only available in an actor"):
        ray.get_runtime_context().current_actor


def test_a_restarted_actor_keeps_its_name_and_knows_it_was_reconstructed(driver):
    driver.init(num_cpus=2)
    actor = Named.options(name="phoenix", max_restarts=1).remote()
    assert ray.get(actor.who.remote())[1] == "phoenix"
    assert ray.get(actor.bump.remote()) == 1
    ray.kill(actor, no_restart=False)
    deadline = time.monotonic() + 30
    while True:  # calls sent while the actor was dying may fail; the restarted one answers
        try:
            _actor_id, name, _task = ray.get(actor.who.remote(), timeout=30)
            break
        except ray.exceptions.RayActorError:
            assert time.monotonic() < deadline, "the actor was not restarted"
    assert name == "phoenix"
    assert ray.get(actor.bump.remote()) == 1  # a fresh instance: its state started over
    assert ray.get(actor.reconstructed.remote()) is True


def test_an_unnamed_actor_reads_an_empty_name_and_a_task_reads_none(driver):
    driver.init(num_cpus=2)

    @ray.remote
    def name_in_a_task():
        return ray.get_runtime_context().get_actor_name()

    assert ray.get(Named.remote().who.remote())[1] == ""
    assert ray.get(name_in_a_task.remote()) is None
    assert ray.get_runtime_context().get_actor_name() is None


# --- is_canceled() ---------------------------------------------------------------------------

POLLS_MAX = 2000
POLL_S = 0.01
TIMEOUT_S = 30


@ray.remote
class Started:
    """One event: the polling call says it runs, the driver waits for that."""

    def __init__(self):
        self.event = asyncio.Event()

    async def set(self):
        self.event.set()

    async def wait(self):
        await self.event.wait()


@ray.remote
class Poller:
    def __init__(self):
        self.polls_seen = None

    def work_until_cancelled(self, started):
        ray.get(started.set.remote())
        context = ray.get_runtime_context()
        for polls in range(POLLS_MAX):
            if context.is_canceled():
                self.polls_seen = polls
                return "stopped early"
            time.sleep(POLL_S)
        return "ran to the end"

    def cancelled_after(self):
        return self.polls_seen


@ray.remote
class AsyncActor:
    async def ask(self):
        try:
            ray.get_runtime_context().is_canceled()
        except RuntimeError as refused:
            return str(refused)
        return "answered"


@ray.remote
def is_canceled_in_a_task():
    return ray.get_runtime_context().is_canceled()


def test_a_running_actor_call_polls_is_canceled_and_stops_early(driver):
    driver.init(num_cpus=2)
    started, poller = Started.remote(), Poller.remote()
    call = poller.work_until_cancelled.remote(started)
    ray.get(started.wait.remote(), timeout=TIMEOUT_S)
    time.sleep(0.2)  # a few polls see no cancel
    ray.cancel(call)
    ready, _ = ray.wait([call], timeout=TIMEOUT_S)
    assert ready == [call]  # it ended long before its POLLS_MAX polls
    polls = ray.get(poller.cancelled_after.remote(), timeout=TIMEOUT_S)
    assert polls is not None and 0 < polls < POLLS_MAX, polls


def test_is_canceled_is_false_in_a_task_and_refused_in_the_driver_and_an_async_actor(driver):
    driver.init(num_cpus=2)
    assert ray.get(is_canceled_in_a_task.remote(), timeout=TIMEOUT_S) is False
    with pytest.raises(RuntimeError, match="driver"):
        ray.get_runtime_context().is_canceled()
    assert "async actor" in ray.get(AsyncActor.remote().ask.remote(), timeout=TIMEOUT_S)
