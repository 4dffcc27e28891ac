"""The pytest plugin as a user meets it: run with pytest's own pytester, in a subprocess."""

from __future__ import annotations

import shlex

import pytest

CLUSTER_TEST = '''
import pytest
import detray
from detray.sim.faults import KillNode

@detray.remote
def square(x):
    return x * x

@pytest.mark.detray(nodes=[{"count": 3, "resources": {"CPU": 2}}], faults=[KillNode(at_s=0.0005, node=2)])
def test_squares(detray_cluster):
    assert len(detray_cluster.live_nodes()) >= 2
    assert detray.get([square.remote(i) for i in range(30)]) == [i * i for i in range(30)]
'''


def test_a_passing_suite_gets_a_cluster_and_a_coverage_summary(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=CLUSTER_TEST)
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*= detray =*", "1 simulated run(s). Fault kinds injected:", "  KillNode *1"])


def test_the_marker_shapes_the_cluster_and_shutdown_follows(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_shape='''
import pytest
import detray

@pytest.mark.detray(nodes=[{"count": 1, "resources": {"CPU": 2}}, {"count": 4, "resources": {"CPU": 1, "GPU": 2}}])
def test_shape(detray_cluster):
    assert detray.cluster_resources()["GPU"] == 8
    assert len(detray.nodes()) == 5

def test_after(detray_cluster):
    assert len(detray.nodes()) == 1  # a fresh default cluster, the previous one is gone

def test_without_detray():
    assert not detray.is_initialized()
'''
    )
    result = pytester.runpytest_subprocess("-q", "-p", "no:randomly")
    result.assert_outcomes(passed=3)


FLAKY_UNDER_SEED_2 = '''
import detray

@detray.remote
def draw():
    import random
    return random.random()

def test_depends_on_the_seed(detray_cluster, detray_seed):
    value = detray.get(draw.remote())
    assert detray_seed != 2, f"seed 2 draws {value}"
'''


def test_detray_seeds_runs_each_test_under_k_seeds_and_prints_the_replay(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_flaky=FLAKY_UNDER_SEED_2)
    result = pytester.runpytest_subprocess("-q", "--detray-seeds", "4")
    result.assert_outcomes(passed=3, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*failed with seed 2; replay with:*",
            "*python -m pytest test_flaky.py::test_depends_on_the_seed --detray-seed 2*",
            "FAILED test_flaky.py::test_depends_on_the_seed*with seed 2*",
        ]
    )
    # The printed command replays exactly the failing case, and only it.
    command = next(line for line in result.outlines if "--detray-seed 2" in line and "python -m pytest" in line)
    args = shlex.split(command.strip())[3:]
    replay = pytester.runpytest_subprocess("-q", *args)
    replay.assert_outcomes(failed=1)
    replay.stdout.fnmatch_lines(["*seed 2 draws*"])


def test_detray_seed_picks_the_seed(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_flaky=FLAKY_UNDER_SEED_2)
    pytester.runpytest_subprocess("-q", "--detray-seed", "3").assert_outcomes(passed=1)
    pytester.runpytest_subprocess("-q", "--detray-seed", "2").assert_outcomes(failed=1)


def test_a_failing_example_shrinks_to_a_smaller_schedule_with_a_scenario_to_replay(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_shrink='''
import json, os
from hypothesis import given, settings, HealthCheck
import detray
import detray.testing as dt
from detray.testing import strategies as ds

CLUSTER = {"nodes": [{"count": 6, "resources": {"CPU": 2}}]}
LOG = os.path.join(os.path.dirname(__file__), "failing_sizes.jsonl")

@detray.remote(max_retries=0)
def work(i):
    import time
    time.sleep(0.01)
    return i

def program():
    return sum(detray.get([work.remote(i) for i in range(20)]))

REFERENCE = dt.reference(program)

@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(schedule=ds.fault_schedules(CLUSTER, horizon_s=0.05, kinds=("kill_worker", "slow_node", "evict_objects"), max_faults=6), seed=ds.seeds())
def test_no_task_may_be_lost(schedule, seed):
    outcome = dt.run(program, cluster=CLUSTER, faults=schedule, seed=seed, check_invariants=False)
    failed = outcome.error is not None
    if failed:
        with open(LOG, "a") as f:
            f.write(json.dumps(len(schedule)) + "\\n")
    assert not failed, dt.scenario_yaml(outcome, program=program)
'''
    )
    result = pytester.runpytest_subprocess("-q")
    result.assert_outcomes(failed=1)
    sizes = [int(line) for line in (pytester.path / "failing_sizes.jsonl").read_text().split()]
    # Hypothesis replays the minimal example last: one fault, and no failing example was smaller.
    assert sizes[-1] == 1 and min(sizes) == 1
    assert max(sizes) >= sizes[-1]
    result.stdout.fnmatch_lines(["*workload: {function: 'test_shrink:program'}*", "*kill_worker:*"])


PORTABLE_TEST = '''
import pytest
import detray
from detray.sim.faults import KillNode

@detray.remote
def square(x):
    return x * x

@pytest.mark.detray(nodes=[{"count": 3, "resources": {"CPU": 2}}], faults=[KillNode(at_s=0.0005, node=2)])
def test_squares(detray_cluster):
    assert detray.cluster_resources()["CPU"] == 6
    assert detray.get([square.remote(i) for i in range(30)]) == [i * i for i in range(30)]
'''


def test_the_same_tests_run_on_the_real_runtime(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_app=PORTABLE_TEST)
    result = pytester.runpytest_subprocess("-q", "--detray-mode", "real", "-p", "no:randomly")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*1 run(s) on the real runtime*faults not injected there: 1"])


def test_bad_marker_keywords_are_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_bad='''
import pytest

@pytest.mark.detray(node=[{"count": 2}])
def test_x(detray_cluster):
    pass
'''
    )
    result = pytester.runpytest_subprocess("-q")
    assert result.ret != 0
    assert "unknown keywords ['node']" in result.stdout.str()
