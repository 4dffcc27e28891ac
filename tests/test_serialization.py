"""Serialization: round trips, zero-copy numpy buffers, contained refs, naming what cannot pickle."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from _fake_runtime import FakeRuntime

from detray import runtime, serialization, settings
from detray.actor import ActorHandle
from detray.object_ref import ObjectRef
from detray.options import ActorClassMeta
from detray.serialization import (
    SerializedObject,
    argument_label,
    deserialize,
    pickle_function,
    serialize,
    should_inline,
    unpickle_function,
)


@pytest.fixture
def fake() -> Iterator[FakeRuntime]:
    installed = FakeRuntime()
    previous = runtime.set_current(installed)
    yield installed
    runtime.set_current(previous)


def _round_trip(value: object) -> object:
    return deserialize(serialize(value))


# --- plain values ----------------------------------------------------------------------------


@dataclass
class Point:
    x: int
    y: float


@pytest.mark.parametrize(
    "value",
    [
        0,
        -7,
        3.5,
        "text",
        b"bytes",
        None,
        True,
        {"a": [1, 2, (3, 4)], "b": {"c": {5, 6}}, 7: frozenset({8})},
        [[[]], {}, (), "nested", [1.5, None]],
        Point(1, 2.5),
        {"points": [Point(i, i / 2) for i in range(3)]},
    ],
    ids=lambda v: type(v).__name__,
)
def test_values_survive_a_round_trip(value: object) -> None:
    assert _round_trip(value) == value


def test_functions_and_local_classes_travel_by_value() -> None:
    class Local:
        def __init__(self, n: int) -> None:
            self.n = n

    double = lambda v: v * 2  # noqa: E731

    copy = _round_trip({"fn": double, "obj": Local(4)})

    assert copy["fn"](21) == 42  # type: ignore[index]
    assert copy["obj"].n == 4  # type: ignore[index]


def test_a_round_trip_copies_mutable_values() -> None:
    original = {"items": [1, 2]}

    copy = _round_trip(original)
    copy["items"].append(3)  # type: ignore[index]

    assert original == {"items": [1, 2]}


# --- numpy arrays and out-of-band buffers --------------------------------------------------------------


def test_a_numpy_array_travels_out_of_band_without_a_copy() -> None:
    array = np.arange(1_000_000, dtype=np.float64)

    serialized = serialize(array)

    assert len(serialized.buffers) == 1
    assert len(serialized.inband) < 1_000  # the data is not in the pickle
    view = np.frombuffer(serialized.buffers[0], dtype=np.float64)
    assert np.shares_memory(view, array)

    restored = deserialize(serialized)
    assert np.shares_memory(restored, array)
    assert np.array_equal(restored, array)


def test_a_deserialized_array_is_read_only() -> None:
    restored = deserialize(serialize(np.ones(1000)))

    assert not restored.flags.writeable
    with pytest.raises(ValueError):
        restored[0] = 5.0


def test_an_array_from_a_read_only_buffer_stays_read_only_even_when_asked_otherwise() -> None:
    serialized = serialize(np.arange(100, dtype=np.int64))
    stored = SerializedObject(serialized.inband, [bytes(serialized.buffers[0])])

    restored = deserialize(stored, read_only=False)

    assert not restored.flags.writeable
    assert restored.tolist() == list(range(100))


def test_an_array_from_a_writable_buffer_is_writable_when_asked() -> None:
    serialized = serialize(np.zeros(10))
    writable = bytearray(serialized.buffers[0])

    restored = deserialize(SerializedObject(serialized.inband, [writable]), read_only=False)
    restored[0] = 9.0

    assert np.frombuffer(writable)[0] == 9.0  # a view of the buffer, not a copy


def test_arrays_nested_in_containers_each_get_a_buffer() -> None:
    value = {"a": np.arange(10), "b": [np.ones((3, 3)), np.zeros(5, dtype=np.int8)]}

    serialized = serialize(value)
    restored = deserialize(serialized)

    assert len(serialized.buffers) == 3
    assert np.array_equal(restored["a"], value["a"])
    assert np.array_equal(restored["b"][0], value["b"][0])
    assert restored["b"][1].dtype == np.int8


def test_total_bytes_counts_inband_and_buffers() -> None:
    array = np.arange(1000, dtype=np.int64)

    serialized = serialize(array)

    assert serialized.total_bytes == len(serialized.inband) + 8000


# --- inline or store -------------------------------------------------------------------------------------


def test_small_values_travel_inline_and_large_ones_go_to_the_store() -> None:
    small = serialize(list(range(100)))
    large = serialize(np.zeros(settings.INLINE_THRESHOLD_BYTES // 8 + 1))

    assert settings.INLINE_THRESHOLD_BYTES == 100 * 1024
    assert should_inline(small)
    assert not should_inline(large)


def test_the_inline_threshold_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    serialized = serialize(b"x" * 500)

    monkeypatch.setattr(settings, "INLINE_THRESHOLD_BYTES", 100)

    assert not should_inline(serialized)


# --- contained refs and handles ------------------------------------------------------------------------------


def test_refs_inside_a_value_are_recorded_once_in_order_and_come_back_as_refs(
    fake: FakeRuntime,
) -> None:
    first, second = ObjectRef("00000001aa.r1"), ObjectRef("00000001bb.p1", "driver")

    serialized = serialize({"x": [first, second, first], "y": (second,)})
    restored = deserialize(serialized)

    assert serialized.contained_refs == [first.id, second.id]
    assert restored["x"][0] == first and restored["y"][0] == second
    assert isinstance(restored["x"][1], ObjectRef) and restored["x"][1].owner == "driver"
    assert fake.escaped == []


def test_a_ref_pickled_outside_serialize_is_reported_as_escaped(fake: FakeRuntime) -> None:
    ref = ObjectRef("00000001aa.r1")

    copy = pickle.loads(pickle.dumps(ref))

    assert copy == ref
    assert fake.escaped == [ref.id]


def test_refs_count_themselves_with_the_runtime(fake: FakeRuntime) -> None:
    ref = ObjectRef("00000001aa.r1")
    copy = deserialize(serialize([ref]))[0]

    assert fake.local_refs[ref.id] == 2
    del copy
    assert fake.local_refs[ref.id] == 1
    del ref
    assert fake.local_refs["00000001aa.r1"] == 0


def test_refs_are_hashable_and_equal_by_id() -> None:
    a, b = ObjectRef("00000001aa.r1"), ObjectRef("00000001aa.r1")

    assert a == b and hash(a) == hash(b) and a is not b
    assert len({a, b, ObjectRef("00000001aa.r2")}) == 2
    assert repr(a) == "ObjectRef(00000001aa.r1)"
    assert a.hex() == "00000001aa.r1"
    assert a.task_id() == "00000001aa"


def test_actor_handles_inside_a_value_are_recorded(fake: FakeRuntime) -> None:
    meta = ActorClassMeta(class_name="Counter", module=__name__, methods={})
    handle = ActorHandle("A00000001cc", meta)

    serialized = serialize({"counter": handle})
    restored = deserialize(serialized)

    assert serialized.contained_actors == ["A00000001cc"]
    assert restored["counter"] == handle
    assert fake.actor_handles["A00000001cc"] == 2


# --- what cannot be pickled ----------------------------------------------------------------------------------


def test_an_unpicklable_argument_is_named_with_its_path_and_type() -> None:
    value = {"a": [1, {"lock": threading.Lock()}]}

    with pytest.raises(TypeError) as caught:
        serialize(value, argument_label("f", 0))

    message = str(caught.value)
    assert message.startswith("could not serialize argument 1 of f(): ")
    assert "value['a'][1]['lock']" in message
    assert "(a _thread.lock)" in message


def test_an_unpicklable_attribute_is_named() -> None:
    class Holder:
        def __init__(self) -> None:
            self.ok = [1, 2]
            self.guard = threading.Lock()

    with pytest.raises(TypeError, match=r"keyword argument 'h' of g\(\): value\.guard \(a _thread\.lock\)"):
        serialize(Holder(), argument_label("g", keyword="h"))


def test_an_unpicklable_closure_of_a_remote_function_is_named() -> None:
    lock = threading.Lock()

    def uses_lock() -> bool:
        return lock.locked()

    with pytest.raises(TypeError) as caught:
        pickle_function(uses_lock, "uses_lock")

    assert "uses_lock" in str(caught.value)
    assert "<closure lock>" in str(caught.value)
    assert "_thread.lock" in str(caught.value)


def test_functions_pickle_once_and_load_back() -> None:
    def add(a: int, b: int) -> int:
        return a + b

    assert unpickle_function(pickle_function(add))(2, 3) == 5


def test_the_probe_for_a_culprit_does_not_report_refs_as_escaped(fake: FakeRuntime) -> None:
    with pytest.raises(TypeError):
        serialize([ObjectRef("00000001aa.r1"), threading.Lock()])

    assert fake.escaped == []


def test_serialization_state_does_not_leak_after_an_error() -> None:
    with pytest.raises(TypeError):
        serialize([threading.Lock()])

    assert getattr(serialization._local, "context", None) is None
