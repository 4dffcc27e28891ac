"""Actor handles: dropping the last one ends the actor at once (no garbage-collector cycle),
and a method call's arguments are checked against the method at ``.remote()``."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

import detray as ray


@pytest.fixture
def no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector off: an actor kept alive by a reference cycle stays alive."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@ray.remote(num_gpus=1)
class Trainer:
    def __init__(self, lr):
        self.lr = lr

    def train(self):
        return self.lr * 2


def test_actors_made_in_a_loop_on_one_gpu_each_end_when_replaced(driver, no_cyclic_gc):
    """Each ``t = Trainer.remote(...)`` drops the previous handle, whose actor must give its
    GPU back for the next one to start (it hung on real, deadlocked on the simulator)."""
    driver.init(num_cpus=2, num_gpus=1)
    results = []
    for lr in [1, 2, 3]:
        trainer = Trainer.remote(lr)
        results.append(ray.get(trainer.train.remote(), timeout=60))
    assert results == [2, 4, 6]


def test_dropping_the_last_handle_gives_the_actors_resources_back(driver, no_cyclic_gc):
    driver.init(num_cpus=2, num_gpus=1)
    trainer = Trainer.remote(1)
    # Every way of reaching a method: none may tie the handle into a cycle.
    assert ray.get(trainer.train.remote(), timeout=60) == 2
    assert ray.get(trainer.train.options(name="renamed").remote(), timeout=60) == 2
    assert ray.get(trainer.__ray_ready__.remote(), timeout=60) is True
    method = trainer.train
    assert ray.get(method.remote(), timeout=60) == 2
    assert ray.available_resources().get("GPU", 0) == 0
    probe = weakref.ref(trainer)
    del trainer
    assert ray.available_resources().get("GPU", 0) == 0  # the method still holds the handle
    assert ray.get(method.remote(), timeout=60) == 2
    del method
    assert probe() is None  # freed by reference counting alone
    assert _wait_for(lambda: ray.available_resources().get("GPU", 0) == 1)


def test_an_actor_whose_handle_was_used_in_a_task_ends_with_its_last_handle(driver, no_cyclic_gc):
    """The task's copy of the handle (unpickled there, a method called through it) goes with
    the task; the driver's copy is the last one."""
    driver.init(num_cpus=2, num_gpus=1)

    @ray.remote
    def train_with(trainer):
        return ray.get(trainer.train.remote())

    trainer = Trainer.remote(5)
    assert ray.get(train_with.remote(trainer), timeout=60) == 10
    probe = weakref.ref(trainer)
    del trainer
    assert probe() is None
    assert _wait_for(lambda: ray.available_resources().get("GPU", 0) == 1)


# --- arguments checked at .remote() ------------------------------------------------------------


@ray.remote
class Calc:
    def __init__(self):
        self.calls = 0

    def add(self, a, b=0, *, scale=1):
        self.calls += 1
        return (a + b) * scale

    def spread(self, *values, **named):
        self.calls += 1
        return len(values) + len(named)

    @staticmethod
    def double(x):
        return 2 * x

    @classmethod
    def name_with(cls, suffix):
        return cls.__name__ + suffix

    def count(self):
        return self.calls


def test_a_method_call_with_arguments_that_do_not_fit_raises_type_error_at_remote(driver):
    driver.init(num_cpus=2)
    calc = Calc.remote()
    with pytest.raises(TypeError, match=r"Calc\.add\(\): missing a required argument: 'a'"):
        calc.add.remote()
    with pytest.raises(TypeError, match=r"Calc\.add\(\): too many positional arguments"):
        calc.add.remote(1, 2, 3)
    with pytest.raises(TypeError, match=r"Calc\.add\(\): got an unexpected keyword argument 'c'"):
        calc.add.remote(1, c=3)
    with pytest.raises(TypeError, match=r"Calc\.count\(\): too many positional arguments"):
        calc.count.remote(1)
    with pytest.raises(TypeError, match=r"Calc\.add\(\): missing a required argument"):
        calc.add.options(name="renamed").remote()
    # None of those reached the actor; calls that fit do, defaults and keywords included.
    assert ray.get(calc.add.remote(1), timeout=60) == 1
    assert ray.get(calc.add.remote(1, 2, scale=10), timeout=60) == 30
    assert ray.get(calc.add.remote(a=1, b=1), timeout=60) == 2
    assert ray.get(calc.spread.remote(1, 2, x=3), timeout=60) == 3
    assert ray.get(calc.count.remote(), timeout=60) == 4


def test_static_class_async_and_built_in_methods_are_checked_too(driver):
    driver.init(num_cpus=2)
    calc = Calc.remote()
    assert ray.get(calc.double.remote(4), timeout=60) == 8
    assert ray.get(calc.name_with.remote("!"), timeout=60) == "Calc!"
    with pytest.raises(TypeError, match=r"Calc\.double\(\): missing a required argument: 'x'"):
        calc.double.remote()
    with pytest.raises(TypeError, match=r"Calc\.name_with\(\): too many positional arguments"):
        calc.name_with.remote("a", "b")
    with pytest.raises(TypeError, match=r"Calc\.__ray_ready__\(\): too many positional arguments"):
        calc.__ray_ready__.remote(1)
    assert ray.get(calc.__ray_ready__.remote(), timeout=60) is True

    @ray.remote
    class Echo:
        async def echo(self, value):
            return value

    echo = Echo.remote()
    with pytest.raises(TypeError, match=r"Echo\.echo\(\): missing a required argument: 'value'"):
        echo.echo.remote()
    assert ray.get(echo.echo.remote("hi"), timeout=60) == "hi"
