"""The scenarios shipped in ``scenarios/``: each one runs under ``detray simulate``, meets its
expectations and reproduces in a fresh process.

Every ``scenarios/*.yaml`` is found by globbing, so a new scenario is tested
without touching this file. The programs check their own answers (a wrong
count or sum raises ``AssertionError``), so exit status 0 means the answer was
right under the scenario's faults, not only that the run ended. Scenarios that
take about a minute of wall time are marked ``slow`` (``SLOW_SCENARIOS``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from _simulate_support import CliRun, summary_value

from detray.scenario import load

SCENARIOS_DIR = Path(__file__).resolve().parents[2] / "scenarios"
SLOW_SCENARIOS = frozenset({"scale"})
"""File stems of scenarios that take about a minute of wall time (1,000 nodes, 100,000 tasks)."""


def shipped() -> list[Path]:
    return sorted(SCENARIOS_DIR.glob("*.yaml"))


def scenario_params() -> list[object]:
    return [
        pytest.param(path, id=path.stem, marks=[pytest.mark.slow] if path.stem in SLOW_SCENARIOS else [])
        for path in shipped()
    ]


def expectations_met(run: CliRun) -> tuple[int, int]:
    """``(met, total)`` from the summary's ``expectations: 4/4 met: all met`` line."""
    found = re.match(r"(\d+)/(\d+) met", summary_value(run.out, "expectations"))
    assert found, f"unreadable expectations line in:\n{run.out}"
    return int(found.group(1)), int(found.group(2))


def test_the_shipped_scenarios_are_all_found_and_valid() -> None:
    paths = shipped()
    assert {"quickstart", "scale"} <= {path.stem for path in paths}, paths
    assert SLOW_SCENARIOS <= {path.stem for path in paths}, "a slow scenario named here no longer exists"
    scripts = set()
    for path in paths:
        scenario = load(path)  # raises ScenarioError naming the file and line
        assert scenario.expect.exit == "ok", f"{path.name}: a shipped scenario should end normally"
        assert scenario.expect.output_contains, f"{path.name}: say what the program prints when it is right"
        scripts.add(scenario.script.resolve())
    programs = {path.resolve() for path in SCENARIOS_DIR.glob("*.py")}
    assert programs == scripts, f"programs without a scenario: {sorted(p.name for p in programs - scripts)}"


@pytest.mark.parametrize("path", scenario_params())
def test_a_shipped_scenario_runs_and_meets_its_expectations(simulate: Callable[..., CliRun], path: Path) -> None:
    run = simulate(path)
    assert run.code == 0, f"detray simulate {path.name} exited {run.code}\n{run.out}\n{run.err}"
    assert summary_value(run.out, "program") == "ended normally"
    met, total = expectations_met(run)
    declared = yaml.safe_load(path.read_text())["expect"]
    assert met == total >= len(declared), f"{met}/{total} expectations met, {len(declared)} declared"
    for text in declared.get("output_contains", []):
        assert text in run.out  # the program's own output is shown without --quiet


@pytest.mark.parametrize("path", scenario_params())
def test_a_shipped_scenario_reproduces_in_a_fresh_process(simulate: Callable[..., CliRun], path: Path) -> None:
    run = simulate(path, "--check-determinism", "--quiet")
    assert run.code == 0, f"detray simulate --check-determinism {path.name} exited {run.code}\n{run.out}\n{run.err}"
    assert "determinism: the same trace in a fresh process" in run.out


def test_the_quickstart_fails_when_its_answer_is_wrong(simulate: Callable[..., CliRun], tmp_path: Path) -> None:
    """The self-check is real: chunks computed on node 2 come out wrong, and the run fails."""
    source = (SCENARIOS_DIR / "quickstart.py").read_text()
    correct = "    values = chunk_values(index, weights)\n"
    assert source.count(correct) == 1
    (tmp_path / "quickstart.py").write_text(
        source.replace(correct, correct + '    values = values + (node == "node-00002")\n')
    )
    (tmp_path / "quickstart.yaml").write_text((SCENARIOS_DIR / "quickstart.yaml").read_text())
    run = simulate(tmp_path / "quickstart.yaml", "--quiet")
    assert run.code == 1, run.out
    assert "AssertionError" in summary_value(run.out, "program")
    assert "quickstart: the tally actor's total is" in run.out + run.err
