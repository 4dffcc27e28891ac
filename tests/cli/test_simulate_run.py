"""``detray simulate`` running scenarios: exit statuses, the summary, expectations, deadlocks,
faults, the trace and the program's environment. Runs in this process (``detray.cli.main``)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from _simulate_support import FIXTURES, CliRun, summary_value

from detray.scenario import load
from detray.sim import faults as F

DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def _scenario(tmp_path: Path, script: str, extra: str = "", *, nodes: str = "[{resources: {CPU: 2}}]") -> Path:
    (tmp_path / "program.py").write_text(script)
    path = tmp_path / "scenario.yaml"
    path.write_text(f"cluster:\n  nodes: {nodes}\nworkload:\n  script: program.py\n{extra}")
    return path


def test_a_passing_scenario_exits_0_and_summarizes_the_run(simulate: Callable[..., CliRun]) -> None:
    run = simulate("tiny.yaml")
    assert run.code == 0, run.err
    assert "tiny: total=140" in run.out  # the program's output is shown; its sibling module imported
    assert summary_value(run.out, "scenario").startswith("tiny (")
    assert summary_value(run.out, "seed") == "3"
    assert summary_value(run.out, "program") == "ended normally"
    assert 0 < float(summary_value(run.out, "virtual makespan").removesuffix(" s")) <= 5
    assert summary_value(run.out, "expectations") == "4/4 met: all met"
    assert summary_value(run.out, "tasks").startswith("18 attempts started, 18 finished")
    assert DIGEST.match(summary_value(run.out, "trace digest"))
    assert "utilization node 0 (head): CPU " in run.out
    assert re.search(r"utilization nodes 1-2 \(worker\): CPU [\d.]+%.*, GPU 0\.0%", run.out)
    assert "tasks started" not in run.err, "no progress display when stderr is not a terminal"
    assert run.err == ""


def test_the_trace_file_hashes_to_the_digest_and_the_seed_decides_it(
    simulate: Callable[..., CliRun], tmp_path: Path
) -> None:
    first = simulate("tiny.yaml", "--trace", str(tmp_path / "a.jsonl"))
    again = simulate("tiny.yaml", "--trace", str(tmp_path / "b.jsonl"), "--quiet")
    other = simulate("tiny.yaml", "--seed", "4")
    digest = summary_value(first.out, "trace digest")
    assert digest == "sha256:" + hashlib.sha256((tmp_path / "a.jsonl").read_bytes()).hexdigest()
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert summary_value(again.out, "trace digest") == digest
    assert summary_value(other.out, "seed") == "4"
    assert summary_value(other.out, "trace digest") != digest  # uniform durations drawn from another seed


def test_quiet_hides_the_program_output_but_not_the_summary(simulate: Callable[..., CliRun]) -> None:
    run = simulate("tiny.yaml", "--quiet")
    assert run.code == 0
    assert "tiny: total=140" not in (run.out + run.err).splitlines()
    assert summary_value(run.out, "expectations") == "4/4 met: all met"


def test_a_failed_expectation_exits_1_and_says_which(simulate: Callable[..., CliRun]) -> None:
    run = simulate("slow_expectation.yaml")
    assert run.code == 1
    assert "expect FAILED: max_makespan_s: 2 (virtual makespan 8.01 s)" in run.out
    assert "expect FAILED: min_task_retries: 1 (0 task retries)" in run.out
    assert "expect met: exit: ok" in run.out
    assert "2 expectation(s) not met" in run.err
    assert "Traceback" not in run.err


def test_a_deadlock_exits_1_naming_the_blocked_ref_and_why(simulate: Callable[..., CliRun]) -> None:
    run = simulate("deadlock.yaml")
    assert run.code == 1
    assert summary_value(run.out, "program").startswith("raised DeadlockError")
    assert re.search(
        r"the driver waits in get\(\) for 1 object\(s\), 1 not ready:\n  \w+\.r1: its task \w+ is infeasible", run.err
    )
    assert "needs {'CPU': 1.0, 'GPU': 1.0}" in run.err
    assert 'deadlock.py", line 12' in run.err  # where the driver was blocked
    assert "detray/" not in run.err.split("the program was blocked here:")[1].split("DeadlockError")[0]


def test_an_expected_exception_passes_and_an_unexpected_one_fails_with_its_traceback(
    simulate: Callable[..., CliRun], tmp_path: Path
) -> None:
    assert simulate("raises.yaml").code == 0  # RayTaskError(ValueError) is a ValueError
    path = _scenario(tmp_path, (FIXTURES / "raises.py").read_text(), "expect: {exit: ok}\n")
    run = simulate(path)
    assert run.code == 1
    assert "the program's traceback (its own frames):" in run.err
    assert 'program.py", line 12, in <module>' in run.err
    assert "broken on purpose" in run.err


def test_exit_status_expectation(simulate: Callable[..., CliRun], tmp_path: Path) -> None:
    script = "import sys\nimport detray as ray\nray.init()\nray.shutdown()\nsys.exit(3)\n"
    assert simulate(_scenario(tmp_path, script, "expect: {exit: 3}\n")).code == 0
    run = simulate(_scenario(tmp_path, script))
    assert run.code == 1
    assert "exit: ok: the program exited with status 3" in run.err


def test_a_program_that_never_uses_detray_fails(simulate: Callable[..., CliRun], tmp_path: Path) -> None:
    run = simulate(_scenario(tmp_path, "print('hello')\n"))
    assert run.code == 1
    assert "never called detray (nothing was simulated)" in run.err


def test_a_second_init_after_shutdown_is_refused(simulate: Callable[..., CliRun], tmp_path: Path) -> None:
    script = "import detray as ray\nray.init()\nray.shutdown()\nray.init()\n"
    run = simulate(_scenario(tmp_path, script))
    assert run.code == 1
    assert "one simulation per scenario" in run.err


def test_a_program_without_init_starts_on_the_scenario_cluster(simulate: Callable[..., CliRun]) -> None:
    run = simulate("autoinit.yaml")
    assert run.code == 0, run.out + run.err
    assert "autoinit 1 6.0" in run.out


def test_scenario_durations_win_and_utilization_counts_held_cpus(simulate: Callable[..., CliRun]) -> None:
    run = simulate("hold.yaml")
    assert run.code == 0, run.out + run.err
    makespan_s = float(summary_value(run.out, "virtual makespan").removesuffix(" s"))
    assert 1.0 <= makespan_s < 1.1  # the scenario's 1 s, not init's 5 s
    share = float(re.search(r"utilization node 0: CPU ([\d.]+)%", run.out).group(1))
    assert 45.0 <= share <= 50.0  # 2 of 4 CPUs for 1 s of the run


def test_faults_are_injected_and_the_work_survives(simulate: Callable[..., CliRun]) -> None:
    run = simulate("faults.yaml")
    assert run.code == 0, run.out + run.err
    assert "faults: total=276000" in run.out
    assert summary_value(run.out, "faults injected") == "7 (KillNode 1, KillWorker 4, RestartNode 1, SlowNode 1)"
    assert int(summary_value(run.out, "task retries")) >= 1
    assert summary_value(run.out, "nodes").startswith("4 (1 went down")


def test_random_nodes_follow_the_seed_and_spare_the_head(tmp_path: Path) -> None:
    path = _scenario(
        tmp_path,
        "",
        "faults:\n  - {every_s: 0.5, evict_objects: {node: random, fraction: 0.5}, count: 20}\n"
        "  - {rate_per_s: 2, kill_node: random, until_s: 9}\n  - {at_s: 1, kill_worker: random}\n",
        nodes="[{count: 8}]",
    )
    scenario = load(path)
    picks = [fault.node for fault in scenario.faults(1) if isinstance(fault, F.EvictCopies)]
    assert [fault.at_s for fault in scenario.faults(1)][:3] == [0.5, 1.0, 1.5]
    assert len(picks) == 20 and 0 not in picks
    assert picks == [fault.node for fault in scenario.faults(1) if isinstance(fault, F.EvictCopies)]
    assert picks != [fault.node for fault in scenario.faults(2) if isinstance(fault, F.EvictCopies)]
    # A random worker kill picks its victim among the workers running when it happens.
    assert [f.node for f in scenario.faults(1) if isinstance(f, F.KillWorker)] == [None]
    (random_faults,) = [fault for fault in scenario.faults(1) if isinstance(fault, F.RandomFaults)]
    assert random_faults == F.RandomFaults(
        at_s=0.0, rate_per_s=2.0, end_s=9.0, kinds=("kill_node",), max_faults=100, restart_after_s=None
    )


def test_every_fault_action_maps_to_the_engine(tmp_path: Path) -> None:
    faults = """faults:
  - {at_s: 1, kill_node: 1, restart_after_s: 2}
  - {at_s: 1, restart_node: 2}
  - {at_s: 1, kill_worker: {node: 2, task_name: step}}
  - {at_s: 1, partition: [[0, 1], [2]], heal_at_s: 3}
  - {at_s: 4, heal: true}
  - {at_s: 1, evict_objects: {node: 1, fraction: 0.25}}
  - {at_s: 1, slow_node: {node: 2, factor: 3, until_s: 5}}
  - {at_s: 1, lose_notifications: 2}
  - {at_s: 1, delay_notifications: {delay_s: 0.5, count: 3}}
  - {at_s: 1, restart_control_plane: {downtime_s: 2}}
