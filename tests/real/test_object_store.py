"""The node's shared-memory object store (detray.real.object_store), on both backends.

Every test runs on ``/dev/shm`` and on the file-backed fallback. Other
processes are started with ``spawn`` (as the real runtime's workers are) and
check for themselves that what they read lies in a mapping of the object's
file, not in a private copy.
"""

from __future__ import annotations

import gc
import mmap
import multiprocessing
import os
import signal
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from detray.core.ids import ObjectID
from detray.exceptions import OutOfDiskError
from detray.real import shm_files
from detray.real.object_store import (
    ObjectExistsError,
    ObjectNotInStoreError,
    ObjectStore,
    StoreClient,
    StoreLocation,
    cleanup_stale,
)
from detray.serialization import SerializedObject, serialize

MiB = 1 << 20
HAS_SHM = os.path.isdir(shm_files.SHM_ROOT)
HAS_PROC_MAPS = os.path.exists("/proc/self/maps")
CHILD_TIMEOUT_S = 30.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX only (flock, mmap)")


def mapped_file(address: int) -> str | None:
    """The file mapped at ``address`` in this process ("" for anonymous memory), or None."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            if low <= address < high:
                return fields[5].strip() if len(fields) == 6 else ""
    return None


def base_mmap(array: np.ndarray) -> object:
    """Follow ``array.base`` down to the object that owns the memory."""
    owner: object = array
    while isinstance(owner, np.ndarray) and owner.base is not None:
        owner = owner.base
    while isinstance(owner, memoryview):
        owner = owner.obj
    return owner


def array_mib(mib: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 1 << 30, size=mib * MiB // 8, dtype=np.int64)


@pytest.fixture(params=[pytest.param("shm", marks=pytest.mark.skipif(not HAS_SHM, reason="no /dev/shm")), "file"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str) -> Any:
    stores: list[ObjectStore] = []

    def make(capacity_bytes: int = 64 * MiB, **options: Any) -> ObjectStore:
        store = ObjectStore(capacity_bytes, backend=backend, **options)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()
        assert not os.path.lexists(store.location.memory_dir)
        assert not os.path.lexists(store.location.spill_dir)


# --- round trips -------------------------------------------------------------------------------


def test_round_trip_of_values_without_buffers(make_store: Any) -> None:
    store = make_store()
    values = {"o1": 7, "o2": "text" * 1000, "o3": {"a": [1, 2.5, None], "b": (b"x" * 300_000,)}, "o4": None}
    for object_id, value in values.items():
        store.create(object_id, serialize(value))
    for object_id, value in values.items():
        assert store.get(object_id) == value
    assert store.get_stored("o1").serialized.buffers == []


def test_round_trip_of_values_with_buffers_and_metadata(make_store: Any) -> None:
    store = make_store()
    value = {
        "matrix": np.arange(300_000, dtype=np.float64).reshape(600, 500),
        "fortran": np.asfortranarray(np.arange(60_000, dtype=np.int32).reshape(300, 200)),
        "bytes": np.frombuffer(b"\x01\x02\x03" * 100_000, dtype=np.uint8),
        "empty": np.zeros(0),
        "small": 3,
    }
    serialized = serialize(value)
    assert len(serialized.buffers) >= 3
    serialized.contained_refs = [ObjectID("00000001-driver.p9")]
    store.create("o1", serialized)
    got = store.get("o1")
    assert got.keys() == value.keys()
    for key in ("matrix", "fortran", "bytes", "empty"):
        np.testing.assert_array_equal(got[key], value[key])
        assert got[key].dtype == value[key].dtype
    assert got["fortran"].flags.f_contiguous
    assert got["matrix"].ctypes.data % 64 == 0, "buffers are 64-byte aligned"
    stored = store.get_stored("o1")
    assert stored.serialized.contained_refs == ["00000001-driver.p9"]
    assert stored.is_error is False
    assert stored.size_bytes == store.info("o1").size_bytes


def test_error_values_keep_their_flag(make_store: Any) -> None:
    store = make_store()
    store.create("o1", serialize(ValueError("boom")), is_error=True)
    stored = store.get_stored("o1")
    assert stored.is_error
    error = store.get("o1")
    assert isinstance(error, ValueError) and str(error) == "boom"


def test_ids_that_are_not_plain_file_names_round_trip(make_store: Any) -> None:
    store = make_store()
    odd_ids = ["a/b", "../escape", ".hidden", "x" * 400]
    for index, object_id in enumerate(odd_ids):
        store.create(object_id, serialize(index))
    for index, object_id in enumerate(odd_ids):
        assert store.get(object_id) == index
        assert os.path.dirname(store.location.memory_path(object_id)) == store.location.memory_dir
    assert len(set(map(shm_files.object_file_name, odd_ids))) == len(odd_ids)


def test_errors_name_the_object(make_store: Any) -> None:
    store = make_store()
    store.create("o1", serialize(1))
    with pytest.raises(ObjectExistsError, match="o1"):
        store.create("o1", serialize(2))
    assert store.get("o1") == 1, "a sealed object is never rewritten"
    with pytest.raises(ObjectNotInStoreError, match="nope"):
        store.get("nope")
    assert store.delete("nope") is False


# --- zero copy and read-only -------------------------------------------------------------------


@pytest.mark.skipif(not HAS_PROC_MAPS, reason="needs /proc/self/maps")
def test_get_returns_read_only_views_of_the_objects_file(make_store: Any) -> None:
    store = make_store()
    array = array_mib(4, seed=1)
    store.create("o1", serialize(array))
    first, second = store.get("o1"), store.get("o1")
    path = store.location.memory_path("o1")
    for got in (first, second):
        np.testing.assert_array_equal(got, array)
        assert not got.flags.writeable and not got.flags.owndata
        assert isinstance(base_mmap(got), mmap.mmap)
        assert mapped_file(got.ctypes.data) == path
        assert mapped_file(got.ctypes.data + got.nbytes - 1) == path
    assert not np.shares_memory(first, array), "the store holds its own copy, not the producer's"
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 1
    with pytest.raises(ValueError):
        first.setflags(write=True)
    with pytest.raises(TypeError):
        memoryview(base_mmap(first))[0] = 1  # type: ignore[arg-type]
    array[0] = -1
    assert store.get("o1")[0] != -1, "changing the producer's array does not reach the object"


# --- pinning -----------------------------------------------------------------------------------


def test_delete_while_a_view_lives_keeps_the_view_and_frees_later(make_store: Any) -> None:
    store = make_store()
    array = array_mib(2, seed=2)
    size_bytes = store.create("o1", serialize(array))
    view = store.get("o1")
    assert store.in_use("o1")
    assert store.delete("o1") is True
    assert not store.contains("o1") and not os.path.exists(store.location.memory_path("o1"))
    with pytest.raises(ObjectNotInStoreError):
        store.get("o1")
    np.testing.assert_array_equal(view, array)
    assert store.stats().deferred_bytes == size_bytes == store.used_bytes
    del view
    gc.collect()
    assert store.used_bytes == 0 and store.stats().deferred_bytes == 0


def test_spill_request_while_a_view_lives_keeps_the_view(make_store: Any) -> None:
    store = make_store()
    array = array_mib(2, seed=3)
    size_bytes = store.create("o1", serialize(array))
    view = store.get("o1")
    assert store.spill("o1") is False, "memory is freed only when the view goes"
    assert store.info("o1").on_disk and not store.info("o1").in_memory
    np.testing.assert_array_equal(view, array)
    assert store.used_bytes == size_bytes
    del view
    gc.collect()
    assert store.used_bytes == 0
    np.testing.assert_array_equal(store.get("o1"), array)  # restored
    assert store.info("o1").in_memory and store.stats().restores == 1


def test_capacity_never_spills_an_object_with_a_live_view(make_store: Any) -> None:
    store = make_store(capacity_bytes=5 * MiB // 2)
    arrays = {f"o{index}": array_mib(1, seed=index) for index in range(1, 5)}
    store.create("o1", serialize(arrays["o1"]))
    view = store.get("o1")
    store.create("o2", serialize(arrays["o2"]))
    store.create("o3", serialize(arrays["o3"]))  # o1 is mapped, so o2 makes room
    assert store.info("o1").in_memory and not store.info("o2").in_memory
    store.create("o4", serialize(arrays["o4"]))
    assert store.info("o1").in_memory and not store.info("o3").in_memory
    assert store.used_bytes <= store.capacity_bytes
    np.testing.assert_array_equal(view, arrays["o1"])
    for object_id, array in arrays.items():
        np.testing.assert_array_equal(store.get(object_id), array)


# --- spilling ----------------------------------------------------------------------------------


def test_spill_when_over_capacity_and_restore_on_get(make_store: Any) -> None:
    store = make_store(capacity_bytes=5 * MiB // 2)
    arrays = {f"o{index}": array_mib(1, seed=10 + index) for index in range(1, 4)}
    for object_id, array in arrays.items():
        store.create(object_id, serialize(array))
    stats = store.stats()
    assert stats.spills == 1 and stats.spilled_objects == 1 and stats.used_bytes <= store.capacity_bytes
    assert not store.info("o1").in_memory, "the least recently used object spills first"
    assert os.path.exists(store.location.spill_path("o1"))
    assert not os.path.exists(store.location.memory_path("o1"))
    np.testing.assert_array_equal(store.get("o1"), arrays["o1"])
    assert store.info("o1").in_memory and not store.info("o2").in_memory
    assert store.stats().restores == 1 and store.used_bytes <= store.capacity_bytes
    gc.collect()
    store.delete("o1")
    assert not os.path.exists(store.location.spill_path("o1")), "delete frees the disk copy too"


def test_an_object_larger_than_the_store_lives_on_disk(make_store: Any) -> None:
    store = make_store(capacity_bytes=1 * MiB)
    array = array_mib(2, seed=4)
    store.create("big", serialize(array))
    info = store.info("big")
    assert not info.in_memory and info.on_disk
    got = store.get("big")
    np.testing.assert_array_equal(got, array)
    assert not got.flags.writeable
    assert store.stats().fallback_allocations == 1 and store.used_bytes == 0


def test_spilling_stops_before_the_disk_fills(make_store: Any) -> None:
    store = make_store(capacity_bytes=1 * MiB, disk_usage_fraction_max=1e-9)
    with pytest.raises(OutOfDiskError, match="big"):
        store.create("big", serialize(array_mib(2, seed=5)))
    assert not store.contains("big")
    store.create("small", serialize(np.zeros(1000)))  # memory still works
    assert store.used_bytes > 0


# --- nothing left behind -----------------------------------------------------------------------


def test_close_removes_every_file(make_store: Any) -> None:
    store = make_store(capacity_bytes=3 * MiB)
    for index in range(4):
        store.create(f"o{index}", serialize(array_mib(1, seed=20 + index)))
    store.spill("o3")
    view = store.get("o1")
    store.close()
    for path in (store.location.memory_dir, store.location.spill_dir):
        assert not os.path.lexists(path)
    if store.location.backend == "shm":
        assert not [entry for entry in os.listdir(shm_files.SHM_ROOT) if store.location.name in entry]
    assert view.sum() == array_mib(1, seed=21).sum(), "a live view outlives close"
    store.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        store.get("o1")


def test_backend_auto_falls_back_to_files_when_shm_is_small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shm_files, "shm_free_bytes", lambda root=shm_files.SHM_ROOT: 10 * MiB)
    root, backend = shm_files.choose_memory_root(20 * MiB, "auto")
    assert backend == "file" and root != shm_files.SHM_ROOT
    monkeypatch.setattr(shm_files, "shm_free_bytes", lambda root=shm_files.SHM_ROOT: None)
    assert shm_files.choose_memory_root(1, "auto")[1] == "file"
    with pytest.raises(ValueError, match="absent"):
        shm_files.choose_memory_root(1, "shm")
    monkeypatch.setattr(shm_files, "shm_free_bytes", lambda root=shm_files.SHM_ROOT: 30 * MiB)
    assert shm_files.choose_memory_root(20 * MiB, "auto") == (shm_files.SHM_ROOT, "shm")
    with pytest.raises(ValueError, match="backend"):
        shm_files.choose_memory_root(1, "tape")


def test_abandoned_half_written_files_are_swept(make_store: Any) -> None:
    store = make_store()
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    abandoned = os.path.join(store.location.memory_dir, f"{shm_files.TEMP_PREFIX}{finished.pid}-dead")
    mine = os.path.join(store.location.memory_dir, f"{shm_files.TEMP_PREFIX}{os.getpid()}-live")
    for path in (abandoned, mine):
        with open(path, "wb") as file:
            file.write(b"half")
    assert store.sweep_abandoned() == [abandoned]
    assert os.path.exists(mine)


# --- other processes ---------------------------------------------------------------------------


def _child_read(location: StoreLocation, object_id: str, results: Any) -> None:
    array = StoreClient(location).get(object_id)
    results.put(
        {
            "checksum": int(array.sum()),
            "writeable": bool(array.flags.writeable),
            "owner_is_mmap": isinstance(base_mmap(array), mmap.mmap),
            "mapped_file": mapped_file(array.ctypes.data) if HAS_PROC_MAPS else None,
            "mapped_file_end": mapped_file(array.ctypes.data + array.nbytes - 1) if HAS_PROC_MAPS else None,
        }
    )


def _child_write(location: StoreLocation, object_id: str, in_memory: bool, results: Any) -> None:
    size_bytes = StoreClient(location).create(object_id, serialize(array_mib(1, seed=7)), in_memory=in_memory)
    results.put(size_bytes)


def _child_hold(location: StoreLocation, object_id: str, results: Any, release: Any) -> None:
    array = StoreClient(location).get(object_id)
    results.put(int(array.sum()))
    release.wait(CHILD_TIMEOUT_S)
    results.put(int(array.sum()))  # the view still reads the object after the owner deleted it


def _child_own_store(backend: str, name: str, results: Any) -> None:
    store = ObjectStore(2 * MiB, name=name, backend=backend, stale_grace_s=None)
    store.create("o1", serialize(array_mib(1, seed=8)))
    store.create("o2", serialize(array_mib(1, seed=9)))  # spills o1
    view = store.get("o2")
    results.put((store.location, store.stats().spills, int(view.sum())))
    signal.pause()


def _run(target: Any, *args: Any) -> tuple[Any, Any]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    process = context.Process(target=target, args=(*args, results), daemon=True)
    process.start()
    return process, results


def _finish(process: Any) -> None:
    process.join(CHILD_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join()
    assert process.exitcode == 0


def test_another_process_reads_without_a_copy(make_store: Any) -> None:
    store = make_store()
    array = array_mib(8, seed=6)
    store.create("o1", serialize(array))
    process, results = _run(_child_read, store.location, "o1")
    try:
        seen = results.get(timeout=CHILD_TIMEOUT_S)
    finally:
        _finish(process)
    assert seen["checksum"] == int(array.sum())
    assert seen["writeable"] is False and seen["owner_is_mmap"] is True
    if HAS_PROC_MAPS:
        assert seen["mapped_file"] == seen["mapped_file_end"] == store.location.memory_path("o1")


def test_another_process_writes_and_the_owner_adopts(make_store: Any) -> None:
    store = make_store(capacity_bytes=5 * MiB // 2)
    store.create("old", serialize(array_mib(2, seed=0)))
    in_memory = store.reserve("new", 1 * MiB + 4096)
    assert in_memory and not store.info("old").in_memory, "the reservation made room"
    process, results = _run(_child_write, store.location, "new", in_memory)
    try:
        size_bytes = results.get(timeout=CHILD_TIMEOUT_S)
    finally:
        _finish(process)
    assert store.adopt("new") == size_bytes
    np.testing.assert_array_equal(store.get("new"), array_mib(1, seed=7))
    assert store.info("new").in_memory and store.used_bytes <= store.capacity_bytes


def test_a_view_in_another_process_pins_the_object(make_store: Any) -> None:
    store = make_store(capacity_bytes=5 * MiB // 2)
    array = array_mib(1, seed=11)
    size_bytes = store.create("held", serialize(array))
    context = multiprocessing.get_context("spawn")
    release = context.Event()
    results = context.Queue()
    process = context.Process(target=_child_hold, args=(store.location, "held", results, release), daemon=True)
    process.start()
    try:
        assert results.get(timeout=CHILD_TIMEOUT_S) == int(array.sum())
        assert store.in_use("held")
        store.create("o2", serialize(array_mib(1, seed=12)))
        store.create("o3", serialize(array_mib(1, seed=13)))
        assert store.info("held").in_memory, "mapped elsewhere: o2 spilled instead"
        assert not store.info("o2").in_memory
        store.delete("held")
        assert store.used_bytes >= size_bytes + store.info("o3").size_bytes
        release.set()
        assert results.get(timeout=CHILD_TIMEOUT_S) == int(array.sum())
    finally:
        release.set()
        _finish(process)
    assert store.stats().deferred_bytes == 0, "the child's exit released its mapping"


@pytest.mark.skipif(not hasattr(signal, "pause"), reason="POSIX signals")
def test_a_sigkilled_stores_files_are_removed_by_the_next_store(backend: str) -> None:
    name = shm_files.new_store_name()
    survivor = ObjectStore(1 * MiB, backend=backend, stale_grace_s=None)
    process, results = _run(_child_own_store, backend, name)
    try:
        survivor.create("o1", serialize(1))
        location, spills, _ = results.get(timeout=CHILD_TIMEOUT_S)
        assert spills == 1
        os.kill(process.pid, signal.SIGKILL)
        process.join(CHILD_TIMEOUT_S)
        assert process.exitcode == -signal.SIGKILL
        assert os.listdir(location.memory_dir) and os.listdir(location.spill_dir), "SIGKILL left files"
        assert location.memory_dir not in cleanup_stale(grace_s=3600.0), "a just-touched one waits"
        next_store = ObjectStore(1 * MiB, backend=backend, stale_grace_s=0.0)
        next_store.close()
        assert not os.path.lexists(location.memory_dir) and not os.path.lexists(location.spill_dir)
        assert survivor.get("o1") == 1, "a live store is never taken for a stale one"
        assert os.path.isdir(survivor.location.memory_dir) and os.path.isdir(survivor.location.spill_dir)
    finally:
        if process.is_alive():
            process.kill()
            process.join()
        survivor.close()
        cleanup_stale(roots=None, grace_s=0.0)


def test_serialized_object_from_elsewhere_round_trips(make_store: Any) -> None:
    """A hand-made SerializedObject with bytes and 2-D buffers (what a transfer delivers)."""
    store = make_store()
    array = np.arange(12, dtype=np.int16).reshape(3, 4)
    original = serialize(array)
    handmade = SerializedObject(inband=original.inband, buffers=[bytes(b) for b in original.buffers])
    store.create("o1", handmade)
    np.testing.assert_array_equal(store.get("o1"), array)
    two_d = SerializedObject(inband=original.inband, buffers=[memoryview(array)])
    store.create("o2", two_d)
    np.testing.assert_array_equal(store.get("o2"), array)


def test_sealing_works_on_file_systems_without_hard_links(make_store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_links(source: str, target: str) -> None:
        raise PermissionError(1, "Operation not permitted", source)

    store = make_store()
    monkeypatch.setattr(os, "link", no_links)
    store.create("o1", serialize(np.arange(100_000)))
    np.testing.assert_array_equal(store.get("o1"), np.arange(100_000))
    with pytest.raises(ObjectExistsError):
        store.client().create("o1", serialize(2))
    assert not [entry for entry in os.listdir(store.location.memory_dir) if entry.startswith(".tmp-")]
