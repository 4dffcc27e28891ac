"""A two-pass pipeline of large numpy arrays through object stores too small to hold them.

Ordinary Ray code (``import ray`` in place of ``import detray as ray`` runs it
on Ray). Pass one: ``load`` makes a large float64 block, ``transform`` makes a
new block from it, ``measure`` reduces that to a few numbers, and ``plan``
turns every block's numbers into one global scaling. Pass two: ``normalize``
reads each transformed block again, scaled by the plan, down to a checksum.
The driver keeps the transformed blocks' refs between the passes but only ever
fetches small results.

The blocks do not fit in memory at once, so stores spill some to disk and
restore them when pass two needs them. Under ``detray simulate
array_pipeline.yaml`` stores also lose copies (``evict_objects``) while the plan
is made: a transformed block that is gone is rebuilt from lineage, which
first rebuilds the loaded block it came from, itself freed long before.

Each block holds an arithmetic sequence, so every result is known in closed
form: the program fails (``AssertionError``) unless each one matches.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

import detray as ray


def block_parameters(index: int) -> tuple[float, float]:
    """Block ``index`` is loaded as ``offset + step * k`` for ``k`` in ``0 .. n-1``."""
    return float(index), 1.0 / (index + 1)


@ray.remote
def load(index: int, values: int) -> np.ndarray:
    offset, step = block_parameters(index)
    return offset + step * np.arange(values, dtype=np.float64)


@ray.remote
def transform(block: np.ndarray) -> np.ndarray:
    return 2.0 * block - 1.0


@ray.remote
def measure(block: np.ndarray) -> tuple[float, float, float]:
    return float(block.sum()), float(block.min()), float(block.max())


@ray.remote
def plan(*measures: tuple[float, float, float]) -> float:
    """One scale for every block: the largest magnitude seen anywhere."""
    return max(max(abs(low), abs(high)) for _total, low, high in measures)


@ray.remote
def normalize(block: np.ndarray, scale: float) -> float:
    return float((block / scale).sum())


def expected_measure(index: int, values: int) -> tuple[float, float, float]:
    offset, step = block_parameters(index)
    total = offset * values + step * values * (values - 1) / 2.0
    return 2.0 * total - values, 2.0 * offset - 1.0, 2.0 * (offset + step * (values - 1)) - 1.0


def check(condition: bool, message: str) -> None:
    """Fail the run when a result is wrong (``assert`` would vanish under ``python -O``)."""
    if not condition:
        raise AssertionError(f"array_pipeline: {message}")


def close(got: float, want: float) -> bool:
    return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-6)


def main() -> None:
    parser = argparse.ArgumentParser(description="large arrays, two passes, small object stores")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--block-mb", type=int, default=16)
    args = parser.parse_args()

    ray.init(num_cpus=4)
    start_s = time.monotonic()
    values = args.block_mb * 2**20 // 8
    transformed = [transform.remote(load.remote(i, values)) for i in range(args.blocks)]
    measures = [measure.remote(block) for block in transformed]
    scale_ref = plan.remote(*measures)
    checksums = [normalize.remote(block, scale_ref) for block in transformed]
    got_measures, scale, got_checksums = ray.get(measures), ray.get(scale_ref), ray.get(checksums)
    elapsed_s = time.monotonic() - start_s

    print(f"{args.blocks} blocks of {args.block_mb} MiB, two passes "
          f"({2 * args.blocks * args.block_mb / 1024:.1f} GiB of arrays made) in {elapsed_s:.2f}s")
    wanted = [expected_measure(i, values) for i in range(args.blocks)]
    for index, (got, want) in enumerate(zip(got_measures, wanted)):
        check(all(close(g, w) for g, w in zip(got, want)), f"block {index}: measured {got}, expected {want}")
    want_scale = max(max(abs(low), abs(high)) for _total, low, high in wanted)
    check(close(scale, want_scale), f"the plan's scale is {scale}, expected {want_scale}")
    for index, (got_sum, (total, _low, _high)) in enumerate(zip(got_checksums, wanted)):
        check(close(got_sum, total / want_scale), f"block {index}: checksum {got_sum}, expected {total / want_scale}")
    print("every measure and checksum matches the closed form")
    ray.shutdown()


if __name__ == "__main__":
    main()