"""
    scenario = load(_scenario(tmp_path, "", faults, nodes="[{count: 3}]"))
    assert scenario.faults(0) == [
        F.KillNode(at_s=1.0, node=1),
        F.RestartNode(at_s=3.0, node=1),
        F.RestartNode(at_s=1.0, node=2),
        F.KillWorker(at_s=1.0, node=2, task_name="step"),
        F.Partition(at_s=1.0, groups=((0, 1), (2,)), heal_at_s=3.0),
        F.Heal(at_s=4.0),
        F.EvictCopies(at_s=1.0, node=1, fraction=0.25),
        F.SlowNode(at_s=1.0, node=2, factor=3.0, until_s=5.0),
        F.LoseNotification(at_s=1.0, count=2),
        F.DelayNotification(at_s=1.0, delay_s=0.5, count=3),
        F.RestartControlPlane(at_s=1.0, downtime_s=2.0),
    ]


@pytest.mark.parametrize(
    ("fault", "fragment"),
    [
        ("{rate_per_s: 1, kill_worker: 2}", "write `random`"),
        ("{every_s: 1, partition: [[1]]}", "partition cannot repeat"),
        ("{at_s: 1, until_s: 3, kill_worker: 1}", "only applies to a repeating fault"),
        ("{every_s: 1, rate_per_s: 1, kill_worker: random}", "give one (periodic or random times)"),
        ("{at_s: 1, restart_after_s: 1, kill_worker: 1}", "restart_after_s only applies to kill_node"),
        ("{at_s: 1, restart_node: 0}", "restarts node 0, the head"),
        ("{every_s: 0.000001, count: 10000, kill_worker: 1}", "at most"),
    ],
)
def test_fault_timings_that_do_not_fit_are_refused(
    simulate: Callable[..., CliRun], tmp_path: Path, fault: str, fragment: str
) -> None:
    path = _scenario(
        tmp_path, "", "faults:\n" + f"  - {fault}\n" * (11 if "count: 10000" in fault else 1), nodes="[{count: 3}]"
    )
    run = simulate(path)
    assert run.code == 2, run.err
    assert fragment in run.err
    assert re.search(rf"{re.escape(str(path))}:\d+: ", run.err)
