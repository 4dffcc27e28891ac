"""The byte layout of one sealed object file in the node's object store.

Owns: how a ``SerializedObject`` (in-band pickle, out-of-band buffers,
contained ids) and its error flag are laid out in one file, written once with
``pwrite`` (the producer's only copy), and read back as read-only
``memoryview`` slices of a mapping (no copy). Must not: open, lock, name or
delete files (``shm_files``), decide capacity (``object_store``), or unpickle.

Layout (little-endian, every buffer starts on a 64-byte boundary so numpy
views are aligned for SIMD)::

    header   magic "DTRYOBJ1" | version u16 | flags u16 | buffer count u32
             | in-band bytes u64 | metadata bytes u64
    table    (offset u64, length u64) per out-of-band buffer
    metadata JSON {"refs": [...], "actors": [...]} (absent when both are empty)
    in-band  the pickle
    buffers  each at its table offset, zero padding in between
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

from detray.core.ids import ActorID, ObjectID
from detray.serialization import SerializedObject

MAGIC = b"DTRYOBJ1"
VERSION = 1
ALIGN_BYTES = 64
"""Out-of-band buffers start on this boundary (a cache line; AVX-512 loads)."""
BUFFERS_MAX = 1 << 20
"""A header claiming more buffers than this is corrupt (bounds the table read)."""
WRITE_CHUNK_BYTES = 1 << 30
"""One ``pwrite`` call writes at most this much (Linux caps a write near 2 GiB)."""
FLAG_ERROR = 1
"""The value is a task's exception stored as its return."""

_HEADER = struct.Struct("<8sHHIQQ")
_ENTRY = struct.Struct("<QQ")


def _align(offset: int) -> int:
    return (offset + ALIGN_BYTES - 1) // ALIGN_BYTES * ALIGN_BYTES


@dataclass(frozen=True, slots=True)
class StoredObject:
    """A sealed object as read from the store: buffers are read-only views of its mapping.

    Keeping ``serialized.buffers`` (or anything built on them) alive keeps the
    object pinned in the store.
    """

    serialized: SerializedObject
    is_error: bool
    size_bytes: int


def _flat(buffer: object) -> memoryview:
    view = memoryview(buffer)  # type: ignore[arg-type]
    return view if view.ndim == 1 and view.format == "B" else view.cast("B")


def _plan(serialized: SerializedObject, is_error: bool) -> tuple[list[tuple[int, memoryview]], int]:
    """(file offset, bytes) pieces to write, and the total file size in bytes."""
    buffers = [_flat(buffer) for buffer in serialized.buffers]
    meta = b""
    if serialized.contained_refs or serialized.contained_actors:
        meta = json.dumps(
            {"refs": list(serialized.contained_refs), "actors": list(serialized.contained_actors)}
        ).encode()
    inband_offset = _HEADER.size + _ENTRY.size * len(buffers) + len(meta)
    offset = inband_offset + len(serialized.inband)
    table = bytearray()
    placed: list[tuple[int, memoryview]] = []
    for buffer in buffers:
        offset = _align(offset)
        table += _ENTRY.pack(offset, buffer.nbytes)
        placed.append((offset, buffer))
        offset += buffer.nbytes
    header = _HEADER.pack(
        MAGIC, VERSION, FLAG_ERROR if is_error else 0, len(buffers), len(serialized.inband), len(meta)
    )
    head = memoryview(header + bytes(table) + meta)
    return [(0, head), (inband_offset, memoryview(serialized.inband)), *placed], offset


def size_bytes(serialized: SerializedObject) -> int:
    """The size of the file ``write`` makes for ``serialized`` (what the store accounts)."""
    return _plan(serialized, False)[1]


def write(fd: int, serialized: SerializedObject, *, is_error: bool) -> int:
    """Write the object to the empty file ``fd``; returns its size in bytes."""
    pieces, total_bytes = _plan(serialized, is_error)
    for offset, data in pieces:
        done = 0
        while done < data.nbytes:
            done += os.pwrite(fd, data[done : done + WRITE_CHUNK_BYTES], offset + done)
    os.ftruncate(fd, total_bytes)
    return total_bytes


def read(view: memoryview, source: str) -> StoredObject:
    """Parse a sealed object from ``view`` (read-only); buffers are slices of it.

    ``source`` names the file in errors. Raises ``ValueError`` for a file
    that is not a sealed object of this version.
    """
    if view.nbytes < _HEADER.size:
        raise ValueError(f"{source}: {view.nbytes} bytes is too short for an object header")
    magic, version, flags, count, inband_len, meta_len = _HEADER.unpack_from(view, 0)
    if magic != MAGIC or version != VERSION:
        raise ValueError(f"{source}: not a detray object file (magic {magic!r}, version {version})")
    if count > BUFFERS_MAX:
        raise ValueError(f"{source}: header claims {count} buffers (max {BUFFERS_MAX})")
    meta_offset = _HEADER.size + _ENTRY.size * count
    inband_offset = meta_offset + meta_len
    if inband_offset + inband_len > view.nbytes:
        raise ValueError(f"{source}: header runs past the end of the file ({view.nbytes} bytes)")
    buffers: list[memoryview] = []
    for index in range(count):
        offset, length = _ENTRY.unpack_from(view, _HEADER.size + _ENTRY.size * index)
        if offset + length > view.nbytes:
            raise ValueError(f"{source}: buffer {index} runs past the end of the file")
        buffers.append(view[offset : offset + length])
    refs: list[ObjectID] = []
    actors: list[ActorID] = []
    if meta_len:
        meta = json.loads(bytes(view[meta_offset:inband_offset]))
        refs = [ObjectID(ref) for ref in meta["refs"]]
        actors = [ActorID(actor) for actor in meta["actors"]]
    serialized = SerializedObject(
        inband=bytes(view[inband_offset : inband_offset + inband_len]),
        buffers=list(buffers),
        contained_refs=refs,
        contained_actors=actors,
    )
    return StoredObject(serialized=serialized, is_error=bool(flags & FLAG_ERROR), size_bytes=view.nbytes)
