"""Running a loaded scenario on the simulator, and checking that the run reproduces.

Owns: ``run_scenario`` (the workload script as ``__main__`` inside
``detray.sim.scenario``, its faults and durations applied as the cluster
starts, statistics taken before shutdown, the trace read back for counts,
utilization and the Chrome trace) and ``check_determinism`` (the same
scenario again in a fresh process with another ``PYTHONHASHSEED``, traces
compared line by line). Must not: print (``report.py`` and the CLI do) or
decide exit statuses (the CLI does).

How the program runs: ``sys.argv`` is ``[script, *args]``, the script's
directory is first on ``sys.path`` (so its sibling modules import, as under
``python script.py``; modules imported from there are forgotten afterwards),
the working directory is left alone, and ``DETRAY_MODE=sim``. The program
calls ``detray.init`` itself (``import detray as ray; ray.init(...)``); the
scenario's seed, cluster and trace win over its arguments. A program that
never calls ``init`` is started by its first API call (Ray's auto-init) on
the same terms; ``detray simulate`` never calls ``init`` first, so a
program's own ``init`` does not fail as a second one. One simulation per
run: an ``init`` after ``shutdown`` is refused. Whatever the program leaves
running is shut down at the end.
"""

from __future__ import annotations

import contextlib
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter as _wall_clock  # bound before the simulator patches time
from typing import Any

import detray
from detray import sim
from detray.scenario import analysis, expect, progress
from detray.scenario.analysis import ResourceRecorder, TraceFacts, Usage
from detray.scenario.chrome_trace import ChromeTraceWriter
from detray.scenario.expect import Check, Ending
from detray.scenario.model import Scenario

DETERMINISM_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """What the summary reads from the cluster itself, taken before it shuts down."""

    makespan_s: float = 0.0
    bytes_moved: int = 0
    task_retries: int = 0
    """Attempts the core tried again after a failure (its ``retries_*`` counters)."""
    objects_reconstructed: int = 0
    actor_restarts: int | None = None
    """The core's count (None when it keeps none: the trace's count is used)."""
    faults_by_kind: dict[str, int] = field(default_factory=dict)
    """Faults carried out, by engine class (``KillNode``...); empty when the cluster keeps no count."""
    node_ids: list[str] = field(default_factory=list)
    capacity: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def of(cls, cluster: Any) -> ClusterSnapshot:
        router = cluster.router
        task_stats = dict(getattr(getattr(router, "tasks", None), "stats", None) or {})
        actor_stats = dict(getattr(getattr(router, "actors", None), "stats", None) or {})
        cluster_stats = dict(getattr(cluster, "stats", None) or {})
        return cls(
            makespan_s=float(cluster.now()),
            bytes_moved=int(getattr(cluster.network.stats, "bytes_moved", 0)),
            task_retries=sum(n for key, n in task_stats.items() if key.startswith("retries_")),
            objects_reconstructed=int(task_stats.get("reconstructions", 0)),
            actor_restarts=int(actor_stats["restarts"]) if "restarts" in actor_stats else None,
            faults_by_kind={
                key.removeprefix("fault."): n
                for key, n in sorted(cluster_stats.items())
                if key.startswith("fault.") and n
            },
            node_ids=list(cluster.nodes),
            capacity={node: dict(rec.spec.resources) for node, rec in cluster.nodes.items()},
        )


@dataclass(slots=True)
class RunResult:
    """Everything the summary and the exit status need from one run."""

    scenario: Scenario
    seed: int
    ending: Ending
    simulated: bool
    wall_s: float
    trace_path: Path | None
    """Where the trace was kept (``--trace``), else None (it was a temporary file)."""
    trace_digest: str
    trace_lines: int
    facts: TraceFacts
    usage: Usage | None
    cluster: ClusterSnapshot
    chrome_trace_path: Path | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(check.met for check in self.checks)

    @property
    def makespan_s(self) -> float:
        return self.cluster.makespan_s

    @property
    def actor_restarts(self) -> int:
        counted = self.cluster.actor_restarts
        return self.facts.actor_restarts if counted is None else counted

    @property
    def faults_injected(self) -> int:
        by_kind = self.cluster.faults_by_kind
        return sum(by_kind.values()) if by_kind else self.facts.faults_injected

    def measures(self) -> dict[str, int]:
        return {
            "tasks_finished": self.facts.tasks_finished,
            "task_retries": self.cluster.task_retries,
            "actor_restarts": self.actor_restarts,
            "objects_reconstructed": self.cluster.objects_reconstructed,
        }


