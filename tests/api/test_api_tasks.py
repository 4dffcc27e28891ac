"""Remote functions as a Ray user sees them: calls, arguments, returns, nesting, output."""

from __future__ import annotations

import time

import numpy as np
import pytest

import detray as ray


@ray.remote
def add(a, b=0):
    return a + b


@ray.remote(num_returns=2)
def pair(x):
    return x, x * 10


@ray.remote(num_returns=0)
def nothing():
    return None


@ray.remote
def leaf(x):
    return x + 1


@ray.remote
def fan_out(n):
    return sum(ray.get([leaf.remote(i) for i in range(n)]))


@ray.remote
def recurse(depth):
    if depth == 0:
        return 0
    return 1 + ray.get(recurse.remote(depth - 1))


def test_a_task_returns_its_value(driver):
    driver.init()
    assert ray.get(add.remote(1, 2)) == 3
    assert ray.get(add.remote(1, b=5)) == 6


def test_many_tasks_keep_list_order(driver):
    driver.init()
    assert ray.get([add.remote(i, i) for i in range(20)]) == [2 * i for i in range(20)]


def test_num_returns_gives_one_ref_per_value(driver):
    driver.init()
    first, second = pair.remote(3)
    assert ray.get([first, second]) == [3, 30]
    assert nothing.remote() is None


def test_a_ref_argument_is_replaced_by_its_value(driver):
    driver.init()
    assert ray.get(add.remote(add.remote(1, 1), add.remote(2, 2))) == 6
    assert ray.get(add.remote(ray.put(5), b=ray.put(6))) == 11


def test_tasks_can_submit_and_wait_for_tasks(driver):
    driver.init(num_cpus=2)
    assert ray.get(fan_out.remote(10)) == sum(range(1, 11))


def test_nesting_deeper_than_the_cpus_does_not_deadlock(driver):
    # Each level blocks in get: blocked workers lend their CPU to the next level.
    driver.init(num_cpus=2)
    assert ray.get(recurse.remote(8)) == 8


def test_arguments_and_results_are_copies(driver):
    driver.init()

    @ray.remote
    def mutate(values):
        values.append("task")
        return values

    mine = [1]
    result = ray.get(mutate.remote(mine))
    assert mine == [1]
    assert result == [1, "task"]
    ref = mutate.remote(mine)
    first = ray.get(ref)
    first.append("caller")
    assert ray.get(ref) == [1, "task"]


def test_an_unpicklable_argument_fails_at_submission_naming_it(driver):
    import threading

    driver.init()
    with pytest.raises(TypeError, match=r"argument 1 of add\(\).*lock"):
        add.remote(threading.Lock())


def test_arguments_that_do_not_fit_the_signature_fail_at_submission(driver):
    driver.init()
    with pytest.raises(TypeError, match=r"leaf\(\).*missing a required argument"):
        leaf.remote()
    with pytest.raises(TypeError, match=r"leaf\(\).*too many positional arguments"):
        leaf.remote(1, 2)
    with pytest.raises(TypeError, match=r"leaf\(\).*unexpected keyword argument 'y'"):
        leaf.remote(1, y=1)
    assert ray.get([leaf.remote(1), leaf.remote(x=2), add.remote(1), add.remote(1, b=2)]) == [2, 3, 1, 3]


def test_an_unpicklable_return_value_fails_the_get(driver):
    import threading

    driver.init()

    @ray.remote
    def returns_lock():
        return threading.Lock()

    with pytest.raises(TypeError, match="lock"):
        ray.get(returns_lock.remote())


def test_numpy_results_are_read_only_arrays(driver):
    driver.init()

    @ray.remote
    def make(n):
        return np.arange(n)

    array = ray.get(make.remote(5))
    assert array.tolist() == [0, 1, 2, 3, 4]
    assert not array.flags.writeable


def test_task_output_is_prefixed_with_the_task(driver, capfd):
    driver.init()

    @ray.remote
    def speak():
        print("hello from the task")
        return 1

    ray.get(speak.remote())
    time.sleep(0.2)  # the real runtime forwards worker output asynchronously
    out = capfd.readouterr().out
    line = next(line for line in out.splitlines() if "hello from the task" in line)
    prefix, _, text = line.partition(") ")
    assert prefix.startswith("(") and "speak" in prefix and "pid=" in prefix
    assert text == "hello from the task"


def test_the_runtime_context_names_the_task_and_node(driver):
    driver.init()

    @ray.remote
    def who():
        context = ray.get_runtime_context()
        return context.get_task_id(), context.get_node_id()

    task_id, node_id = ray.get(who.remote())
    assert task_id
    assert node_id == ray.get_runtime_context().get_node_id()
    assert ray.get_runtime_context().get_task_id() is None


def test_options_override_the_decorator(driver):
    driver.init()
    first, second = add.options(num_returns=1, name="renamed").remote(1, 1), pair.options(num_returns=2).remote(2)
    assert ray.get(first) == 2
    assert ray.get(second) == [2, 20]


def test_cancel_of_a_running_task_raises_task_cancelled(driver):
    driver.init()

    @ray.remote
    def sleepy():
        time.sleep(30)
        return 1

    ref = sleepy.remote()
    time.sleep(0.2)
    ray.cancel(ref)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(ref, timeout=20)


def test_cancel_of_a_queued_task_raises_task_cancelled(driver):
    driver.init(num_cpus=1)

    @ray.remote
    def sleepy(s):
        time.sleep(s)
        return s

    running = sleepy.remote(0.5)
    queued = sleepy.remote(0.1)
    ray.cancel(queued)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(queued)
    assert ray.get(running) == 0.5
