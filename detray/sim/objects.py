"""The bytes of simulated objects: one immutable serialized value per object.

Owns: each object's serialized value (``detray.serialization``), whether it
is an error value (a task's exception stored as its return), its size and
the refs and actor handles it contains; and where its copies physically are
(presence per node, in memory or spilled), so faults can pick copies to
evict. Must not: decide anything about copies (the object directory decides;
this module only records what the driver carried out) or hand out the stored
memory: ``read`` deserializes a fresh value each time, with numpy arrays as
read-only views, so mutating a received value never changes the stored one.

Buffers are copied once when a value is stored (``freeze``): a later change
to the array the user ``put`` does not reach the stored object, as in Ray.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detray.core.ids import ActorID, NodeID, ObjectID
from detray.serialization import SerializedObject, deserialize, serialize, serialize_returns


@dataclass(slots=True)
class StoredValue:
    serialized: SerializedObject
    is_error: bool
    size_bytes: int
    contained_refs: tuple[ObjectID, ...] = ()
    contained_actors: tuple[ActorID, ...] = ()


def freeze(serialized: SerializedObject, *, is_error: bool = False) -> StoredValue:
    """An immutable stored value: out-of-band buffers copied to ``bytes``."""
    if serialized.inband == _NONE_INBAND and not is_error:  # ``None`` (nothing else pickles to these bytes)
        return NONE_STORED
    if serialized.buffers:
        serialized = SerializedObject(
            inband=serialized.inband,
            buffers=[b if isinstance(b, bytes) else bytes(b) for b in serialized.buffers],
            contained_refs=serialized.contained_refs,
            contained_actors=serialized.contained_actors,
        )
    # Positional, in field order: a third of the keyword call's cost (one per stored value).
    return StoredValue(
        serialized,
        is_error,
        serialized.total_bytes,
        tuple(serialized.contained_refs),
        tuple(serialized.contained_actors),
    )


NONE_SERIALIZED = serialize(None)
"""``None`` serialized, shared by every ``None`` result (``serialize_result``); never mutated."""

_NONE_INBAND = NONE_SERIALIZED.inband

NONE_STORED = StoredValue(NONE_SERIALIZED, False, NONE_SERIALIZED.total_bytes)
"""The stored value of every ``None`` result: each reader (``read``, sizes, pulls, spills,
evictions, lineage re-stores) only reads a stored value, and one that contains nothing and
is no error reads the same from any object, so one record serves them all (no
``SerializedObject`` + three lists + ``StoredValue`` per task kept alive until the get)."""


def serialize_result(result: Any, name: str, count: int) -> list[SerializedObject]:
    """``serialize_returns``, with a lone ``None`` result (the common no-op task) as the
    shared ``NONE_SERIALIZED`` rather than a fresh copy of the same bytes."""
    if result is None and count == 1:
        return [NONE_SERIALIZED]
    return serialize_returns(result, name, count)


def read(value: StoredValue) -> Any:
    """A fresh copy of the value (numpy arrays read-only views of the stored bytes)."""
    return deserialize(value.serialized, read_only=True)


class ObjectValues:
    """Values by object id, and physical copy presence by node."""

    def __init__(self) -> None:
        self._values: dict[ObjectID, StoredValue] = {}
        self._copies: dict[NodeID, dict[ObjectID, bool]] = {}
        """node -> object -> spilled (insertion ordered)."""
        self._nodes_of: dict[ObjectID, dict[NodeID, None]] = {}

    # values

    def store(self, obj: ObjectID, value: StoredValue) -> StoredValue | None:
        """Record ``obj``'s value; returns the value it replaces (a recreation), if any."""
        previous = self._values.get(obj)
        self._values[obj] = value
        return previous

    def get(self, obj: ObjectID) -> StoredValue | None:
        return self._values.get(obj)

    def drop(self, obj: ObjectID) -> StoredValue | None:
        """Forget the bytes (every copy is gone); returns what was dropped."""
        for node in self._nodes_of.pop(obj, ()):
            self._copies[node].pop(obj, None)
        return self._values.pop(obj, None)

    def __len__(self) -> int:
        return len(self._values)

    # copies

    def add_copy(self, obj: ObjectID, node: NodeID, *, spilled: bool = False) -> None:
        on_node = self._copies.get(node)
        if on_node is None:
            on_node = self._copies[node] = {}
        on_node[obj] = spilled
        nodes = self._nodes_of.get(obj)
        if nodes is None:
            nodes = self._nodes_of[obj] = {}
        nodes[node] = None

    def set_spilled(self, obj: ObjectID, node: NodeID, spilled: bool) -> None:
        on_node = self._copies.get(node)
        if on_node is not None and obj in on_node:
            on_node[obj] = spilled

    def remove_copy(self, obj: ObjectID, node: NodeID) -> None:
        on_node = self._copies.get(node)
        if on_node is not None:
            on_node.pop(obj, None)
        nodes = self._nodes_of.get(obj)
        if nodes is not None:
            nodes.pop(node, None)
            if not nodes:
                del self._nodes_of[obj]

    def drop_node(self, node: NodeID) -> list[ObjectID]:
        """Every copy on ``node`` is gone (the node died); returns the objects it held."""
        on_node = self._copies.pop(node, {})
        for obj in on_node:
            nodes = self._nodes_of.get(obj)
            if nodes is not None:
                nodes.pop(node, None)
                if not nodes:
                    del self._nodes_of[obj]
        return list(on_node)

    def in_memory_on(self, node: NodeID) -> list[tuple[ObjectID, int]]:
        """(object, size) of the in-memory copies on ``node``, sorted by object id."""
        on_node = self._copies.get(node, {})
        out = []
        for obj in sorted(on_node):
            if not on_node[obj]:
                value = self._values.get(obj)
                out.append((obj, 0 if value is None else value.size_bytes))
        return out

    def has_copies(self, obj: ObjectID) -> bool:
        return obj in self._nodes_of
