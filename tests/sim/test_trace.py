"""The trace: a canonical line per event, a digest, and where two traces part."""

from __future__ import annotations

import enum
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detray.sim.trace import (
    SCHEMA_VERSION,
    Trace,
    TraceLevel,
    digest_lines,
    encode_line,
    first_difference,
)

REPO = Path(__file__).resolve().parents[2]


def record_story(trace: Trace) -> None:
    trace.emit(0, None, "cluster.started", nodes=2)
    trace.emit(0.25, "node-00000", "task.submitted", task="t1", function="f")
    trace.emit(0.1 + 0.2, "node-00001", "task.started", task="t1", attempt=1, worker="node-00001/w00000")
    trace.emit(1.5, "node-00001", "net.message", level=TraceLevel.DEBUG, src="node-00000", size=10)
    trace.emit(2.0, "node-00001", "task.finished", attempt=1, task="t1", returns=["t1.r1"])


def test_a_line_is_canonical_json_with_sorted_keys_and_the_schema_version() -> None:
    trace = Trace()
    record_story(trace)
    assert trace.lines[0] == '{"kind":"cluster.started","node":null,"nodes":2,"seq":0,"t":0.0,"v":1}'
    assert trace.lines[2] == (
        '{"attempt":1,"kind":"task.started","node":"node-00001","seq":2,'
        '"t":0.30000000000000004,"task":"t1","v":1,"worker":"node-00001/w00000"}'
    )
    for seq, line in enumerate(trace.lines):
        record = json.loads(line)
        assert record["v"] == SCHEMA_VERSION and record["seq"] == seq
        assert line == json.dumps(record, sort_keys=True, separators=(",", ":"))


def test_field_order_does_not_change_the_bytes() -> None:
    a = encode_line(3, 1.0, "n", "k", {"task": "t", "attempt": 2})
    b = encode_line(3, 1.0, "n", "k", {"attempt": 2, "task": "t"})
    assert a == b


class _Level(enum.IntEnum):
    HIGH = 3


class _Mode(str, enum.Enum):
    HOLD = "hold"


@pytest.mark.parametrize(
    "value",
    [
        "plain", "", "é\u2028日本\ud800", 'quote" back\\ nl\n nul\x00', "{0} %s", 0, -7, 10**30, True, False, None,
        0.1 + 0.2, -0.0, 5e-324, 1e300, _Level.HIGH, _Mode.HOLD, ["a", 1, None, [2.5]], (1, 2), {"b": 1, "a": {"z": 0}},
    ],
)
def test_a_line_is_the_reference_json_of_the_record_whatever_the_value(value: object) -> None:
    fields = {"zeta": value, "alpha": 1, "kind_of": value}
    record = {**fields, "v": SCHEMA_VERSION, "t": 2.5, "seq": 9, "node": "node-00001", "kind": "k"}
    expected = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    assert encode_line(9, 2.5, "node-00001", "k", fields) == expected
    assert encode_line(9, 2.5, "node-00001", "k", fields) == expected  # from the cached template


def test_odd_kinds_keys_and_values_are_encoded_or_refused_as_json_does() -> None:
    line = encode_line(0, 1.0, None, ["k"], {"a": 1})  # type: ignore[arg-type]
    assert line == '{"a":1,"kind":["k"],"node":null,"seq":0,"t":1.0,"v":1}'
    with pytest.raises(TypeError, match="not supported between"):  # json cannot sort int and str keys
        encode_line(0, 1.0, None, "k", {2: "x"})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="Out of range float"):
        encode_line(0, 1.0, None, "k", {"x": float("nan")})
    with pytest.raises(TypeError, match="not JSON serializable"):
        encode_line(0, 1.0, None, "k", {"x": [object()]})


def test_the_same_events_give_the_same_bytes_and_digest() -> None:
    first, second = Trace(), Trace()
    record_story(first)
    record_story(second)
    assert first.lines == second.lines
    assert first.digest() == second.digest() == digest_lines(first.lines)
    expected = hashlib.sha256("".join(line + "\n" for line in first.lines).encode()).hexdigest()
    assert first.digest() == expected


def test_one_changed_event_changes_the_digest() -> None:
    first, second = Trace(), Trace()
    record_story(first)
    record_story(second)
    second.emit(3.0, "node-00000", "extra")
    assert first.digest() != second.digest()


_CHILD = """
import sys
from detray.sim.trace import Trace
trace = Trace()
ids = {f"object-{i}" for i in range(50)}  # set order varies with PYTHONHASHSEED
trace.emit(1.0, "node-00000", "objects.listed", objects=sorted(ids), **{k: 1 for k in ids})
print(trace.digest())
"""


def test_the_digest_does_not_depend_on_the_hash_seed() -> None:
    digests = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        result = subprocess.run(
            [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, timeout=60, check=True
        )
        digests.add(result.stdout.strip())
    assert len(digests) == 1


def test_levels_filter_events_and_sequence_numbers_count_only_recorded_lines() -> None:
    events, debug, off = Trace(), Trace(level=TraceLevel.DEBUG), Trace(level=TraceLevel.OFF)
    for trace in (events, debug, off):
        record_story(trace)
    assert (len(events), len(debug), len(off)) == (4, 5, 0)
    assert [json.loads(line)["seq"] for line in events.lines] == [0, 1, 2, 3]
    assert not events.enabled(TraceLevel.DEBUG) and debug.enabled(TraceLevel.DEBUG)
    assert not off.enabled() and off.digest() == hashlib.sha256().hexdigest()


def test_reserved_keys_and_bad_times_are_refused() -> None:
    trace = Trace()
    with pytest.raises(ValueError, match="reserved"):
        trace.emit(1.0, "n", "k", seq=3)
    with pytest.raises(ValueError, match="virtual time"):
        trace.emit(float("nan"), "n", "k")
    with pytest.raises(ValueError, match="virtual time"):
        trace.emit(-1.0, "n", "k")
    assert len(trace) == 0


def test_a_streamed_trace_writes_the_same_lines_with_a_bounded_buffer(tmp_path: Path) -> None:
    memory = Trace(level=TraceLevel.DEBUG)
    path = tmp_path / "trace.jsonl"
    with Trace(level=TraceLevel.DEBUG, path=path, buffer_lines=2) as streamed:
        for trace in (memory, streamed):
            record_story(trace)
            for index in range(3, 9):
                trace.emit(float(index), "n", "tick", i=index)
        assert len(streamed._pending) < 2  # at most buffer_lines - 1 lines wait in memory
        with pytest.raises(RuntimeError, match="streams to"):
            _ = streamed.lines
    data = path.read_bytes()
    assert data.decode().splitlines() == memory.lines
    assert streamed.digest() == memory.digest() == hashlib.sha256(data).hexdigest()
    with path.open() as lines:
        assert digest_lines(lines) == memory.digest()


def test_first_difference_finds_the_first_differing_line() -> None:
    a, b = Trace(), Trace()
    record_story(a)
    record_story(b)
    assert first_difference(a.lines, b.lines) is None
    changed = list(b.lines)
    changed[2] = changed[2].replace('"attempt":1', '"attempt":2')
    changed[3] = "also different"
    assert first_difference(a.lines, changed) == (2, a.lines[2], changed[2])


def test_first_difference_reports_a_missing_tail_and_reads_files(tmp_path: Path) -> None:
    a = ["x", "y", "z"]
    assert first_difference(a, a[:2]) == (2, "z", None)
    assert first_difference(a[:1], a) == (1, None, "y")
    path = tmp_path / "a.jsonl"
    path.write_text("x\ny\nz\n")
    with path.open() as lines:
        assert first_difference(lines, a) is None
