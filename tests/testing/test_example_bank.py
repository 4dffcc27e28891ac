"""The example application's own fault-injection tests (examples/bank), run as a user runs them."""

from __future__ import annotations

from pathlib import Path

import pytest

BANK_TESTS = Path(__file__).resolve().parents[2] / "examples" / "bank" / "test_bank.py"


def test_the_example_passes_its_fault_injection_tests(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BANK_EXAMPLES", "10")
    result = pytester.runpytest_subprocess(str(BANK_TESTS), "-q", "-p", "no:cacheprovider", "-k", "not two_step")
    result.assert_outcomes(passed=3, deselected=1)


def test_the_planted_bug_shrinks_to_one_killed_worker_and_prints_its_scenario(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BANK_EXAMPLES", "10")
    result = pytester.runpytest_subprocess(
        str(BANK_TESTS), "-q", "-p", "no:cacheprovider", "--runxfail", "-k", "two_step"
    )
    result.assert_outcomes(failed=1)
    text = result.stdout.str()
    assert "but the reference run got" in text
    assert "workload: {function: 'bank:main_with_retry_bug'}" in text
    scenario = text.split("workload: {function: 'bank:main_with_retry_bug'}", 1)[1].split("Failing test case", 1)[0]
    assert scenario.count("at_s:") == 1 and "kill_worker:" in scenario, scenario
