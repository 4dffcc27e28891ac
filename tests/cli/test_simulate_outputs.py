"""What ``detray simulate`` writes besides the summary: the Chrome trace, the determinism
verdict, the progress display on a terminal; and the installed ``detray`` entry point end to end."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jsonschema
from _simulate_support import FIXTURES, CliRun, summary_value

DETRAY = Path(sys.executable).parent / "detray"

_PHASES = ["B", "E", "X", "i", "I", "C", "b", "n", "e", "s", "t", "f", "P", "N", "O", "D", "M", "R", "(", ")"]
TRACE_EVENT_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Chrome trace-event format, JSON object form (the fields these files use)",
    "type": "object",
    "required": ["traceEvents"],
    "properties": {
        "traceEvents": {"type": "array", "items": {"$ref": "#/$defs/event"}},
        "displayTimeUnit": {"enum": ["ms", "ns"]},
        "otherData": {"type": "object"},
    },
    "$defs": {
        "event": {
            "type": "object",
            "required": ["name", "ph", "pid", "tid"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "cat": {"type": "string"},
                "ph": {"enum": _PHASES},
                "ts": {"type": "number", "minimum": 0},
                "dur": {"type": "number", "minimum": 0},
                "pid": {"type": "integer", "minimum": 0},
                "tid": {"type": "integer", "minimum": 0},
                "s": {"enum": ["g", "p", "t"]},
                "args": {"type": "object"},
            },
            "allOf": [
                {"if": {"properties": {"ph": {"const": "X"}}}, "then": {"required": ["ts", "dur", "cat"]}},
                {"if": {"properties": {"ph": {"enum": ["i", "I"]}}}, "then": {"required": ["ts", "s"]}},
                {"if": {"properties": {"ph": {"enum": ["B", "E", "C"]}}}, "then": {"required": ["ts"]}},
                {
                    "if": {"properties": {"ph": {"const": "M"}}},
                    "then": {
                        "required": ["args"],
                        "properties": {
                            "name": {
                                "enum": [
                                    "process_name",
                                    "process_labels",
                                    "process_sort_index",
                                    "thread_name",
                                    "thread_sort_index",
                                ]
                            }
                        },
                    },
                },
            ],
        }
    },
}


def _chrome_trace(simulate: Callable[..., CliRun], tmp_path: Path, scenario: str) -> tuple[CliRun, dict]:
    path = tmp_path / "chrome.json"
    run = simulate(scenario, "--chrome-trace", str(path), "--quiet")
    assert run.code == 0, run.out + run.err
    assert summary_value(run.out, "chrome trace") == str(path)
    document = json.loads(path.read_text())
    jsonschema.validate(document, TRACE_EVENT_SCHEMA)
    return run, document


def test_the_chrome_trace_is_valid_and_has_a_process_per_node_and_an_event_per_task(
    simulate: Callable[..., CliRun], tmp_path: Path
) -> None:
    run, document = _chrome_trace(simulate, tmp_path, "tiny.yaml")
    events = document["traceEvents"]
    processes = {e["pid"]: e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    assert processes == {0: "node-00000 (head)", 1: "node-00001 (worker)", 2: "node-00002 (worker)"}
    named_threads = {(e["pid"], e["tid"]) for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    complete = [e for e in events if e["ph"] == "X"]
    assert all((e["pid"], e["tid"]) in named_threads for e in complete)
    tasks = [e for e in complete if e["cat"] == "task"]
    finished = int(summary_value(run.out, "tasks").split(" finished")[0].rsplit(", ", 1)[1])
    assert len(tasks) == finished == 18
    assert sorted(e["name"] for e in tasks) == sorted(["work"] * 8 + ["Counter.__init__"] + ["Counter.add"] * 9)
    assert [e["name"] for e in complete if e["cat"] == "actor"] == ["Counter (actor)"]
    work = [e for e in tasks if e["name"] == "work"]
    assert all(50_000 <= e["dur"] <= 100_000 for e in work)  # uniform 0.05-0.1 s of virtual time, in us
    makespan_us = float(summary_value(run.out, "virtual makespan").removesuffix(" s")) * 1e6
    assert max(e["ts"] + e["dur"] for e in complete) <= makespan_us + 1
    assert _partial_overlaps(document) == []


def test_faults_appear_as_instant_events_on_their_node(simulate: Callable[..., CliRun], tmp_path: Path) -> None:
    _run, document = _chrome_trace(simulate, tmp_path, "faults.yaml")
    instants = [e for e in document["traceEvents"] if e["ph"] == "i"]
    faults = [e for e in instants if e["cat"] == "fault"]
    assert [e["name"] for e in faults].count("KillNode") == 1
    assert len(faults) == 7
    assert {"node down", "node declared dead", "node joined"} <= {e["name"] for e in instants if e["cat"] == "cluster"}
    assert all(e["pid"] == 2 for e in instants if e["name"] == "node down")  # faults.yaml kills node 2
    outcomes = {e["args"]["outcome"] for e in document["traceEvents"] if e["ph"] == "X"}
    assert any(outcome.startswith("worker died") for outcome in outcomes)
    assert _partial_overlaps(document) == []


def test_check_determinism_passes_on_a_deterministic_program(simulate: Callable[..., CliRun]) -> None:
    run = simulate("tiny.yaml", "--check-determinism", "--quiet")
    assert run.code == 0, run.err
    lines = summary_value(run.out, "trace lines")
    assert f"determinism: the same trace in a fresh process ({lines} lines)" in run.out


def test_check_determinism_exits_3_with_the_first_differing_event(simulate: Callable[..., CliRun]) -> None:
    run = simulate("nondeterministic.yaml", "--check-determinism", "--quiet")
    assert run.code == 3, run.out + run.err
    assert "nondeterministic is NOT deterministic: the traces part at line" in run.err
    here = re.search(r"this process: +(.*)", run.err).group(1)
    fresh = re.search(r"fresh process: +(.*)", run.err).group(1)
    assert here != fresh
    assert json.loads(here)["seq"] == json.loads(fresh)["seq"]  # the same event, two versions
    first, second = re.search(r"traces: (\S+) (\S+)", run.err).groups()
    assert Path(first).exists() and Path(second).exists()  # kept to look at
    shutil.rmtree(Path(first).parent)  # the test's own leftovers


def test_the_installed_entry_point_runs_a_scenario_end_to_end(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    done = subprocess.run(
        [str(DETRAY), "simulate", str(FIXTURES / "tiny.yaml"), "--trace", str(trace)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "tiny: total=140" in done.stdout
    assert summary_value(done.stdout, "expectations") == "4/4 met: all met"
    assert trace.read_text().count('"kind":"task.finished"') == 18
    bad = subprocess.run(
        [str(DETRAY), "simulate", str(FIXTURES / "tiny.py")],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr
    assert re.search(r"tiny\.py:\d+: ", bad.stderr)


def test_a_terminal_gets_a_progress_display_that_does_not_disturb_the_summary() -> None:
    main_fd, terminal_fd = os.openpty()
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120")
    process = subprocess.Popen(
        [str(DETRAY), "simulate", str(FIXTURES / "tiny.yaml")],
        stdout=subprocess.PIPE,
        stderr=terminal_fd,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    os.close(terminal_fd)
    shown = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        shown += chunk
    os.close(main_fd)
    out = process.stdout.read().decode() if process.stdout else ""
    assert process.wait(timeout=120) == 0
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown.decode(errors="replace"))
    assert re.search(r"t=[\d.]+ of 5 s virtual \| \d+ tasks done", text), text
    assert "tiny: total=140" in out.splitlines()  # stdout is not the terminal: the program's output stays there
    assert summary_value(out, "expectations") == "4/4 met: all met"


def test_overlapping_calls_on_one_worker_get_separate_lanes(tmp_path: Path) -> None:
    from detray.scenario.analysis import Span
    from detray.scenario.chrome_trace import ChromeTraceWriter

    def span(name: str, start_s: float, end_s: float) -> Span:
        return Span("task", "node-00001", "node-00001/w1", name, name, 1, start_s, end_s, "finished")

    path = tmp_path / "lanes.json"
    with ChromeTraceWriter(path, node_labels=["node-00000", "node-00001"], other={}) as writer:
        # arrive in order of their end, as read_trace gives them
        for item in [span("a", 0.0, 1.0), span("b", 0.5, 1.5), span("c", 1.6, 1.7), span("outer", 0.0, 2.0)]:
            writer(item)
    document = json.loads(path.read_text())
    jsonschema.validate(document, TRACE_EVENT_SCHEMA)
    tid = {e["name"]: e["tid"] for e in document["traceEvents"] if e["ph"] == "X"}
    assert tid["a"] != tid["b"]  # b cuts across a
    assert tid["c"] == tid["a"]  # c is apart from a
    assert tid["outer"] == tid["a"]  # outer encloses a and c
    assert _partial_overlaps(document) == []


def _partial_overlaps(document: dict) -> list[tuple[str, str]]:
    """Pairs of X events on one thread that neither nest nor stay apart (viewers reject them)."""
    by_thread: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
    for e in document["traceEvents"]:
        if e["ph"] == "X":  # in whole nanoseconds, as viewers read them
            start_ns, dur_ns = round(e["ts"] * 1000), round(e["dur"] * 1000)
            by_thread.setdefault((e["pid"], e["tid"]), []).append((start_ns, start_ns + dur_ns, e["name"]))
    bad = []
    for spans in by_thread.values():
        for a_start, a_end, a in spans:
            for b_start, b_end, b in spans:
                if a_start < b_start < a_end < b_end:
                    bad.append((a, b))
    return bad
