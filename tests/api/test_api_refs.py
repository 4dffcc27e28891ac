"""References: nested refs stay refs, objects live while a ref to them exists."""

from __future__ import annotations

import gc

import detray as ray


@ray.remote
def make(value):
    return value


@ray.remote
def total(refs):
    # Refs nested in a container arrive as refs: the task gets them itself.
    assert all(isinstance(ref, ray.ObjectRef) for ref in refs)
    return sum(ray.get(refs))


@ray.remote
def wrap(x):
    inner = make.remote(x)
    return [inner]


def test_refs_nested_in_a_list_argument_stay_refs(driver):
    driver.init()
    refs = [make.remote(i) for i in range(5)]
    assert ray.get(total.remote(refs)) == 10


def test_refs_nested_in_a_dict_argument_stay_refs(driver):
    driver.init()

    @ray.remote
    def lookup(table):
        return ray.get(table["x"]) * 2

    assert ray.get(lookup.remote({"x": make.remote(21)})) == 42


def test_a_returned_ref_points_to_a_live_object(driver):
    driver.init()
    (inner,) = ray.get(wrap.remote(7))
    assert isinstance(inner, ray.ObjectRef)
    gc.collect()
    assert ray.get(inner) == 7


def test_a_ref_inside_a_put_object_keeps_its_object(driver):
    driver.init()
    box = ray.put({"ref": make.remote("kept")})
    gc.collect()
    inner = ray.get(box)["ref"]
    assert ray.get(inner) == "kept"


def test_an_object_lives_while_a_task_holds_a_nested_ref(driver):
    driver.init()

    @ray.remote
    def later(refs):
        import time

        time.sleep(0.2)
        return ray.get(refs[0])

    ref = make.remote("alive")
    pending = later.remote([ref])
    del ref
    gc.collect()
    assert ray.get(pending) == "alive"


def test_dropping_every_ref_does_not_break_later_work(driver):
    driver.init()
    for round_ in range(3):
        refs = [make.remote(i) for i in range(10)]
        assert ray.get(refs) == list(range(10))
        del refs
        gc.collect()
    assert ray.get(make.remote("done")) == "done"
