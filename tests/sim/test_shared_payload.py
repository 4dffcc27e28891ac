"""Argument-less calls share one payload record; a parent that submits children gets its own."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import detray as ray
from detray.sim.records import Payload


@pytest.fixture()
def sim() -> Iterator[None]:
    if ray.is_initialized():
        ray.shutdown()
    ray.init(mode="sim", seed=0, num_cpus=8, check_invariants=True)
    yield
    ray.shutdown()


def _payloads() -> dict[str, Payload]:
    from detray import api

    return api.runtime().cluster.executor.payloads  # type: ignore[attr-defined,no-any-return]


@ray.remote
def child() -> int:
    time.sleep(100)
    return 1


@ray.remote
def parent() -> list[int]:
    refs = [child.remote(), child.remote()]
    return ray.get(refs)  # type: ignore[no-any-return]


def test_recursive_cancel_reaches_only_the_cancelled_parents_children(sim: None) -> None:
    first, second = parent.remote(), parent.remote()
    time.sleep(1)
    payloads = _payloads()
    parents = [p for p in payloads.values() if p.children]
    assert len(parents) == 2 and all(not p.shared for p in parents), "each parent lists its children in its own copy"
    children = [p for p in payloads.values() if p.shared]
    assert len(set(map(id, children))) == 1, "the argument-less children share one record"
    assert children[0].children is None
    ray.cancel(first)
    with pytest.raises(ray.exceptions.TaskCancelledError):
        ray.get(first, timeout=50)
    ready, _ = ray.wait([second], timeout=50)
    assert ready == [], "the other parent and its children run on"
