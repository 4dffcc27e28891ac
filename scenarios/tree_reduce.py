"""A tree reduction: many leaves, summed pairwise level by level, while nodes keep dying.

Ordinary Ray code (``import ray`` in place of ``import detray as ray`` runs it
on Ray). Each leaf task makes a vector; ``add`` tasks combine them ``--fan-in``
at a time into a tree whose root is the total. The whole tree is submitted at
once: each ``add`` starts as soon as its inputs exist, wherever they are.

Under ``detray simulate tree_reduce.yaml`` nodes are killed at random and come
back later: running tasks are retried (``max_retries``), and partial sums lost
with a node are rebuilt from lineage when a parent still needs them, down to
the leaves if need be. The total is known in closed form: the program fails
(``AssertionError``) unless the root equals it exactly.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import detray as ray

VECTOR_LENGTH = 128 * 1024
"""Values per leaf: 1 MiB of int64, so partial sums live in the object stores."""


@ray.remote(max_retries=10)
def leaf(index: int) -> np.ndarray:
    return np.arange(VECTOR_LENGTH, dtype=np.int64) * (index + 1)


@ray.remote(max_retries=10)
def add(*parts: np.ndarray) -> np.ndarray:
    return np.sum(parts, axis=0)


def check(condition: bool, message: str) -> None:
    """Fail the run when a result is wrong (``assert`` would vanish under ``python -O``)."""
    if not condition:
        raise AssertionError(f"tree_reduce: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description="a tree reduction under node failures")
    parser.add_argument("--leaves", type=int, default=64)
    parser.add_argument("--fan-in", type=int, default=2)
    args = parser.parse_args()
    check(args.leaves >= 1 and args.fan_in >= 2, "needs --leaves >= 1 and --fan-in >= 2")

    ray.init(num_cpus=8)
    start_s = time.monotonic()
    level = [leaf.remote(i) for i in range(args.leaves)]
    depth = 0
    while len(level) > 1:
        level = [add.remote(*level[i : i + args.fan_in]) for i in range(0, len(level), args.fan_in)]
        depth += 1
    total = ray.get(level[0])
    elapsed_s = time.monotonic() - start_s

    tasks = args.leaves + sum(-(-args.leaves // args.fan_in**d) for d in range(1, depth + 1))
    alive = sum(1 for node in ray.nodes() if node["Alive"])
    print(f"reduced {args.leaves} leaves through {depth} levels ({tasks} tasks) in {elapsed_s:.2f}s; "
          f"{alive} nodes alive at the end")
    scale = args.leaves * (args.leaves + 1) // 2  # sum of (index + 1) over the leaves
    expected = np.arange(VECTOR_LENGTH, dtype=np.int64) * scale
    check(total.dtype == np.int64 and total.shape == expected.shape, f"the total has shape {total.shape}")
    check(bool(np.array_equal(total, expected)), "the total differs from the closed form")
    print(f"total equals the closed form (element 1 = {int(total[1])})")
    ray.shutdown()


if __name__ == "__main__":
    main()
