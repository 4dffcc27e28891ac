"""Synchronous data-parallel training with a parameter server, on GPU nodes.

Ordinary Ray code (``import ray`` in place of ``import detray as ray`` runs it
on Ray). A ``ParameterServer`` actor holds the weights of a linear model; each
``DataWorker`` actor (one GPU each, ``num_gpus=1``) owns a shard of a synthetic
regression data set and computes numpy gradients for the weights it is given.
Each step the server sums the workers' gradients (passed as object refs, never
through the driver) and applies them.

Every actor reports the GPU ids it was given (``ray.get_gpu_ids()``): the
program checks that each has exactly one and that no GPU of a node is handed
out twice. It then replays the same synchronous SGD sequentially and fails
(``AssertionError``) unless the distributed weights are identical, and unless
the model has learnt the true weights.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

import detray as ray

FEATURES = 16
NOISE = 0.01


def shard(seed: int, index: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Worker ``index``'s data: ``y = x @ true_weights + noise``, from its own generator."""
    true_weights = np.random.default_rng(seed).normal(size=FEATURES)
    rng = np.random.default_rng([seed, index])
    x = rng.normal(size=(rows, FEATURES))
    return x, x @ true_weights + NOISE * rng.normal(size=rows)


def gradient(weights: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Gradient of the mean squared error of the linear model on one shard."""
    return 2.0 * x.T @ (x @ weights - y) / len(y)


def placement() -> tuple[str, tuple[int, ...]]:
    return ray.get_runtime_context().get_node_id(), tuple(int(i) for i in ray.get_gpu_ids())


@ray.remote(num_gpus=1)
class ParameterServer:
    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = learning_rate
        self.weights = np.zeros(FEATURES)
        self.steps = 0

    def apply_gradients(self, *gradients: np.ndarray) -> np.ndarray:
        self.weights = self.weights - self.learning_rate * np.sum(gradients, axis=0) / len(gradients)
        self.steps += 1
        return self.weights

    def get_weights(self) -> np.ndarray:
        return self.weights

    def placement(self) -> tuple[str, tuple[int, ...]]:
        return placement()


@ray.remote(num_gpus=1)
class DataWorker:
    def __init__(self, seed: int, index: int, rows: int) -> None:
        self.x, self.y = shard(seed, index, rows)

    def compute_gradients(self, weights: np.ndarray) -> np.ndarray:
        return gradient(weights, self.x, self.y)

    def placement(self) -> tuple[str, tuple[int, ...]]:
        return placement()


def check(condition: bool, message: str) -> None:
    """Fail the run when a result is wrong (``assert`` would vanish under ``python -O``)."""
    if not condition:
        raise AssertionError(f"parameter_server: {message}")


def sequential_weights(seed: int, workers: int, rows: int, steps: int, learning_rate: float) -> np.ndarray:
    shards = [shard(seed, i, rows) for i in range(workers)]
    weights = np.zeros(FEATURES)
    for _ in range(steps):
        gradients = [gradient(weights, x, y) for x, y in shards]
        weights = weights - learning_rate * np.sum(gradients, axis=0) / len(gradients)
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description="synchronous SGD with a parameter server on GPUs")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    ray.init(num_cpus=4, num_gpus=args.workers + 1)
    start_s = time.monotonic()
    server = ParameterServer.remote(args.learning_rate)
    workers = [DataWorker.remote(args.seed, i, args.rows) for i in range(args.workers)]
    placements = ray.get([server.placement.remote()] + [w.placement.remote() for w in workers])
    check(all(len(gpus) == 1 for _node, gpus in placements), f"an actor did not get exactly one GPU: {placements}")
    taken = Counter((node, gpus[0]) for node, gpus in placements)
    check(max(taken.values()) == 1, f"a GPU was given to two actors: {placements}")
    nodes = Counter(node for node, _gpus in placements)
    print(f"parameter server on {placements[0][0]} GPU {placements[0][1][0]}; "
          f"{args.workers} workers on {len(nodes)} nodes, one GPU each")

    weights = server.get_weights.remote()
    for step in range(args.steps):
        gradients = [w.compute_gradients.remote(weights) for w in workers]
        weights = server.apply_gradients.remote(*gradients)
        if step % 10 == 9:
            ray.wait([weights])  # bound the steps in flight, as a real loop would to log progress
    final = ray.get(weights)
    elapsed_s = time.monotonic() - start_s

    x, y = shard(args.seed, 10_000, args.rows)  # held-out rows
    loss = float(np.mean((x @ final - y) ** 2))
    print(f"{args.steps} synchronous steps in {elapsed_s:.2f}s: held-out loss {loss:.2e}")
    expected = sequential_weights(args.seed, args.workers, args.rows, args.steps, args.learning_rate)
    check(np.array_equal(final, expected), "the weights differ from the sequential replay of the same steps")
    true_weights = np.random.default_rng(args.seed).normal(size=FEATURES)
    check(loss < 10 * NOISE**2, f"held-out loss {loss} is above {10 * NOISE ** 2}: the model did not learn")
    check(float(np.max(np.abs(final - true_weights))) < 0.01, "the weights are far from the true weights")
    print("weights equal the sequential replay and match the true weights")
    ray.shutdown()


if __name__ == "__main__":
    main()
