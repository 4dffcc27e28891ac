"""Reading a finished run's trace: spans of work, counts, and per-node utilization.

Owns: ``read_trace`` (one pass over the trace lines, in order) which closes
*spans* (a task attempt on a worker: ``task.started`` to ``task.finished``,
``task.failed``, the worker's death or the end of the run; an actor's life on
its worker: from its creation's finish to the worker's death or the end) and
hands each to the sinks, with instants (faults, nodes dying and joining);
``TraceFacts`` (the counts the summary and the expectations need); ``Usage``
(resource-seconds held per node, turned into utilization); and
``ResourceRecorder`` (what each task attempt holds, observed as the cluster
starts it, for traces that do not carry it). Must not: change the cluster or
keep every line in memory (sinks see spans as they close).

Utilization of a resource on a node = resource-seconds held by its running
task attempts and live actors / (capacity x makespan). A task holds what it
asked for (``num_cpus``...); an actor holds what its class asked for
(nothing, by default: Ray's actors need 1 CPU to be placed and hold 0).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from detray.core.resources import as_floats

RECORDED_TASKS_MAX = 5_000_000
"""Task ids the recorder remembers; past that, utilization is reported as unknown."""
ACTOR_INIT_SUFFIX = ".__init__"


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of work on one worker: a task attempt (``kind="task"``) or an actor's life."""

    kind: str
    node: str
    worker: str
    name: str
    task: str
    attempt: int
    start_s: float
    end_s: float
    outcome: str
    """``finished``, ``failed: <error>``, ``worker died``, ``unfinished`` (the run ended first)..."""


@dataclass(frozen=True, slots=True)
class Instant:
    """A point event worth showing: a fault, a node going down or coming back."""

    t_s: float
    node: str | None
    name: str
    category: str
    """``fault`` for injected faults, ``cluster`` for what the cluster did."""
    detail: Mapping[str, Any]


@dataclass(slots=True)
class TraceFacts:
    """Counts over a whole trace."""

    lines: int = 0
    end_s: float = 0.0
    tasks_started: int = 0
    tasks_finished: int = 0
    tasks_failed: int = 0
    faults_injected: int = 0
    objects_evicted: int = 0
    bytes_evicted: int = 0
    objects_spilled: int = 0
    bytes_spilled: int = 0
    actor_restarts: int = 0
    workers_died: int = 0
    nodes_down: int = 0
    """Nodes whose processes died (killed, restarted, cut off)."""
    nodes_died: int = 0
    """Nodes the cluster declared dead (after the failure detector's timeout)."""
    deadlocked: bool = False
    found_output: dict[str, bool] = field(default_factory=dict)


SpanSink = Callable[[Span], None]
InstantSink = Callable[[Instant], None]

_INSTANT_KINDS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "fault": lambda e: str(e.get("fault", "fault")),
    "fault.random": lambda e: f"random {e.get('fault', 'fault')}",
    "node.down": lambda e: "node down",
    "node.died": lambda e: "node declared dead",
    "node.joined": lambda e: "node joined",
    "plane.down": lambda e: "control plane down",
    "plane.up": lambda e: "control plane up",
    "sim.deadlock": lambda e: "deadlock",
    "sim.limit": lambda e: "limit reached",
}


