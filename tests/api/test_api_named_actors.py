"""Named actors: lookup by name, get_if_exists, duplicate names, namespaces."""

from __future__ import annotations

import pytest

import detray as ray


@ray.remote
class Store:
    def __init__(self):
        self.items = {}

    def set(self, key, value):
        self.items[key] = value

    def get(self, key):
        return self.items.get(key)


def test_get_actor_finds_a_named_actor(driver):
    driver.init()
    store = Store.options(name="store").remote()
    ray.get(store.set.remote("k", "v"))
    found = ray.get_actor("store")
    assert found == store
    assert ray.get(found.get.remote("k")) == "v"


def test_a_task_can_look_up_a_named_actor(driver):
    driver.init()
    store = Store.options(name="shared").remote()

    @ray.remote
    def writer():
        ray.get(ray.get_actor("shared").set.remote("from", "task"))

    ray.get(writer.remote())
    assert ray.get(store.get.remote("from")) == "task"


def test_a_taken_name_is_a_value_error(driver):
    driver.init()
    keep = Store.options(name="once").remote()
    with pytest.raises(ValueError, match="once"):
        Store.options(name="once").remote()
    del keep


def test_get_if_exists_returns_the_live_actor(driver):
    driver.init()
    first = Store.options(name="single", get_if_exists=True).remote()
    ray.get(first.set.remote("a", 1))
    second = Store.options(name="single", get_if_exists=True).remote()
    assert second == first
    assert ray.get(second.get.remote("a")) == 1


def test_unknown_names_raise_value_error(driver):
    driver.init()
    with pytest.raises(ValueError, match="nobody"):
        ray.get_actor("nobody")


def test_namespaces_keep_names_apart(driver):
    driver.init(namespace="one")
    here = Store.options(name="same").remote()
    there = Store.options(name="same", namespace="two").remote()
    assert here != there
    assert ray.get_actor("same") == here
    assert ray.get_actor("same", namespace="two") == there


def test_a_killed_named_actor_frees_its_name(driver):
    driver.init()
    store = Store.options(name="gone").remote()
    ray.get(store.set.remote("x", 1))
    ray.kill(store)
    with pytest.raises(ValueError):
        ray.get_actor("gone")
    again = Store.options(name="gone").remote()
    assert ray.get(again.get.remote("x")) is None
