"""When nothing can progress the run stops with a DeadlockError naming what waits and why."""

from __future__ import annotations

import asyncio

import pytest

import detray as ray
from detray.sim import DeadlockError


def test_an_infeasible_task_is_a_deadlock_naming_the_resources(capsys):
    ray.init(mode="sim", num_cpus=2)

    @ray.remote(num_gpus=1)
    def needs_gpu():
        return 1

    ref = needs_gpu.remote()
    with pytest.raises(DeadlockError) as raised:
        ray.get(ref)
    message = str(raised.value)
    assert ref.hex() in message
    assert "infeasible" in message and "GPU" in message
    assert "the driver waits in get()" in message
    assert isinstance(raised.value, ray.exceptions.RayError)
    warning = capsys.readouterr().err
    assert warning.count("needs_gpu") == 1 and "detray (sim) warning" in warning


def test_the_driver_can_go_on_after_a_deadlock():
    ray.init(mode="sim", num_cpus=1)

    @ray.remote(resources={"missing": 1})
    def never():
        return 1

    @ray.remote
    def fine():
        return 2

    with pytest.raises(DeadlockError):
        ray.get(never.remote())
    assert ray.get(fine.remote()) == 2


def test_a_wait_cycle_through_an_actor_names_every_blocked_unit():
    ray.init(mode="sim", num_cpus=2)

    @ray.remote
    class Signal:
        def __init__(self):
            self.event = asyncio.Event()

        async def wait(self):
            await self.event.wait()

        async def set(self):
            self.event.set()

    @ray.remote
    def waits_for(signal):
        ray.get(signal.wait.remote())
        return "released"

    signal = Signal.remote()
    ref = waits_for.remote(signal)
    with pytest.raises(DeadlockError) as raised:
        ray.get(ref)
    message = str(raised.value)
    assert "the driver waits" in message
    assert "waits_for" in message  # the task blocked in its own get
    assert len(raised.value.blocked) == 2
    ray.get(signal.set.remote())
    assert ray.get(ref) == "released"


def test_a_call_to_an_actor_that_cannot_be_placed_is_explained():
    ray.init(mode="sim", num_cpus=2)

    @ray.remote(num_gpus=4)
    class Greedy:
        def ping(self):
            return 1

    greedy = Greedy.remote()
    with pytest.raises(DeadlockError) as raised:
        ray.get(greedy.ping.remote())
    message = str(raised.value)
    assert "queued at actor" in message and "infeasible" in message
