"""A DeadlockError for work that waits for resources says what it needs, what its
node has free, and who holds the rest, so a leaked actor holding the GPU shows."""

from __future__ import annotations

import threading

import pytest

import detray as ray
from detray.sim import DeadlockError


@ray.remote(num_gpus=1)
class OnGpu:
    def ping(self):
        return 1


@ray.remote(num_gpus=1)
def gpu_task():
    return 2


def test_a_queued_actor_creation_names_the_leaked_actor_that_holds_the_gpu():
    ray.init(mode="sim", seed=0, num_cpus=4, num_gpus=1)
    leaked = OnGpu.remote()
    ray.get(leaked.ping.remote())
    second = OnGpu.remote()
    with pytest.raises(DeadlockError) as raised:
        ray.get(second.ping.remote())
    message = str(raised.value)
    assert "its creation is queued at node-00000: it needs {'CPU': 1.0, 'GPU': 1.0}" in message
    assert "node-00000 has {'CPU': 3.0, 'GPU': 0.0} free of {'CPU': 4.0, 'GPU': 1.0}" in message
    held = f"held by: actor OnGpu {leaked._actor_id} (alive, 1 handle(s) in scope) holds {{'CPU': 1.0, 'GPU': 1.0}}"
    assert held in message
    assert str(second._actor_id) not in message.split("held by:")[1]  # the waiting one holds nothing


@ray.remote(num_gpus=1)
def hog():
    threading.Event().wait()  # never set: holds its CPU and GPU for good


@ray.remote(resources={"missing": 1})
def never():
    return 0


@ray.remote(num_gpus=1)
def waits_on_never():
    return ray.get(never.remote())


def test_a_queued_task_names_the_running_task_that_holds_what_it_needs():
    ray.init(mode="sim", seed=0, num_cpus=2, num_gpus=1)
    hog_ref = hog.remote()
    with pytest.raises(DeadlockError) as raised:
        ray.get(gpu_task.remote())
    message = str(raised.value)
    assert "(queued at node-00000): it needs {'CPU': 1.0, 'GPU': 1.0}" in message
    assert "node-00000 has {'CPU': 1.0, 'GPU': 0.0} free of {'CPU': 2.0, 'GPU': 1.0}" in message
    task = hog_ref.hex().split(".")[0]
    assert f"held by: running task hog {task} (attempt 1) holds {{'CPU': 1.0, 'GPU': 1.0}}" in message


def test_a_holder_blocked_in_get_is_shown_blocked_and_only_with_what_it_still_holds():
    ray.init(mode="sim", seed=0, num_cpus=2, num_gpus=1)
    waits_on_never.remote()
    with pytest.raises(DeadlockError) as raised:
        ray.get(gpu_task.remote())
    message = str(raised.value)
    gpu_line = next(line for line in message.splitlines() if "it needs {'CPU': 1.0, 'GPU': 1.0}" in line)
    # its CPU is lent while it waits in get(): it holds only the GPU
    assert "held by: running task waits_on_never" in gpu_line
    assert "(attempt 1, blocked in get()) holds {'GPU': 1.0}" in gpu_line


@ray.remote(num_cpus=1)
class Small:
    def ping(self):
        return 1


@ray.remote(num_cpus=2)
class Big:
    def ping(self):
        return 1


@ray.remote
def one_cpu():
    return 3


def test_two_actors_that_hold_every_cpu_are_both_named_largest_first():
    ray.init(mode="sim", seed=0, num_cpus=3)
    small, big = Small.remote(), Big.remote()
    ray.get([small.ping.remote(), big.ping.remote()])
    with pytest.raises(DeadlockError) as raised:
        ray.get(one_cpu.remote())
    held = str(raised.value).split("held by: ")[1]
    assert held.index(f"actor Big {big._actor_id}") < held.index(f"actor Small {small._actor_id}")
    assert "holds {'CPU': 2.0}" in held and "holds {'CPU': 1.0}" in held