class _Started:
    """What ``on_start`` learns about the one simulation of this run."""

    def __init__(self, scenario: Scenario, seed: int, live: progress.LiveProgress) -> None:
        self.scenario = scenario
        self.seed = seed
        self.live = live
        self.cluster: Any = None
        self.recorder = ResourceRecorder()
        self.snapshot: ClusterSnapshot | None = None

    def __call__(self, cluster: Any) -> None:
        assert self.cluster is None, "scenario(once=True) refuses a second simulation"
        self.cluster = cluster
        self.recorder.install(cluster)
        if self.scenario.durations:
            cluster.durations.update(self.scenario.durations)  # the scenario wins over init(durations=...)
        faults = self.scenario.faults(self.seed)
        if faults:
            cluster.schedule(*faults)
        self.live.attach(cluster)

    def take_snapshot(self) -> None:
        """Read what the summary needs from the cluster (before shutdown, when it still runs)."""
        if self.cluster is not None and self.snapshot is None:
            self.snapshot = ClusterSnapshot.of(self.cluster)


@contextlib.contextmanager
def _program_environment(scenario: Scenario) -> Iterator[None]:
    """``sys.argv``, ``sys.path`` and ``DETRAY_MODE`` as the program expects them; restored after."""
    script_dir = str(scenario.script.parent)
    added_cwd = scenario.function is not None and os.getcwd() not in sys.path
    saved_argv = sys.argv
    saved_mode = os.environ.get("DETRAY_MODE")
    modules_before = set(sys.modules)
    sys.argv = [str(scenario.script), *scenario.args]
    sys.path.insert(0, script_dir)
    if added_cwd:
        sys.path.insert(1, os.getcwd())
    os.environ["DETRAY_MODE"] = "sim"
    try:
        yield
    finally:
        sys.argv = saved_argv
        with contextlib.suppress(ValueError):
            sys.path.remove(script_dir)
        if added_cwd:
            with contextlib.suppress(ValueError):
                sys.path.remove(os.getcwd())
        if saved_mode is None:
            os.environ.pop("DETRAY_MODE", None)
        else:
            os.environ["DETRAY_MODE"] = saved_mode
        # Forget the program's own modules (a second run imports them afresh), never a
        # submodule of a package that was loaded before (detray's, when run from its checkout).
        for name in sorted(set(sys.modules) - modules_before):
            file = getattr(sys.modules[name], "__file__", None) or ""
            if file.startswith(script_dir + os.sep) and name.partition(".")[0] not in modules_before:
                del sys.modules[name]


@contextlib.contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """With --quiet, what the program prints goes nowhere (it is still in the trace)."""
    if not quiet:
        yield
        return
    saved = sys.stdout, sys.stderr
    with open(os.devnull, "w", encoding="utf-8") as sink:
        sys.stdout = sys.stderr = sink
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


def _run_program(scenario: Scenario, started: _Started, *, seed: int, trace_file: Path) -> Ending:
    cluster_description = dict(scenario.cluster)
    with sim.scenario(seed=seed, cluster=cluster_description, trace_path=str(trace_file), on_start=started, once=True):
        try:
            if scenario.function is not None:
                _call_function(scenario.function)
            else:
                runpy.run_path(str(scenario.script), run_name="__main__")
            return Ending.returned()
        except SystemExit as stop:
            return Ending.exited(stop)
        except Exception as error:  # the program's own failure (DeadlockError included); Ctrl-C goes on up
            return Ending.raised(error)
        finally:
            started.take_snapshot()  # before shutdown, whatever happened
            if detray.is_initialized():
                detray.shutdown()


def _call_function(target: str) -> None:
    """Import ``module:function``, start the cluster and call it (a replayed test program)."""
    import importlib

    module_name, _, attr = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        value = getattr(value, part)
    detray.init()
    result = value()
    print(f"{target}() returned {result!r}")


