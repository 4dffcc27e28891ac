"""Errors: a task's exception comes back as RayTaskError, also an instance of its cause."""

from __future__ import annotations

import pytest

import detray as ray


class CustomError(Exception):
    pass


class NeedsArguments(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}-{b}")
        self.a = a


@ray.remote
def raise_value_error():
    raise ValueError("bad value")


@ray.remote
def raise_custom():
    raise CustomError("custom")


@ray.remote
def consume(x):
    return x


def test_task_error_is_both_ray_task_error_and_the_cause(driver):
    driver.init()
    with pytest.raises(ValueError, match="bad value") as raised:
        ray.get(raise_value_error.remote())
    assert isinstance(raised.value, ray.exceptions.RayTaskError)
    assert isinstance(raised.value.cause, ValueError)


def test_the_remote_traceback_names_the_function_and_line(driver):
    driver.init()
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        ray.get(raise_value_error.remote())
    text = str(raised.value)
    assert "raise_value_error" in text
    assert 'raise ValueError("bad value")' in text


def test_user_defined_exception_types_survive(driver):
    driver.init()
    with pytest.raises(CustomError):
        ray.get(raise_custom.remote())


def test_exceptions_with_demanding_constructors_survive(driver):
    driver.init()

    @ray.remote
    def demanding():
        raise NeedsArguments(1, 2)

    # Its pickle cannot be rebuilt (args holds one value, __init__ wants two): the
    # error still arrives as a RayTaskError that names it.
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        ray.get(demanding.remote())
    assert "NeedsArguments" in str(raised.value.cause) and "1-2" in str(raised.value.cause)


def test_an_error_propagates_to_dependent_tasks(driver):
    driver.init()
    with pytest.raises(ValueError, match="bad value"):
        ray.get(consume.remote(raise_value_error.remote()))


def test_an_error_caught_inside_a_task_is_its_business(driver):
    driver.init()

    @ray.remote
    def careful():
        try:
            ray.get(raise_value_error.remote())
        except ValueError as error:
            return f"caught {type(error).__name__}"

    assert ray.get(careful.remote()) == "caught RayTaskError(ValueError)"


def test_errors_are_not_retried_by_default(driver):
    driver.init()

    @ray.remote
    class Tally:
        def __init__(self):
            self.n = 0

        def hit(self):
            self.n += 1
            return self.n

    tally = Tally.remote()

    @ray.remote
    def failing(t):
        ray.get(t.hit.remote())
        raise ValueError("once")

    with pytest.raises(ValueError):
        ray.get(failing.remote(tally))
    assert ray.get(tally.hit.remote()) == 2
