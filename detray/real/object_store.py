"""The node's object store: immutable objects in shared memory, zero-copy reads, spilling to disk.

Owns: the objects of one node (their files, sizes, whether a copy is in
memory or on disk), the store's capacity in bytes and the spilling that
keeps memory under it, and reading an object by id from any process of the
node (``StoreClient``). Must not: decide which objects to free or where
copies should be (the core's object directory decides; the raylet carries
its commands out here), talk to other nodes, or copy buffer data on ``get``.

Theory of operation. One object is one sealed file (layout: ``shm_layout``)
in the store's memory directory, ``/dev/shm/detray-obj-<name>/`` (tmpfs,
i.e. shared memory) or, when ``/dev/shm`` is absent or smaller than the
store, the same directory in the temp dir (file-backed mmap; Ray falls back
the same way). The file name is the object id, so any process of the node
that knows the ``StoreLocation`` opens an object with no index lookup and no
round trip: open, ``flock(LOCK_SH)``, ``mmap`` read-only (``shm_files``).
``create`` writes the in-band pickle and the out-of-band buffers once with
``pwrite`` (the producer's only copy) and seals the file by hard link;
``get`` maps it and unpickles with the buffers as read-only slices of the
mapping, so numpy arrays are views of shared memory and ``get`` of 1 GiB costs
what ``get`` of 1 MiB does.

Pinning: a mapping holds a shared ``flock`` for as long as it lives, and it
lives as long as any array or memoryview made from it (buffer exports keep
the ``mmap`` object alive; the kernel keeps pages of an unlinked file while
mapped). The owner asks "is anyone using this object?" by trying
``LOCK_EX`` without waiting; the kernel answers for every process of the node
and forgets a process that died. Memory is never reused under a live view:
a freed file's pages go back to the kernel, never to another object.

Capacity: ``used_bytes`` counts in-memory copies, reservations for objects
being written, and copies deleted or spilled while still mapped (their
memory comes back when the last view goes). To make room the store spills
least-recently-used objects that nobody maps (copy to the spill directory,
then unlink the memory copy; the disk copy is kept until ``delete``, so
spilling a restored object again is free). When nothing more can be spilled,
or an object is larger than the store, it is written straight to the spill
directory and mapped from there (Ray's fallback allocation). ``get`` of a
spilled object restores it into memory when room can be made. Spilling
stops with ``OutOfDiskError`` before the spill disk passes
``disk_usage_fraction_max`` (Ray's ``local_fs_capacity_threshold``).

Nothing left behind: ``close`` removes both directories (a still-mapped
file's memory returns when its views go); a store that dies without
``close`` (SIGKILL) leaves directories whose ``.owner`` lock the kernel has
released, and ``cleanup_stale`` (run by every new store) removes them.

POSIX only (``fcntl.flock``, ``mmap``). A process that ``fork``s without
``exec`` shares the owner's lock: its directories count as live until that
child exits too.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import os
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass
from typing import Any

from detray.exceptions import OutOfDiskError
from detray.real import shm_files, shm_layout
from detray.real.shm_client import (
    ObjectExistsError,
    ObjectNotInStoreError,
    StoreClient,
    StoreLocation,
    read_mapped,
)
from detray.real.shm_files import BACKEND_AUTO, STALE_GRACE_S, cleanup_stale
from detray.real.shm_layout import StoredObject
from detray.serialization import SerializedObject, deserialize

logger = logging.getLogger(__name__)

__all__ = [
    "ObjectExistsError",
    "ObjectInfo",
    "ObjectNotInStoreError",
    "ObjectStore",
    "StoreClient",
    "StoreLocation",
    "StoreStats",
    "StoredObject",
    "cleanup_stale",
]

DISK_USAGE_FRACTION_MAX = 0.95
"""Spilling stops before the spill disk is fuller than this (Ray's default threshold)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size_bytes: int
    in_memory: bool
    on_disk: bool


@dataclass(frozen=True, slots=True)
class StoreStats:
    backend: str
    capacity_bytes: int
    used_bytes: int
    """In-memory copies + reservations + deferred (deleted or spilled, still mapped)."""
    deferred_bytes: int
    objects: int
    in_memory_objects: int
    spilled_objects: int
    """Objects whose only copy is on disk."""
    disk_bytes: int
    spills: int
    restores: int
    fallback_allocations: int


@dataclass(slots=True)
class _Entry:
    size_bytes: int
    in_memory: bool
    on_disk: bool
    last_use: int


@dataclass(slots=True)
class _Deferred:
    """A memory copy unlinked while mapped: its bytes count until the last view goes."""

    object_id: str
    size_bytes: int
    fd: int


def _finalize(owner_pid: int, dirs: list[str], fds: list[int], deferred: list[_Deferred]) -> None:
    if os.getpid() != owner_pid:
        return  # a forked child exiting: the store is its parent's
    for item in deferred:
        os.close(item.fd)
    deferred.clear()
    for path in dirs:
        shutil.rmtree(path, ignore_errors=True)
        if os.path.lexists(path):
            logger.error("object store: could not remove %s", path)
    for fd in fds:  # the owner locks go last: until here the directories are visibly live
        os.close(fd)
    fds.clear()


class ObjectStore:
    """The store of one node, owned by one process (the raylet); see the module docstring.

    Thread-safe. ``capacity_bytes`` bounds the bytes in memory; ``backend`` is
    ``auto`` (``/dev/shm`` when it has room, else files), ``shm`` or ``file``.
    ``memory_root`` and ``spill_root`` override where the two directories go
    (default: per backend, and the temp dir). ``stale_grace_s`` is passed to
    ``cleanup_stale`` at start (None skips it).
    """

    def __init__(
        self,
        capacity_bytes: int,
        *,
        name: str | None = None,
        backend: str = BACKEND_AUTO,
        memory_root: str | None = None,
        spill_root: str | None = None,
        disk_usage_fraction_max: float = DISK_USAGE_FRACTION_MAX,
        stale_grace_s: float | None = STALE_GRACE_S,
    ) -> None:
        if capacity_bytes <= 0:
            raise ValueError(f"object store capacity_bytes must be > 0, got {capacity_bytes}")
        if not 0.0 < disk_usage_fraction_max <= 1.0:
            raise ValueError(f"disk_usage_fraction_max must be in (0, 1], got {disk_usage_fraction_max}")
        name = shm_files.check_store_name(name or shm_files.new_store_name())
        root, chosen = shm_files.choose_memory_root(capacity_bytes, backend)
        if memory_root is not None:
            root = memory_root
        if stale_grace_s is not None:
            cleanup_stale(grace_s=stale_grace_s)
        self.capacity_bytes = capacity_bytes
        self.disk_usage_fraction_max = disk_usage_fraction_max
        self.location = StoreLocation(
            name=name,
            memory_dir=shm_files.memory_dir(root, name),
            spill_dir=shm_files.spill_dir(spill_root or tempfile.gettempdir(), name),
            backend=chosen,
        )
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._reserved: dict[str, int] = {}
        self._deferred: list[_Deferred] = []
        self._owner_fds: list[int] = []
        self._ticks = itertools.count()
        self._counts = {"spills": 0, "restores": 0, "fallback_allocations": 0}
        made: list[str] = []  # only what this store made is ever removed
        self._finalizer = weakref.finalize(self, _finalize, os.getpid(), made, self._owner_fds, self._deferred)
        for path in (self.location.memory_dir, self.location.spill_dir):
            self._owner_fds.append(shm_files.create_owned_dir(path))
            made.append(path)

    # --- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every object file, spill file and both directories. Idempotent.

        Views still alive stay valid; their memory returns when they go.
        """
        with self._lock:
            self._entries.clear()
            self._reserved.clear()
            self._finalizer()

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def client(self) -> StoreClient:
        return StoreClient(self.location)

    # --- objects -----------------------------------------------------------------------------

    def create(self, object_id: str, serialized: SerializedObject, *, is_error: bool = False) -> int:
        """Store ``serialized`` as ``object_id`` (one copy of its buffers); returns its size.

        Spills unused objects to make room; an object that still does not fit
        is written to disk (fallback allocation). Raises ``ObjectExistsError``
        when the id is taken, ``OutOfDiskError`` when the spill disk is full.
        """
        size_bytes = shm_layout.size_bytes(serialized)
        in_memory = self.reserve(object_id, size_bytes)
        client = self.client()
        try:
            try:
                client.create(object_id, serialized, is_error=is_error, in_memory=in_memory)
            except OSError as error:
                if error.errno != errno.ENOSPC or not in_memory:
                    raise
                logger.warning("object store: %s is full, writing %s to disk", self.location.memory_dir, object_id)
                with self._lock:
                    self._reserved[object_id] = 0  # still taken, no longer counted in memory
                    self._check_disk(object_id, size_bytes)
                    self._counts["fallback_allocations"] += 1
                in_memory = False
                client.create(object_id, serialized, is_error=is_error, in_memory=False)
        except OSError as error:
            with self._lock:
                self._reserved.pop(object_id, None)
            if error.errno == errno.ENOSPC:
                raise OutOfDiskError(
                    f"object {object_id} ({size_bytes} bytes) does not fit on {self.location.spill_dir}"
                ) from error
            raise
        except BaseException:
            with self._lock:
                self._reserved.pop(object_id, None)
            raise
        self.adopt(object_id)
        return size_bytes

    def reserve(self, object_id: str, size_bytes: int) -> bool:
        """Make room for ``object_id`` about to be written; True: write it to memory,
        False: no room can be made, write it to the spill directory."""
        with self._lock:
            self._check_open()
            if object_id in self._entries or object_id in self._reserved:
                raise ObjectExistsError(f"object {object_id} already exists in object store {self.location.name}")
            if self._make_room(size_bytes):
                self._reserved[object_id] = size_bytes
                return True
            self._check_disk(object_id, size_bytes)
            self._counts["fallback_allocations"] += 1
            self._reserved[object_id] = 0
            return False

    def adopt(self, object_id: str) -> int:
        """Take a sealed file a client wrote for ``object_id`` into the index; returns its size."""
        with self._lock:
            self._check_open()
            if object_id in self._entries:
                raise ObjectExistsError(f"object {object_id} already exists in object store {self.location.name}")
            reserved_bytes = self._reserved.pop(object_id, None)
            in_memory = os.path.exists(self.location.memory_path(object_id))
            path = self.location.memory_path(object_id) if in_memory else self.location.spill_path(object_id)
            try:
                size_bytes = os.stat(path).st_size
            except FileNotFoundError:
                raise ObjectNotInStoreError(
                    f"object {object_id} to adopt is sealed in neither {self.location.memory_dir} "
                    f"nor {self.location.spill_dir}"
                ) from None
            self._entries[object_id] = _Entry(size_bytes, in_memory, not in_memory, next(self._ticks))
            if in_memory and (reserved_bytes or 0) < size_bytes:
                self._make_room(0)  # written without (enough) reservation: get back under capacity
            return size_bytes

    def get(self, object_id: str) -> Any:
        """The value of ``object_id``; numpy arrays are read-only views of shared memory
        that keep the object pinned while they live. A spilled object is restored."""
        return deserialize(self.get_stored(object_id).serialized, read_only=True)

    def get_stored(self, object_id: str) -> StoredObject:
        """The sealed object, buffers as read-only views that pin it (e.g. to send it on)."""
        with self._lock:
            entry = self._entry(object_id)
            entry.last_use = next(self._ticks)
            if not entry.in_memory:
                self._restore(object_id, entry)
            location = self.location
            path = location.memory_path(object_id) if entry.in_memory else location.spill_path(object_id)
            stored = read_mapped(path)
        if stored is None:
            raise RuntimeError(f"object store {location.name}: the file of {object_id} ({path}) vanished")
        return stored

    def contains(self, object_id: str) -> bool:
        with self._lock:
            return object_id in self._entries

    def info(self, object_id: str) -> ObjectInfo:
        with self._lock:
            entry = self._entry(object_id)
            return ObjectInfo(entry.size_bytes, entry.in_memory, entry.on_disk)

    def in_use(self, object_id: str) -> bool:
        """True while some process of the node maps the in-memory copy of ``object_id``."""
        with self._lock:
            entry = self._entry(object_id)
            return entry.in_memory and self._mapped(object_id)

    def delete(self, object_id: str) -> bool:
        """Free ``object_id``; False when the store does not have it.

        Views still alive stay valid; the memory returns when they go (counted
        in ``used_bytes`` until then).
        """
        with self._lock:
            self._check_open()
            entry = self._entries.pop(object_id, None)
            if entry is None:
                return False
            if entry.in_memory:
                self._drop_memory_copy(object_id, entry, force=True)
            if entry.on_disk:
                try:
                    os.unlink(self.location.spill_path(object_id))
                except FileNotFoundError:
                    logger.warning("object store: spill file of %s was already gone", object_id)
            return True

    def spill(self, object_id: str) -> bool:
        """Move ``object_id`` to disk (the directory's ``SpillObject``); True when its memory
        is free now, False when views still map it (freed when they go)."""
        with self._lock:
            self._check_open()
            entry = self._entry(object_id)
            if not entry.in_memory:
                return True
            self._ensure_on_disk(object_id, entry)
            deferred_before = len(self._deferred)
            self._drop_memory_copy(object_id, entry, force=True)
            self._counts["spills"] += 1
            return len(self._deferred) == deferred_before

    def restore(self, object_id: str) -> bool:
        """Read spilled ``object_id`` back into memory; False when no room can be made."""
        with self._lock:
            self._check_open()
            entry = self._entry(object_id)
            self._restore(object_id, entry)
            return entry.in_memory

    # --- accounting --------------------------------------------------------------------------

    @property
    def used_bytes(self) -> int:
        with self._lock:
            self._release_deferred()
            return self._used_bytes()

    def stats(self) -> StoreStats:
        with self._lock:
            self._release_deferred()
            entries = self._entries.values()
            return StoreStats(
                backend=self.location.backend,
                capacity_bytes=self.capacity_bytes,
                used_bytes=self._used_bytes(),
                deferred_bytes=sum(item.size_bytes for item in self._deferred),
                objects=len(self._entries),
                in_memory_objects=sum(1 for entry in entries if entry.in_memory),
                spilled_objects=sum(1 for entry in entries if not entry.in_memory),
                disk_bytes=sum(entry.size_bytes for entry in entries if entry.on_disk),
                **self._counts,
            )

    def sweep_abandoned(self) -> list[str]:
        """Remove half-written files of writers that died (call when a worker dies)."""
        with self._lock:
            self._check_open()
            return [
                *shm_files.sweep_abandoned_temps(self.location.memory_dir),
                *shm_files.sweep_abandoned_temps(self.location.spill_dir),
            ]

    # --- internals (called with the lock held) -------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError(f"object store {self.location.name} is closed")

    def _entry(self, object_id: str) -> _Entry:
        self._check_open()
        entry = self._entries.get(object_id)
        if entry is None:
            raise ObjectNotInStoreError(f"object {object_id} is not in object store {self.location.name}")
        return entry

    def _used_bytes(self) -> int:
        in_memory = sum(entry.size_bytes for entry in self._entries.values() if entry.in_memory)
        return in_memory + sum(self._reserved.values()) + sum(item.size_bytes for item in self._deferred)

    def _release_deferred(self) -> None:
        kept = []
        for item in self._deferred:
            try:
                fcntl.flock(item.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                kept.append(item)
                continue
            os.close(item.fd)  # the last reference to the unlinked file: its memory is free
        self._deferred[:] = kept

    def _make_room(self, size_bytes: int) -> bool:
        """Spill unused objects, least recently used first, until ``size_bytes`` more fit.

        Plans first: when even spilling every unused object would not do, spills
        nothing and answers False (the caller falls back to disk).
        """
        self._release_deferred()
        if size_bytes > self.capacity_bytes:
            return False
        excess_bytes = self._used_bytes() + size_bytes - self.capacity_bytes
        if excess_bytes <= 0:
            return True
        by_age = sorted(
            (entry.last_use, object_id) for object_id, entry in self._entries.items() if entry.in_memory
        )
        unused = [object_id for _, object_id in by_age if not self._mapped(object_id)]
        if sum(self._entries[object_id].size_bytes for object_id in unused) < excess_bytes:
            return False
        for object_id in unused:
            entry = self._entries[object_id]
            if self._spill_if_unused(object_id, entry):
                self._counts["spills"] += 1
                excess_bytes -= entry.size_bytes
                if excess_bytes <= 0:
                    return True
        return False  # some became mapped meanwhile

    def _mapped(self, object_id: str) -> bool:
        fd = shm_files.lock_exclusive_nowait(self.location.memory_path(object_id))
        if fd is None:
            return True
        os.close(fd)
        return False

    def _spill_if_unused(self, object_id: str, entry: _Entry) -> bool:
        if self._mapped(object_id):
            return False  # spilling would not free its memory
        self._ensure_on_disk(object_id, entry)
        return self._drop_memory_copy(object_id, entry, force=False)

    def _ensure_on_disk(self, object_id: str, entry: _Entry) -> None:
        if entry.on_disk:
            return
        self._check_disk(object_id, entry.size_bytes)
        location = self.location
        shm_files.copy_sealed(
            location.memory_path(object_id), location.spill_dir, shm_files.object_file_name(object_id)
        )
        entry.on_disk = True

    def _drop_memory_copy(self, object_id: str, entry: _Entry, *, force: bool) -> bool:
        """Unlink the memory copy; when mapped, only with ``force`` (its bytes then stay
        counted as deferred until the last mapping goes). True when dropped."""
        path = self.location.memory_path(object_id)
        fd = shm_files.lock_exclusive_nowait(path)
        if fd is None:
            if not force:
                return False
            fd = os.open(path, os.O_RDONLY)  # keeps the inode to learn when the last view goes
            self._deferred.append(_Deferred(object_id, entry.size_bytes, fd))
            os.unlink(path)
        else:
            os.unlink(path)
            os.close(fd)
        entry.in_memory = False
        return True

    def _restore(self, object_id: str, entry: _Entry) -> None:
        if entry.in_memory or not self._make_room(entry.size_bytes):
            return  # not restorable now: readers map the spill file (fallback)
        location = self.location
        shm_files.copy_sealed(
            location.spill_path(object_id), location.memory_dir, shm_files.object_file_name(object_id)
        )
        entry.in_memory = True
        self._counts["restores"] += 1

    def _check_disk(self, object_id: str, size_bytes: int) -> None:
        free_bytes, total_bytes = shm_files.disk_free_bytes(self.location.spill_dir)
        used_after = total_bytes - free_bytes + size_bytes
        if used_after > self.disk_usage_fraction_max * total_bytes:
            raise OutOfDiskError(
                f"object store {self.location.name}: writing {object_id} ({size_bytes} bytes) to "
                f"{self.location.spill_dir} would fill its disk past {self.disk_usage_fraction_max:.0%} "
                f"({free_bytes} of {total_bytes} bytes free); memory: {self._used_bytes()} of "
                f"{self.capacity_bytes} bytes used, by objects still mapped or too large to fit"
            )