def run_scenario(
    scenario: Scenario,
    *,
    seed: int,
    trace_path: Path | None = None,
    chrome_trace_path: Path | None = None,
    quiet: bool = False,
) -> RunResult:
    """Run ``scenario`` once with ``seed``; the trace goes to ``trace_path`` (else a temporary file)."""
    if detray.is_initialized():
        raise RuntimeError("detray simulate: a detray runtime is already running in this process; shut it down first")
    workdir = None if trace_path is not None else Path(tempfile.mkdtemp(prefix="detray-simulate-"))
    trace_file = trace_path if trace_path is not None else Path(workdir or ".") / "trace.jsonl"
    try:
        live = progress.LiveProgress(
            scenario.name, horizon_s=scenario.expect.max_makespan_s, enabled=progress.wanted(quiet)
        )
        started = _Started(scenario, seed, live)
        with live, _silenced(quiet), _program_environment(scenario):
            wall_start = _wall_clock()
            ending = _run_program(scenario, started, seed=seed, trace_file=trace_file)
            wall_s = _wall_clock() - wall_start
        return _result(scenario, seed, started, ending, wall_s, trace_file, trace_path, chrome_trace_path)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _result(
    scenario: Scenario,
    seed: int,
    started: _Started,
    ending: Ending,
    wall_s: float,
    trace_file: Path,
    trace_path: Path | None,
    chrome_trace_path: Path | None,
) -> RunResult:
    cluster = started.cluster
    snapshot = started.snapshot or ClusterSnapshot()
    usage = Usage(started.recorder.of) if cluster is not None and started.recorder.complete else None
    facts = TraceFacts()
    if cluster is not None and trace_file.exists():
        sinks: list[analysis.SpanSink] = [usage] if usage is not None else []
        instants: list[analysis.InstantSink] = []
        writer = None
        if chrome_trace_path is not None:
            labels = [_node_label(scenario, index, node) for index, node in enumerate(snapshot.node_ids)]
            other = {"scenario": scenario.name, "seed": seed, "time": "virtual seconds x 1e6 (ts, dur in us)"}
            writer = ChromeTraceWriter(chrome_trace_path, node_labels=labels, other=other)
            sinks.append(writer)
            instants.append(writer.instant)
        try:
            with open(trace_file, encoding="ascii") as lines:
                facts = analysis.read_trace(
                    lines, on_span=sinks, on_instant=instants, output_texts=scenario.expect.output_contains
                )
        finally:
            if writer is not None:
                writer.close()
    result = RunResult(
        scenario=scenario,
        seed=seed,
        ending=ending,
        simulated=cluster is not None,
        wall_s=wall_s,
        trace_path=trace_path,
        trace_digest=cluster.trace.digest() if cluster is not None else "",
        trace_lines=len(cluster.trace) if cluster is not None else 0,
        facts=facts,
        usage=usage,
        cluster=snapshot,
        chrome_trace_path=chrome_trace_path if cluster is not None else None,
    )
    result.checks = expect.judge(
        scenario.expect,
        ending=ending,
        simulated=result.simulated,
        makespan_s=result.makespan_s,
        measures=result.measures(),
        found_output=facts.found_output,
    )
    return result


def _node_label(scenario: Scenario, index: int, node: str) -> str:
    for group in scenario.node_groups:
        if group.first <= index < group.first + group.count:
            return f"{node} ({group.name})" if group.name else node
    return node


# --- determinism ---------------------------------------------------------------------------------------


def check_determinism(scenario: Scenario, *, seed: int, first_trace: Path, workdir: Path) -> Any:
    """Run the scenario again in a fresh process with another ``PYTHONHASHSEED``; compare traces.

    Returns ``detray.sim.determinism.DeterminismReport`` (truthy when identical;
    ``str()`` shows the first differing line of each run)."""
    from detray.sim.determinism import FRESH_HASH_SEED, OTHER_HASH_SEED, DeterminismReport
    from detray.sim.trace import digest_lines, first_difference

    second_trace = workdir / "trace-fresh.jsonl"
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = OTHER_HASH_SEED if env.get("PYTHONHASHSEED") == FRESH_HASH_SEED else FRESH_HASH_SEED
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    command = [
        sys.executable,
        "-m",
        "detray.cli",
        "simulate",
        str(scenario.path),
        "--seed",
        str(seed),
        "--trace",
        str(second_trace),
        "--quiet",
    ]
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=DETERMINISM_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode not in (0, 1) or not second_trace.exists():
        raise RuntimeError(
            f"the second run (a fresh process) failed with exit status {done.returncode}:\n{done.stderr[-4000:]}"
        )
    with open(first_trace, encoding="ascii") as first, open(second_trace, encoding="ascii") as second:
        difference = first_difference(first, second)
    counts = []
    digests = []
    for path in (first_trace, second_trace):
        with open(path, encoding="ascii") as lines:
            counts.append(sum(1 for _ in lines))
        with open(path, encoding="ascii") as lines:
            digests.append(digest_lines(lines))
    return DeterminismReport(
        identical=difference is None,
        lines=(counts[0], counts[1]),
        digests=(digests[0], digests[1]),
        difference=difference,
        traces=(str(first_trace), str(second_trace)),
    )
