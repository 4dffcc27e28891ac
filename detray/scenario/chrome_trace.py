"""A run as a Chrome trace-event file (``--chrome-trace FILE.json``), for Perfetto or chrome://tracing.

Owns: ``ChromeTraceWriter``, a sink for the spans and instants of
``analysis.read_trace`` that streams the JSON object format::

    {"traceEvents": [...], "displayTimeUnit": "ms", "otherData": {...}}

- one process per node (``pid`` = node index), named by ``M`` metadata
  events (``process_name``, ``process_sort_index``);
- one thread per worker (``tid`` from 1, in order of first appearance on its
  node; ``thread_name`` metadata names the worker id), more when a worker ran
  calls that overlap (slices of one thread must nest); ``tid`` 0 of each node
  carries its instants (faults, the node dying or joining);
- an ``X`` (complete) event per task attempt and per actor life, ``ts`` and
  ``dur`` in microseconds of *virtual* time, ``args`` naming the task id,
  attempt and how it ended;
- an ``i`` (instant) event per fault and node event, process-scoped on the
  node it hit, global when it names no node.

Must not: hold the whole trace in memory (events are written as they come).
"""

from __future__ import annotations

import bisect
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from detray.scenario.analysis import Instant, Span

NS_PER_S = 1_000_000_000
NS_PER_US = 1_000
LANE_MEMORY_SPANS = 1_000
"""Outermost spans a lane remembers to keep later spans nested (bounded memory per worker)."""
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
_NODE_INDEX = re.compile(r"(\d+)$")


def node_pid(node: str | None) -> int:
    """The pid of a node id (``node-00003`` -> 3); cluster-wide events go to the head (0)."""
    if node is None:
        return 0
    match = _NODE_INDEX.search(node)
    return int(match.group(1)) if match else 0


class ChromeTraceWriter:
    """Streams Chrome trace events to ``path``; call as a span sink and ``instant``, then ``close``."""

    def __init__(self, path: str | Path, *, node_labels: Sequence[str], other: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = open(self.path, "w", encoding="ascii", newline="\n")
        self._first = True
        self._other = dict(other)
        self._tids: dict[tuple[str, int], tuple[int, int]] = {}
        self._lanes: dict[str, list[list[tuple[float, float]]]] = {}
        self._next_tid: dict[int, int] = {}
        self.events = 0
        self._file.write('{"traceEvents":[\n')
        for index, label in enumerate(node_labels):
            self._write({"name": "process_name", "ph": "M", "pid": index, "tid": 0, "args": {"name": label}})
            self._write(
                {"name": "process_sort_index", "ph": "M", "pid": index, "tid": 0, "args": {"sort_index": index}}
            )
            thread = "driver, faults" if index == 0 else "node events"
            self._write({"name": "thread_name", "ph": "M", "pid": index, "tid": 0, "args": {"name": thread}})

    def _write(self, event: Mapping[str, Any]) -> None:
        assert self._file is not None, "the Chrome trace is closed"
        self._file.write(("" if self._first else ",\n") + _ENCODER.encode(event))
        self._first = False
        self.events += 1

    def _thread(self, node: str, worker: str, lane: int) -> tuple[int, int]:
        key = (worker, lane)
        known = self._tids.get(key)
        if known is not None:
            return known
        pid = node_pid(node)
        tid = self._next_tid.get(pid, 1)
        self._next_tid[pid] = tid + 1
        self._tids[key] = (pid, tid)
        label = worker if lane == 0 else f"{worker} ({lane + 1})"
        self._write({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": label}})
        return pid, tid

    def _lane(self, span: Span) -> int:
        """The first lane of the worker where ``span`` nests with every span already there.

        Trace viewers need the slices of one thread nested or apart; a worker running
        several calls at once (an async or threaded actor) gets more lanes. Spans come in
        order of their end, so a lane only keeps its outermost spans (apart, sorted), the
        last ``LANE_MEMORY_SPANS`` of them."""
        lanes = self._lanes.setdefault(span.worker, [])
        for index, outer in enumerate(lanes):
            cut = bisect.bisect_left(outer, (span.start_s, -math.inf))  # spans from here start within it
            if cut and outer[cut - 1][1] > span.start_s:
                continue  # it would cut across an earlier span
            del outer[cut:]  # they end before it does: it encloses them
            outer.append((span.start_s, span.end_s))
            if len(outer) > LANE_MEMORY_SPANS:
                del outer[: len(outer) - LANE_MEMORY_SPANS]
            return index
        lanes.append([(span.start_s, span.end_s)])
        return len(lanes) - 1

    def __call__(self, span: Span) -> None:
        pid, tid = self._thread(span.node, span.worker, self._lane(span))
        name = span.name if span.kind == "task" else f"{span.name} (actor)"
        # Whole nanoseconds, so that one span's end and the next one's start agree exactly.
        start_ns = round(span.start_s * NS_PER_S)
        end_ns = max(start_ns, round(span.end_s * NS_PER_S))
        self._write(
            {
                "name": name or "task",
                "cat": span.kind,
                "ph": "X",
                "ts": start_ns / NS_PER_US,
                "dur": (end_ns - start_ns) / NS_PER_US,
                "pid": pid,
                "tid": tid,
                "args": {"task": span.task, "attempt": span.attempt, "outcome": span.outcome},
            }
        )

    def instant(self, instant: Instant) -> None:
        event: dict[str, Any] = {
            "name": instant.name,
            "cat": instant.category,
            "ph": "i",
            "ts": round(instant.t_s * NS_PER_S) / NS_PER_US,
            "pid": node_pid(instant.node),
            "tid": 0,
            "s": "g" if instant.node is None else "p",
            "args": {str(k): v for k, v in instant.detail.items()},
        }
        self._write(event)

    def close(self) -> None:
        if self._file is None:
            return
        tail = {"displayTimeUnit": "ms", "otherData": self._other}
        self._file.write("\n]," + _ENCODER.encode(tail)[1:] + "\n")
        self._file.close()
        self._file = None

    def __enter__(self) -> ChromeTraceWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
