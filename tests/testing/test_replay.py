"""A run written as a scenario file replays under ``detray simulate``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

import detray.testing as dt
from detray.cli import main as cli_main
from detray.sim import faults as F

BANK = Path(__file__).resolve().parents[2] / "examples" / "bank"
CLUSTER = {"nodes": [{"count": 1, "name": "head", "resources": {"CPU": 4}}, {"count": 5, "resources": {"CPU": 4}}]}


@pytest.fixture
def bank(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BANK))
    monkeypatch.chdir(BANK)
    import bank as module

    yield module
    sys.modules.pop("bank", None)


def test_the_printed_scenario_replays_the_same_run(bank, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outcome = dt.run(bank.main_with_retry_bug, cluster=CLUSTER, seed=1, faults=[F.KillWorker(at_s=0.003, node=0)])
    assert outcome.faults_injected["KillWorker"] == 1
    scenario = tmp_path / "replay.yaml"
    scenario.write_text(dt.scenario_yaml(outcome, program=bank.main_with_retry_bug))
    capsys.readouterr()
    assert cli_main(["simulate", str(scenario)]) == 0
    printed = capsys.readouterr().out
    assert f"bank:main_with_retry_bug() returned {outcome.result!r}" in printed
    assert "task retries:                    1" in printed or "task retries: 1" in printed.replace("  ", " ")


def test_every_fault_kind_is_written_in_a_form_the_loader_accepts(tmp_path: Path) -> None:
    from detray.scenario.load import load as load_scenario

    faults = [
        F.KillNode(at_s=0.1, node=1), F.RestartNode(at_s=0.2, node=1), F.KillWorker(at_s=0.1, node=2),
        F.KillWorker(at_s=0.1, node=2, task_name="leaf"), F.Partition(at_s=0.1, groups=[[1, 2]], heal_at_s=0.5),
        F.Heal(at_s=0.6), F.EvictCopies(at_s=0.1, node=3, fraction=0.5), F.SlowNode(at_s=0.1, node=4, factor=3.0, until_s=1.0),
        F.LoseNotification(at_s=0.1, count=2), F.DelayNotification(at_s=0.1, delay_s=0.5, count=1),
        F.RestartControlPlane(at_s=0.1, downtime_s=0.2),
        F.RandomFaults(at_s=0.0, rate_per_s=2.0, end_s=1.0, kinds=("kill_node",), max_faults=3, restart_after_s=0.5),
    ]
    (tmp_path / "prog.py").write_text("def main():\n    return 1\n")
    text = dt.scenario_yaml(cluster=CLUSTER, faults=faults, seed=4).replace("FILL_ME:program", "prog:main")
    path = tmp_path / "all.yaml"
    path.write_text(text)
    loaded = load_scenario(path)
    assert loaded.function == "prog:main" and loaded.seed == 4
    assert len(yaml.safe_load(text)["faults"]) == len(faults) == len(loaded.fault_entries)
    engine = loaded.faults(4)
    assert [type(f) for f in engine] == [type(f) for f in faults]
