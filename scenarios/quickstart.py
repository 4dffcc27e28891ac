"""Quickstart: tasks, an actor and a put on a small cluster, and a node that dies mid-run.

Ordinary Ray code (``import ray`` in place of ``import detray as ray`` runs it
on Ray). Each ``make_chunk`` task returns two objects: a small summary the
driver reads at once, and a 1 MiB chunk that stays in the object store of the
node that made it until ``combine`` needs it. A ``Tally`` actor adds up the
summaries meanwhile.

Under ``detray simulate quickstart.yaml`` the cluster is a head and three
workers, and ``node-00002`` dies while the tally runs, taking its chunks with
it. Nothing is lost for good: when ``combine`` asks for them, their tasks run
again from lineage (same task, same object ids) and the total comes out the
same. Every chunk carries the instant it was made, so the program can tell a
rebuilt chunk from the original, on any runtime.

The program checks its totals against a sequential computation and fails
(``AssertionError``) when one differs.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

import detray as ray

CHUNK_VALUES = 128 * 1024
"""Values per chunk: 1 MiB of float64, large enough to live in the object store."""
WEIGHTS = (1.0, 0.5, 2.0, 0.25)


def chunk_values(index: int, weights: np.ndarray) -> np.ndarray:
    base = np.arange(index * CHUNK_VALUES, (index + 1) * CHUNK_VALUES, dtype=np.float64)
    return base * weights[index % len(weights)]


@ray.remote(num_returns=2)
def make_chunk(index: int, weights: np.ndarray) -> tuple[tuple[str, float, float], tuple[str, float, np.ndarray]]:
    """A summary ``(node, made_at, sum)`` and the chunk ``(node, made_at, values)``."""
    node = ray.get_runtime_context().get_node_id()
    made_at = time.time()
    values = chunk_values(index, weights)
    return (node, made_at, float(values.sum())), (node, made_at, values)


@ray.remote
def combine(*chunks: tuple[str, float, np.ndarray]) -> tuple[float, list[tuple[str, float]]]:
    """The total over every chunk, and where and when each chunk was made."""
    total = float(sum(values.sum() for _node, _made_at, values in chunks))
    return total, [(node, made_at) for node, made_at, _values in chunks]


@ray.remote
class Tally:
    """Keeps a running count and total of chunk summaries."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0

    def add(self, summary: tuple[str, float, float]) -> int:
        self.count += 1
        self.total += summary[2]
        return self.count

    def result(self) -> tuple[int, float]:
        return self.count, self.total


def check(condition: bool, message: str) -> None:
    """Fail the run when a result is wrong (``assert`` would vanish under ``python -O``)."""
    if not condition:
        raise AssertionError(f"quickstart: {message}")


def per_node(nodes: list[str]) -> str:
    return ", ".join(f"{node}: {count}" for node, count in sorted(Counter(nodes).items()))


def main() -> None:
    parser = argparse.ArgumentParser(description="tasks, an actor, a put, and lineage rebuilding lost chunks")
    parser.add_argument("--chunks", type=int, default=32)
    args = parser.parse_args()

    ray.init(num_cpus=4)
    start_s = time.monotonic()
    alive = [node for node in ray.nodes() if node["Alive"]]
    print(f"cluster: {len(alive)} nodes, {ray.cluster_resources().get('CPU', 0):g} CPUs")

    weights = ray.put(np.array(WEIGHTS))
    made = [make_chunk.options(scheduling_strategy="SPREAD").remote(i, weights) for i in range(args.chunks)]
    summaries = [summary for summary, _chunk in made]
    chunks = [chunk for _summary, chunk in made]
    firsts = ray.get(summaries)
    print(
        f"made {len(chunks)} chunks of {CHUNK_VALUES * 8 // 2**20} MiB by t={time.monotonic() - start_s:.2f}s "
        f"({per_node([node for node, _made_at, _sum in firsts])})"
    )

    tally = Tally.remote()
    for summary in summaries:
        tally.add.remote(summary)
    count, tally_total = ray.get(tally.result.remote())
    print(f"the tally actor added {count} summaries by t={time.monotonic() - start_s:.2f}s")

    total, finals = ray.get(combine.remote(*chunks))
    rebuilt = [i for i, (first, final) in enumerate(zip(firsts, finals)) if first[1] != final[1]]
    if rebuilt:
        lost_with = sorted({firsts[i][0] for i in rebuilt})
        print(
            f"{len(rebuilt)} chunks were lost with {', '.join(lost_with)} and rebuilt from lineage "
            f"({per_node([finals[i][0] for i in rebuilt])})"
        )
    else:
        print("no chunk was lost: each was combined from the node that made it")

    want = float(sum(chunk_values(i, np.array(WEIGHTS)).sum() for i in range(args.chunks)))
    check(count == args.chunks, f"the tally actor counted {count} summaries, expected {args.chunks}")
    check(tally_total == want, f"the tally actor's total is {tally_total!r}, expected {want!r}")
    check(total == want, f"the combined total is {total!r}, expected {want!r}")
    print(f"total {total:.6g} at t={time.monotonic() - start_s:.2f}s, equal to the sequential computation")
    ray.shutdown()


if __name__ == "__main__":
    main()
