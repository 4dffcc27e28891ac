"""A Hypothesis run of fault schedules against the example app, as a user's CI would run it.

Usage (from the repository root):

    python bench/fault_tests.py                 # 200 schedules, 20-node cluster
    python bench/fault_tests.py --examples 50

Runs the bank example (examples/bank) under ``--examples`` fault schedules
drawn by ``detray.testing.strategies`` on a 20-node simulated cluster, each
checked against the lineage oracle with the core's invariants checked after
every step (as ``examples/bank/test_bank.py`` does), and prints the wall
time. The baseline, in the same run: the same number of fault-free runs of
the same program through ``detray.testing.run`` (what the harness costs
without faults or Hypothesis). Issue 5's target: 200 schedules in under 60 s.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from time import perf_counter  # bound before the simulator patches time: real time

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "examples" / "bank"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402

import bank  # noqa: E402
import detray.testing as dt  # noqa: E402
from detray.testing import strategies as ds  # noqa: E402

CLUSTER = {"nodes": [{"count": 1, "name": "head", "resources": {"CPU": 4}}, {"count": 19, "resources": {"CPU": 4}}]}
KINDS = ("kill_worker", "kill_node", "restart_node", "slow_node", "evict_objects", "partition")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    args = parser.parse_args()
    reference = dt.reference(bank.main)

    start = perf_counter()
    for seed in range(args.examples):
        dt.run(bank.main, cluster=CLUSTER, seed=seed)
    baseline_s = perf_counter() - start

    faults_seen: dict[str, int] = {}

    @settings(max_examples=args.examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(schedule=ds.fault_schedules(CLUSTER, horizon_s=0.3, kinds=KINDS), seed=ds.seeds())
    def survives(schedule: list, seed: int) -> None:
        outcome = dt.run(bank.main, cluster=CLUSTER, faults=schedule, seed=seed)
        for kind, count in outcome.faults_injected.items():
            faults_seen[kind] = faults_seen.get(kind, 0) + count
        dt.check(outcome, reference, program=bank.main)

    start = perf_counter()
    survives()
    elapsed_s = perf_counter() - start
    print(f"baseline: {args.examples} fault-free runs in {baseline_s:.1f} s ({baseline_s / args.examples * 1000:.0f} ms each)")
    print(f"hypothesis: {args.examples} fault schedules on {ds.node_count(CLUSTER)} nodes in {elapsed_s:.1f} s "
          f"({elapsed_s / args.examples * 1000:.0f} ms each), {elapsed_s / baseline_s:.2f}x the baseline; "
          f"target < 60 s: {'met' if elapsed_s < 60 else 'NOT met'}")
    print(f"faults injected: {dict(sorted(faults_seen.items()))}")


if __name__ == "__main__":
    main()
