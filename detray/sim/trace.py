"""The simulation trace: one JSON line per event, the ground truth of a run.

Owns: the line format, its schema version, buffering and streaming, the
digest, and finding where two traces part. Must not: read a clock (the
caller passes virtual time), or let anything but the event's content shape a
line (no hash order, no ``id()``, no wall time).

Line format (``SCHEMA_VERSION`` 1)::

    {"kind":"task.finished","node":"node-00001","seq":17,"t":0.25,"task":"...","v":1}

- keys sorted, compact separators, ASCII only, no NaN: the same event is the
  same bytes in every process, whatever ``PYTHONHASHSEED``;
- ``t`` is virtual time in seconds as a float, written by ``repr`` (the
  shortest text that round-trips exactly), so ``0`` and ``0.0`` both give ``0.0``;
- ``seq`` numbers the lines written, from 0; ``node`` may be ``null`` for a
  cluster-wide event; any other key is the caller's (ids, sizes, reasons).

The digest is sha256 over the lines, each followed by ``"\\n"``: the sha256 of
the trace file, so ``sha256sum`` agrees with ``Trace.digest()``.

Levels: ``OFF`` records nothing, ``EVENTS`` (the default) records lifecycle
events, ``DEBUG`` adds the chatty ones (every network message, every
decision). Callers on a hot path ask ``trace.enabled(level)`` before building
the fields. A trace without a path keeps its lines in memory (benchmarks and
tests); with a path it streams them, holding at most ``buffer_lines``.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import operator
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring_ascii
from pathlib import Path
from types import TracebackType
from typing import IO, Any, NamedTuple

__all__ = [
    "SCHEMA_VERSION",
    "Trace",
    "TraceLevel",
    "digest_lines",
    "encode_line",
    "first_difference",
]

SCHEMA_VERSION = 1
RESERVED_KEYS = frozenset({"v", "t", "seq", "node", "kind"})
DEFAULT_BUFFER_LINES = 10_000

_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


class TraceLevel(enum.IntEnum):
    OFF = 0
    EVENTS = 1
    DEBUG = 2


def encode_line(seq: int, t: float, node: str | None, kind: str, fields: dict[str, Any]) -> str:
    """One trace line (no newline). ``fields`` must not use a reserved key.

    The bytes are those of ``_ENCODER.encode`` on the whole record, assembled
    faster: a cached template per key set puts the values in sorted-key order,
    and each value is encoded on its own (compact json writes a value the same
    alone as inside the record).
    """
    global _last_time
    t = float(t)
    last_t, t_text = _last_time
    if t != last_t or not t:  # lines come in bursts at one instant (equal non-zero floats: same repr)
        if not (math.isfinite(t) and t >= 0.0):  # checked once per instant (NaN is never equal)
            raise ValueError(f"virtual time must be finite and >= 0, got {t!r}")
        t_text = repr(t)
        _last_time = (t, t_text)
    template: _Template | None
    key = (kind, *fields)
    try:
        template = _TEMPLATES[key]
    except (KeyError, TypeError):  # a new kind or key set, or an unhashable kind
        template = _template(kind, fields)
    if template is None:  # a kind or key that is not a plain str: let json sort and convert it
        return _encode_record(seq, t, node, kind, fields)
    fast = _FAST_ENCODERS.get
    values = [t_text, (fast(node.__class__) or _ENCODER.encode)(node), (fast(seq.__class__) or _ENCODER.encode)(seq)]
    for value in fields.values():
        values.append((fast(value.__class__) or _ENCODER.encode)(value))
    line = template.parts.copy()
    line[1::2] = template.order(values)
    return "".join(line)


def _encode_record(seq: int, t: float, node: str | None, kind: str, fields: dict[str, Any]) -> str:
    """The reference encoding: the record as one dict through the sorting encoder."""
    _check_reserved(fields)
    record = dict(fields)
    record["v"] = SCHEMA_VERSION
    record["t"] = t
    record["seq"] = seq
    record["node"] = node
    record["kind"] = kind
    return _ENCODER.encode(record)


def _check_reserved(fields: dict[str, Any]) -> None:
    if not RESERVED_KEYS.isdisjoint(fields):
        clash = sorted(RESERVED_KEYS.intersection(fields))
        raise ValueError(f"trace fields may not use the reserved keys {clash}")


class _Template(NamedTuple):
    """A line for one kind and set of keys: fixed text at even indexes of ``parts``, a value at each odd one.

    ``order`` picks the encoded values, in sorted-key order, out of encode_line's list.
    """

    parts: list[str]
    order: Callable[[list[str]], tuple[str, ...]]


# Where encode_line puts each reserved value in its list of encoded values (fields follow from 3).
_RESERVED_INDEX = {"t": 0, "node": 1, "seq": 2}
_TEMPLATES: dict[tuple[str, ...], _Template] = {}  # (kind, *keys in the caller's order) -> template
_MAX_TEMPLATES = 10_000  # call sites make a few dozen; a caller with ever-new keys must not grow it forever
_last_time: tuple[float, str] = (0.0, "0.0")  # encode_line's last virtual time and its text


def _template(kind: str, fields: dict[str, Any]) -> _Template | None:
    """The template for ``kind`` and ``fields``' keys (cached); ``None`` if one is not a plain ``str``."""
    keys = tuple(fields)
    cache_key = (kind, *keys)
    if any(key.__class__ is not str for key in cache_key):
        return None
    _check_reserved(fields)
    index = dict(_RESERVED_INDEX)
    index.update((key, position) for position, key in enumerate(keys, start=len(index)))
    fixed = {"v": str(SCHEMA_VERSION), "kind": encode_basestring_ascii(kind)}  # written into the text
    parts, order = ["{"], []
    for n, key in enumerate(sorted([*index, *fixed])):
        parts[-1] += ("," if n else "") + encode_basestring_ascii(key) + ":"
        if key in fixed:
            parts[-1] += fixed[key]
        else:
            parts += ["", ""]  # the value's slot, then the text after it
            order.append(index[key])
    parts[-1] += "}"
    template = _Template(parts, operator.itemgetter(*order))
    if len(_TEMPLATES) < _MAX_TEMPLATES:
        _TEMPLATES[cache_key] = template
    return template


