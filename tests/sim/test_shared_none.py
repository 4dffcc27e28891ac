"""A ``None`` result is stored as the one shared ``NONE_STORED`` record, and reads the same."""

from __future__ import annotations

from detray.serialization import serialize, serialize_returns
from detray.sim.objects import NONE_SERIALIZED, NONE_STORED, freeze, read, serialize_result


def test_none_freezes_to_the_shared_record() -> None:
    assert freeze(serialize(None)) is NONE_STORED
    assert freeze(NONE_SERIALIZED) is NONE_STORED
    fresh = serialize(None)
    assert NONE_STORED.serialized.inband == fresh.inband
    assert NONE_STORED.size_bytes == fresh.total_bytes
    assert (NONE_STORED.is_error, NONE_STORED.contained_refs, NONE_STORED.contained_actors) == (False, (), ())
    assert read(NONE_STORED) is None


def test_other_values_and_errors_are_not_shared() -> None:
    values: tuple[object, ...] = (0, False, "", b"", [], (None,), {"a": None})
    for value in values:
        assert freeze(serialize(value)) is not NONE_STORED
        assert read(freeze(serialize(value))) == value
    assert freeze(serialize(None), is_error=True) is not NONE_STORED


def test_serialize_result_matches_serialize_returns() -> None:
    for result, count in ((None, 1), (None, 0), (1, 1), ((None, None), 2), ([None], 1)):
        ours = serialize_result(result, "f", count)
        theirs = serialize_returns(result, "f", count)
        assert [s.inband for s in ours] == [s.inband for s in theirs]
    assert serialize_result(None, "f", 1)[0] is NONE_SERIALIZED
