"""``detray simulate`` on bad input: exit status 2, ``FILE:LINE: what; what is allowed``, no traceback.

Each case edits one line of a valid scenario and checks that the error names
that line and says what is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _simulate_support import CliRun

from detray.scenario import ScenarioError, load
from detray.scenario.schema import described_keys

VALID = """\
name: bad-input
seed: 1
cluster:
  nodes:
    - {count: 1, name: head, resources: {CPU: 2}}
    - {count: 3, resources: {CPU: 4}}
  network: {latency_ms: 0.2}
workload:
  script: w.py
durations:
  default: {fixed_s: 0.001}
  step: {normal: {mean_s: 1.0, sd_s: 0.1}}
faults:
  - {at_s: 1.0, kill_node: 2}
  - {at_s: 2.0, evict_objects: {node: 1, fraction: 0.5}}
  - {at_s: 0.0, slow_node: {node: 3, factor: 2.0}}
expect:
  exit: ok
  max_makespan_s: 10
"""

# (case, old text, new text, line the error must name, fragments the message must contain)
CASES = [
    (
        "unknown key",
        "latency_ms",
        "latency_msec",
        7,
        ["unknown key 'latency_msec'", "did you mean 'latency_ms'", "allowed keys"],
    ),
    ("unknown top-level key", "seed: 1", "sead: 1", 2, ["unknown key 'sead'", "did you mean 'seed'"]),
    ("wrong type", "seed: 1", "seed: one", 2, ["seed must be an integer", "'one'"]),
    (
        "wrong type of a section",
        "  network: {latency_ms: 0.2}",
        "  network: fast",
        7,
        ["cluster.network must be a mapping"],
    ),
    ("node beyond the cluster", "kill_node: 2", "kill_node: 4", 14, ["node 4", "4 nodes", "0 to 3"]),
    ("node beyond the cluster, nested", "node: 1, fraction", "node: 9, fraction", 15, ["node 9", "0 to 3"]),
    ("the head cannot be killed", "kill_node: 2", "kill_node: 0", 14, ["node 0, the head"]),
    (
        "missing script",
        "script: w.py",
        "script: missing.py",
        9,
        ["'missing.py' does not exist", "relative to the scenario file"],
    ),
    ("YAML syntax error", "  default: {fixed_s: 0.001}", "  default: {fixed_s: 0.001", 12, ["YAML syntax error"]),
    ("YAML tab indentation", "  step:", "\tstep:", 12, ["YAML syntax error"]),
    ("bad duration form", "{fixed_s: 0.001}", "{fixed: 0.001}", 11, ["unknown key 'fixed'", "did you mean 'fixed_s'"]),
    ("duration as text", "{fixed_s: 0.001}", "fast", 11, ["durations.default", "{normal: {mean_s, sd_s}}"]),
    ("negative duration", "sd_s: 0.1", "sd_s: -0.1", 12, ["durations.step.normal.sd_s is -0.1", ">= 0"]),
    ("duration missing a parameter", "{mean_s: 1.0, sd_s: 0.1}", "{mean_s: 1.0}", 12, ["needs the key 'sd_s'"]),
    ("negative time", "at_s: 2.0", "at_s: -2.0", 15, ["faults[1].at_s is -2.0", ">= 0"]),
    ("fraction above 1", "fraction: 0.5", "fraction: 1.5", 15, ["fraction is 1.5", "<= 1"]),
    ("factor of zero", "factor: 2.0", "factor: 0", 16, ["factor is 0", "> 0"]),
    (
        "misspelt fault action",
        "kill_node: 2}",
        "kil_node: 2}",
        14,
        ["unknown key 'kil_node'", "did you mean 'kill_node'"],
    ),
    (
        "two actions in one fault",
        "kill_node: 2}",
        "kill_node: 2, restart_node: 2}",
        14,
        ["several actions", "kill_node, restart_node"],
    ),
    ("fault without a time", "{at_s: 1.0, kill_node: 2}", "{kill_node: 2}", 14, ["no time", "at_s"]),
    (
        "heal before the partition",
        "{at_s: 1.0, kill_node: 2}",
        "{at_s: 1.0, partition: [[0, 1], [2, 3]], heal_at_s: 0.5}",
        14,
        ["heal_at_s is 0.5", "after at_s"],
    ),
    (
        "node in two partition groups",
        "{at_s: 1.0, kill_node: 2}",
        "{at_s: 1.0, partition: [[0, 1], [1, 3]]}",
        14,
        ["node 1 is in two partition groups"],
    ),
    ("YAML 1.1 exponent", "max_makespan_s: 10", "max_makespan_s: 1e3", 19, ["must be a number", "1.0e3"]),
    ("duplicate key", "  exit: ok\n", "  exit: ok\n  exit: 1\n", 19, ["duplicate key 'exit'", "first at line 18"]),
    ("missing section", "workload:\n  script: w.py\n", "", 1, ["needs the key 'workload'"]),
    ("bad expectation", "exit: ok", "exit: not ok", 18, ["expect.exit", "exception class name"]),
    ("count of zero nodes", "{count: 3,", "{count: 0,", 6, ["count is 0", ">= 1"]),
    (
        "whole GPUs",
        "{count: 3, resources: {CPU: 4}}",
        "{count: 3, resources: {CPU: 4, GPU: 0.5}}",
        6,
        ["GPU is 0.5", "whole"],
    ),
]


def _write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "w.py").write_text("print('never run')\n")
    path = tmp_path / "scenario.yaml"
    path.write_text(text)
    return path


def test_the_valid_scenario_loads(tmp_path: Path) -> None:
    scenario = load(_write(tmp_path, VALID))
    assert scenario.node_count == 4
    assert [group.count for group in scenario.node_groups] == [1, 3]
    from detray.sim.durations import parse_spec

    assert parse_spec("step", scenario.durations["step"]) == parse_spec(
        "step", {"dist": "normal", "mean": 1.0, "std": 0.1}
    )
    assert [type(f).__name__ for f in scenario.faults(1)] == ["KillNode", "EvictCopies", "SlowNode"]


@pytest.mark.parametrize(("case", "old", "new", "line", "fragments"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_names_the_line_and_exits_2(
    simulate: Callable[..., CliRun], tmp_path: Path, case: str, old: str, new: str, line: int, fragments: list[str]
) -> None:
    assert old in VALID, case
    path = _write(tmp_path, VALID.replace(old, new, 1))
    run = simulate(path)
    assert run.code == 2, run.err
    assert f"{path}:{line}: " in run.err, run.err
    for fragment in fragments:
        assert fragment in run.err, (fragment, run.err)
    assert "Traceback" not in run.err + run.out
    assert run.out == ""
    assert len(run.err.splitlines()) <= 3, "a few lines, not a wall of text"


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = VALID.replace("seed: 1", "seed: -1").replace("fraction: 0.5", "fraction: 2").replace("latency_ms", "latncy")
    with pytest.raises(ScenarioError) as caught:
        load(_write(tmp_path, text))
    lines = [int(problem.split(":")[1]) for problem in caught.value.problems]
    assert lines == [2, 7, 15]


def test_missing_scenario_file_exits_2(simulate: Callable[..., CliRun], tmp_path: Path) -> None:
    run = simulate(tmp_path / "nope.yaml")
    assert run.code == 2
    assert "nope.yaml: no such scenario file" in run.err
    assert "Traceback" not in run.err


def test_a_directory_or_binary_file_exits_2(simulate: Callable[..., CliRun], tmp_path: Path) -> None:
    directory = simulate(tmp_path)
    assert directory.code == 2 and "is a directory" in directory.err
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    run = simulate(binary)
    assert run.code == 2 and "not UTF-8 text" in run.err
    assert "Traceback" not in directory.err + run.err


def test_empty_scenario_exits_2(simulate: Callable[..., CliRun], tmp_path: Path) -> None:
    path = _write(tmp_path, "# nothing here\n")
    run = simulate(path)
    assert run.code == 2
    assert f"{path}:1: the scenario is empty" in run.err


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (
            ["--trace", "/no/such/dir/t.jsonl"],
            "--trace /no/such/dir/t.jsonl: the directory /no/such/dir does not exist",
        ),
        (["--chrome-trace", "/no/such/dir/t.json"], "--chrome-trace"),
        (["--seed", "-3"], "--seed is -3"),
        (["--trace", "same.json", "--chrome-trace", "same.json"], "name the same file"),
    ],
)
def test_bad_options_exit_2_before_running(
    simulate: Callable[..., CliRun], tmp_path: Path, options: list[str], fragment: str
) -> None:
    run = simulate(_write(tmp_path, VALID), *options)
    assert run.code == 2
    assert fragment in run.err
    assert "never run" not in run.out


def test_every_schema_key_is_documented() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text()
    missing = [key for key in described_keys() if f"`{key}`" not in docs]
    assert not missing, f"docs/scenarios.md does not document {missing}"