def read_trace(
    lines: Iterable[str],
    *,
    on_span: Iterable[SpanSink] = (),
    on_instant: Iterable[InstantSink] = (),
    output_texts: Iterable[str] = (),
) -> TraceFacts:
    """One pass over ``lines`` (a trace file or list); spans and instants go to the sinks."""
    span_sinks = list(on_span)
    instant_sinks = list(on_instant)
    facts = TraceFacts(found_output={text: False for text in output_texts})
    pending_texts = [text for text in facts.found_output]
    open_runs: dict[tuple[str, int], tuple[str, str, str, float]] = {}
    by_worker: dict[str, dict[tuple[str, int], None]] = {}
    actors: dict[str, tuple[str, str, str, int, float]] = {}  # worker -> (node, class, task, attempt, since)
    t = 0.0

    def close(key: tuple[str, int], end_s: float, outcome: str) -> None:
        node, worker, name, start_s = open_runs.pop(key)
        by_worker.get(worker, {}).pop(key, None)
        span = Span("task", node, worker, name, key[0], key[1], start_s, end_s, outcome)
        for sink in span_sinks:
            sink(span)
        if outcome == "finished" and name.endswith(ACTOR_INIT_SUFFIX):
            actors[worker] = (node, name[: -len(ACTOR_INIT_SUFFIX)], key[0], key[1], end_s)

    def close_actor(worker: str, end_s: float, outcome: str) -> None:
        node, cls, task, attempt, since = actors.pop(worker)
        span = Span("actor", node, worker, cls, task, attempt, since, end_s, outcome)
        for sink in span_sinks:
            sink(span)

    for raw in lines:
        event = json.loads(raw)
        facts.lines += 1
        kind = event["kind"]
        t = event["t"]
        if kind == "task.started":
            key = (event["task"], event["attempt"])
            worker = event["worker"]
            if key in open_runs:  # a restarted attempt of the same number: close the stale one
                close(key, t, "superseded")
            open_runs[key] = (event["node"], worker, event.get("name", ""), t)
            by_worker.setdefault(worker, {})[key] = None
            facts.tasks_started += 1
        elif kind == "task.finished":
            facts.tasks_finished += 1
            key = (event["task"], event["attempt"])
            if key in open_runs:
                close(key, t, "finished")
        elif kind == "task.failed":
            facts.tasks_failed += 1
            key = (event["task"], event["attempt"])
            if key in open_runs:
                close(key, t, f"failed: {event.get('error', '?')}")
        elif kind == "worker.died":
            facts.workers_died += 1
            worker = event["worker"]
            for key in list(by_worker.pop(worker, {})):
                if key in open_runs:
                    close(key, t, f"worker died ({event.get('why', '')})")
            if worker in actors:
                close_actor(worker, t, f"worker died ({event.get('why', '')})")
        elif kind == "print" and pending_texts:
            text = event.get("text", "")
            for wanted in [w for w in pending_texts if w in text]:
                facts.found_output[wanted] = True
                pending_texts.remove(wanted)
        elif kind == "object.evicted":
            facts.objects_evicted += int(event.get("count", 0))
            facts.bytes_evicted += int(event.get("bytes", 0))
        elif kind == "object.spilled":
            facts.objects_spilled += 1
            facts.bytes_spilled += int(event.get("size", 0))
        elif kind == "actor.restarting":
            facts.actor_restarts += 1
        elif kind == "node.died":
            facts.nodes_died += 1
        elif kind == "node.down":
            facts.nodes_down += 1
        elif kind == "sim.deadlock":
            facts.deadlocked = True
        if kind == "fault" and event.get("fault") != "RandomFaults" or kind == "fault.random":
            facts.faults_injected += 1
        if kind in _INSTANT_KINDS and instant_sinks:
            if kind == "node.joined" and t == 0.0:
                continue  # bring-up
            detail = {k: v for k, v in event.items() if k not in ("kind", "node", "t", "v", "seq")}
            category = "fault" if kind.startswith("fault") else "cluster"
            instant = Instant(t, event["node"], _INSTANT_KINDS[kind](event), category, detail)
            for sink in instant_sinks:
                sink(instant)
    facts.end_s = t
    for key in sorted(open_runs):
        close(key, t, "unfinished")
    for worker in sorted(actors):
        close_actor(worker, t, "alive at the end")
    return facts


class ResourceRecorder:
    """What each task holds while it runs, seen as the cluster starts attempts.

    Installed on a running ``SimCluster`` as a start observer of its executor
    (the trace's ``task.started`` does not carry resources). Resource shapes
    are interned: one small dict per distinct shape.
    """

    def __init__(self) -> None:
        self._shapes: dict[tuple[tuple[str, int], ...], dict[str, float]] = {}
        self._of_task: dict[str, dict[str, float]] = {}
        self.complete = True

    def install(self, cluster: Any) -> bool:
        """Start observing ``cluster`` (its executor's start observers)."""
        remember = self.remember

        def started(spec: Any, node: str) -> None:
            remember(spec.task_id, spec.resources)

        cluster.executor.start_observers.append(started)
        return True

    def remember(self, task: str, units: Mapping[str, int]) -> None:
        if task in self._of_task:
            return
        if len(self._of_task) >= RECORDED_TASKS_MAX:
            self.complete = False
            return
        shape = tuple(sorted(units.items()))
        held = self._shapes.get(shape)
        if held is None:
            held = self._shapes[shape] = as_floats(dict(shape))
        self._of_task[task] = held

    def of(self, task: str) -> Mapping[str, float] | None:
        return self._of_task.get(task)


class Usage:
    """A span sink adding up resource-seconds held per node."""

    def __init__(self, resources_of: Callable[[str], Mapping[str, float] | None]) -> None:
        self._resources_of = resources_of
        self.held_s: dict[str, dict[str, float]] = {}
        self.unknown_spans = 0

    def __call__(self, span: Span) -> None:
        held = self._resources_of(span.task)
        if held is None:
            self.unknown_spans += 1
            return
        duration_s = span.end_s - span.start_s
        if duration_s <= 0:
            return
        per_node = self.held_s.setdefault(span.node, {})
        for name, amount in held.items():
            if amount:
                per_node[name] = per_node.get(name, 0.0) + amount * duration_s

    def utilization(self, node: str, capacity: Mapping[str, float], makespan_s: float, resource: str) -> float | None:
        """Fraction of ``resource`` held on ``node`` over the run, or None when it has none."""
        total = capacity.get(resource, 0.0)
        if total <= 0 or makespan_s <= 0 or self.unknown_spans:
            return None
        return self.held_s.get(node, {}).get(resource, 0.0) / (total * makespan_s)
