"""Scale: a two-level fan-out of tiny tasks over a large cluster.

Ordinary Ray code (``import ray`` in place of ``import detray as ray`` runs it
on Ray). The driver starts ``--spawners`` tasks spread over the cluster
(``SPREAD``); each submits ``--tasks-per-spawner`` tiny tasks of its own (so
submission itself is distributed, as in real large jobs), waits for them and
returns their sum. Under ``detray simulate scale.yaml`` this is 1,000 nodes and
100,000 leaf tasks.

The program fails (``AssertionError``) unless every leaf's value was counted
exactly once.
"""

from __future__ import annotations

import argparse
import time

import detray as ray


@ray.remote
def leaf(value: int) -> int:
    return value


@ray.remote
def spawner(first: int, count: int) -> tuple[int, str]:
    """Sum of ``leaf(first) .. leaf(first + count - 1)``, and the node that gathered it."""
    total = sum(ray.get([leaf.remote(v) for v in range(first, first + count)]))
    return total, ray.get_runtime_context().get_node_id()


def check(condition: bool, message: str) -> None:
    """Fail the run when a result is wrong (``assert`` would vanish under ``python -O``)."""
    if not condition:
        raise AssertionError(f"scale: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description="a two-level fan-out of tiny tasks")
    parser.add_argument("--spawners", type=int, default=10)
    parser.add_argument("--tasks-per-spawner", type=int, default=100)
    args = parser.parse_args()

    ray.init(num_cpus=8)
    start_s = time.monotonic()
    nodes = sum(1 for node in ray.nodes() if node["Alive"])
    per = args.tasks_per_spawner
    refs = [spawner.options(scheduling_strategy="SPREAD").remote(s * per, per) for s in range(args.spawners)]
    results = ray.get(refs)
    elapsed_s = time.monotonic() - start_s

    leaves = args.spawners * per
    gathered_on = {node for _total, node in results}
    print(f"{args.spawners} spawners on {len(gathered_on)} of {nodes} nodes ran {leaves} leaf tasks "
          f"({leaves + args.spawners} tasks) in {elapsed_s:.2f}s")
    total = sum(t for t, _node in results)
    check(total == leaves * (leaves - 1) // 2, f"the sum is {total}, expected {leaves * (leaves - 1) // 2}")
    print(f"sum of all leaves {total}: each counted exactly once")
    ray.shutdown()


if __name__ == "__main__":
    main()