def _encode_float(value: float) -> str:
    """A finite float as json writes it (``repr``); NaN and infinities get json's own error."""
    if math.isfinite(value):
        return repr(value)
    return _ENCODER.encode(value)


# Exact types json writes without looking inside; anything else (subclasses, containers) goes
# through _ENCODER, whose compact output for a value is the same alone as inside the record.
_FAST_ENCODERS: dict[type, Callable[[Any], str]] = {
    str: encode_basestring_ascii,
    int: repr,
    float: _encode_float,
    type(None): "null".format,  # str.format ignores extra arguments: always "null"
    bool: {True: "true", False: "false"}.__getitem__,
}


class Trace:
    """Records trace lines at or below ``level``; in memory, or streamed to ``path``."""

    def __init__(
        self,
        *,
        level: TraceLevel = TraceLevel.EVENTS,
        path: str | Path | None = None,
        buffer_lines: int = DEFAULT_BUFFER_LINES,
    ) -> None:
        if buffer_lines < 1:
            raise ValueError(f"buffer_lines must be >= 1, got {buffer_lines}")
        self.level = TraceLevel(level)
        self.path = None if path is None else Path(path)
        self.buffer_lines = buffer_lines
        self._pending: list[str] = []  # in memory: every line; streaming: not yet written
        self._flushed_hash = hashlib.sha256()  # over the lines already written to the file
        self._count = 0
        self._file: IO[str] | None = None
        if self.path is not None:
            self._file = open(self.path, "w", encoding="ascii", newline="\n")

    def enabled(self, level: TraceLevel = TraceLevel.EVENTS) -> bool:
        """Whether an event at ``level`` would be recorded (cheap: ask before building fields)."""
        return level <= self.level

    def emit(
        self,
        t: float,
        node: str | None,
        kind: str,
        *,
        level: TraceLevel = TraceLevel.EVENTS,
        **fields: Any,
    ) -> None:
        """Record one event at virtual time ``t`` (seconds) if ``level`` is enabled."""
        if level <= self.level:
            self.write(t, node, kind, fields)

    def write(self, t: float, node: str | None, kind: str, fields: dict[str, Any]) -> None:
        """Record one event whose level the caller checked (``fields`` as a dict: no unpacking)."""
        pending = self._pending
        pending.append(encode_line(self._count, t, node, kind, fields))
        self._count += 1
        if self._file is not None and len(pending) >= self.buffer_lines:
            self.flush()

    @property
    def lines(self) -> list[str]:
        """Every line, in order (in-memory traces only: a streamed trace lives in its file)."""
        if self.path is not None:
            raise RuntimeError(f"this trace streams to {self.path}; read the file instead")
        return self._pending

    def __len__(self) -> int:
        return self._count

    def digest(self) -> str:
        """sha256 (hex) over every line recorded so far, each followed by a newline."""
        hasher = self._flushed_hash.copy()
        pending, batch = self._pending, self.buffer_lines  # in batches: an in-memory trace may be long
        for start in range(0, len(pending), batch):
            hasher.update(_text(pending[start : start + batch]).encode("ascii"))
        return hasher.hexdigest()

    def flush(self) -> None:
        """Write buffered lines to the file (a no-op for an in-memory trace)."""
        if self._file is None or not self._pending:
            return
        text = _text(self._pending)  # one hash update and one write per batch
        self._flushed_hash.update(text.encode("ascii"))
        self._file.write(text)
        self._file.flush()
        self._pending = []

    def close(self) -> None:
        """Flush and close the file; the digest stays available."""
        if self._file is None:
            return
        self.flush()
        self._file.close()
        self._file = None

    def __enter__(self) -> Trace:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _text(lines: list[str]) -> str:
    """The bytes of ``lines`` in a trace file: each followed by a newline."""
    return "\n".join(lines) + "\n" if lines else ""


def _hash_lines(hasher: Any, lines: Iterable[str]) -> None:
    for line in lines:
        hasher.update(line.encode("ascii"))
        hasher.update(b"\n")


def digest_lines(lines: Iterable[str]) -> str:
    """The digest ``Trace.digest()`` gives, over lines from anywhere (a list, an open file)."""
    hasher = hashlib.sha256()
    _hash_lines(hasher, (line.rstrip("\n") for line in lines))
    return hasher.hexdigest()


def first_difference(
    trace_a_lines: Iterable[str], trace_b_lines: Iterable[str]
) -> tuple[int, str | None, str | None] | None:
    """``(index, line_a, line_b)`` of the first line where two traces differ, else ``None``.

    Accepts lists or open files (trailing newlines are ignored). When one
    trace is a prefix of the other, the shorter one's line is ``None``.
    """
    pairs = itertools.zip_longest(trace_a_lines, trace_b_lines)
    for index, (line_a, line_b) in enumerate(pairs):
        a = None if line_a is None else line_a.rstrip("\n")
        b = None if line_b is None else line_b.rstrip("\n")
        if a != b:
            return index, a, b
    return None
