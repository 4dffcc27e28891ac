"""Objects on the real runtime: zero-copy reads from shared memory, spilling past the store's size, GPU ids.

What a user relies on: a large array from ``get`` is a read-only view of the
shared-memory object (not a copy), also in a worker that receives it as an
argument; putting more than the store holds spills and every object still
reads back right; a task's ``CUDA_VISIBLE_DEVICES`` names the GPUs it was
given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

import detray
from detray.real import protocol as P
from tests.real.real_helpers import running_cluster

MIB = 1 << 20


@pytest.fixture
def cluster() -> Iterator[Any]:
    with running_cluster(num_cpus=2, num_gpus=2, object_store_memory=64 * MIB) as rt:
        yield rt


def _backing_path(array: np.ndarray) -> str | None:
    """The file an array's memory is mapped from (via /proc/self/maps), or None."""
    address = array.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            low, high = (int(x, 16) for x in parts[0].split("-"))
            if low <= address < high:
                return parts[5].strip() if len(parts) == 6 else None
    return None


@detray.remote
def make(n_bytes: int) -> np.ndarray:
    return np.full(n_bytes // 8, 7.0)


@detray.remote
def where_is(array: np.ndarray) -> tuple[str | None, bool, float]:
    return _backing_path(array), array.flags.writeable, float(array[-1])


def test_a_large_result_is_a_read_only_view_of_the_shared_memory_object(cluster: Any) -> None:
    ref = make.remote(8 * MIB)
    array = detray.get(ref)
    assert array.shape == (MIB,) and array[0] == 7.0
    assert not array.flags.writeable
    path = _backing_path(array)
    assert path is not None and path.endswith(ref.id), path  # mapped from the object's file: no copy
    with pytest.raises(ValueError):
        array[0] = 1.0


def test_a_large_argument_reaches_the_worker_by_reference(cluster: Any) -> None:
    array = np.arange(2 * MIB, dtype=np.float64)
    ref = detray.put(array)
    path, writeable, last = detray.get(where_is.remote(ref))
    assert path is not None and path.endswith(ref.id), path
    assert not writeable and last == float(2 * MIB - 1)
    # passed by value, a large argument goes through the store too (put on the caller's behalf)
    path, _, last = detray.get(where_is.remote(array))
    assert path is not None and "/detray-obj-" in path, path
    assert last == float(2 * MIB - 1)


def test_more_than_the_store_holds_spills_and_every_object_reads_back(cluster: Any) -> None:
    refs = [detray.put(np.full(2 * MIB, float(i))) for i in range(8)]  # 8 x 16 MiB into a 64 MiB store
    for i, ref in enumerate(refs):
        value = detray.get(ref)
        assert value.shape == (2 * MIB,) and value[0] == float(i) and value[-1] == float(i)
        del value
    results = detray.get([where_is.remote(ref) for ref in refs])
    assert [last for _, _, last in results] == [float(i) for i in range(8)]
    stats = cluster.conn.call(lambda req: (P.INFO, req, "stats"))
    assert stats["store_spills"] + stats["store_fallback_allocations"] > 0, stats  # it did not all fit


@detray.remote(num_gpus=1)
def visible_devices() -> tuple[str | None, list[int]]:
    return os.environ.get("CUDA_VISIBLE_DEVICES"), detray.get_gpu_ids()


def test_gpu_tasks_see_their_gpus_in_cuda_visible_devices(cluster: Any) -> None:
    seen = detray.get([visible_devices.remote() for _ in range(4)])
    for devices, ids in seen:
        assert devices == ",".join(str(i) for i in ids) and len(ids) == 1
    assert {ids[0] for _, ids in seen} <= {0, 1}
