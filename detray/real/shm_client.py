"""What any process of a node does with its object store: open objects by id, write new ones.

Owns: ``StoreLocation`` (the picklable address of a node's store that the
raylet hands to its workers), ``StoreClient`` (zero-copy reads and one-copy
writes of sealed object files), and the errors both sides raise. Must not:
account capacity, spill, delete, or keep an index: those are the owner's
(``detray.real.object_store.ObjectStore``). See ``object_store`` for the
theory of operation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from detray.real import shm_files, shm_layout
from detray.real.shm_layout import StoredObject
from detray.serialization import SerializedObject, deserialize


class ObjectNotInStoreError(KeyError):
    """The store has no object with this id (never created here, deleted, or another node's)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "object not in store"


class ObjectExistsError(ValueError):
    """An object with this id is already sealed in the store (objects are immutable)."""


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """What a process of the node needs to open the store's objects (picklable)."""

    name: str
    memory_dir: str
    spill_dir: str
    backend: str
    """``shm`` (``/dev/shm``) or ``file`` (files in the temp dir)."""

    def memory_path(self, object_id: str) -> str:
        return os.path.join(self.memory_dir, shm_files.object_file_name(object_id))

    def spill_path(self, object_id: str) -> str:
        return os.path.join(self.spill_dir, shm_files.object_file_name(object_id))


def read_mapped(path: str) -> StoredObject | None:
    """The sealed object at ``path``, mapped read-only and pinned while its buffers live; None if absent."""
    mapping = shm_files.map_sealed(path)
    if mapping is None:
        return None
    return shm_layout.read(memoryview(mapping), path)


class StoreClient:
    """Any process of the node: read objects by id without a copy, write new ones.

    Reads need no owner round trip. An object a client writes is the owner's
    only after ``ObjectStore.adopt`` (the raylet forwards the worker's
    "sealed" message); ask ``ObjectStore.reserve`` first so that capacity
    holds (``in_memory=False`` when it answered that there is no room).
    """

    def __init__(self, location: StoreLocation) -> None:
        self.location = location

    def get(self, object_id: str) -> Any:
        """The value; numpy arrays are read-only views that pin the object while alive."""
        return deserialize(self.get_stored(object_id).serialized, read_only=True)

    def get_stored(self, object_id: str) -> StoredObject:
        """The sealed object, buffers as read-only views of its mapping (they pin it).

        A spilled object is mapped from its disk copy; to have it back in
        memory, the owner's ``restore`` must run first (the raylet's job).
        """
        for path in (self.location.memory_path(object_id), self.location.spill_path(object_id)):
            stored = read_mapped(path)
            if stored is not None:
                return stored
        raise ObjectNotInStoreError(
            f"object {object_id} is not in object store {self.location.name} "
            f"({self.location.memory_dir}, {self.location.spill_dir})"
        )

    def contains(self, object_id: str) -> bool:
        return os.path.exists(self.location.memory_path(object_id)) or os.path.exists(
            self.location.spill_path(object_id)
        )

    def create(
        self, object_id: str, serialized: SerializedObject, *, is_error: bool = False, in_memory: bool = True
    ) -> int:
        """Write and seal ``object_id`` (one copy of the buffers); returns its size in bytes."""
        location = self.location
        directory = location.memory_dir if in_memory else location.spill_dir
        try:
            return shm_files.write_sealed(
                directory, shm_files.object_file_name(object_id), serialized, is_error=is_error
            )
        except FileExistsError:
            raise ObjectExistsError(f"object {object_id} is already sealed in {directory}") from None
