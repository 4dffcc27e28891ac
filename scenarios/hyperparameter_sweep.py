"""A hyperparameter sweep: one GPU per trial, many trials at once, nodes lost mid-sweep.

Ordinary Ray code (``import ray`` in place of ``import detray as ray`` runs it
on Ray). Each trial trains a small logistic-regression model with numpy on a
synthetic classification problem for one point of a grid (learning rate x L2
penalty x batch size) and returns its validation accuracy. Trials are tasks
with ``num_gpus=1`` and ``max_retries``: a trial on a node that dies starts
again elsewhere, and the driver, which collects results as they come
(``ray.wait``), never notices beyond the time it took.

The program re-runs every trial sequentially and fails (``AssertionError``)
unless every distributed result equals it, the best trial is the same, and the
best model is good.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

import detray as ray

FEATURES = 10
TRAIN_ROWS = 400
VALIDATION_ROWS = 200


def dataset(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A noisy linearly separable problem: (x_train, y_train, x_valid, y_valid)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=FEATURES)
    x = rng.normal(size=(TRAIN_ROWS + VALIDATION_ROWS, FEATURES))
    y = (x @ direction + rng.normal(scale=1.0, size=len(x)) > 0).astype(np.float64)
    return x[:TRAIN_ROWS], y[:TRAIN_ROWS], x[TRAIN_ROWS:], y[TRAIN_ROWS:]


def train(seed: int, learning_rate: float, l2: float, batch_size: int, epochs: int) -> float:
    """Mini-batch SGD on the logistic loss; the validation accuracy."""
    x, y, x_valid, y_valid = dataset(seed)
    rng = np.random.default_rng([seed, batch_size])
    weights = np.zeros(FEATURES)
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            predicted = 1.0 / (1.0 + np.exp(-np.clip(x[rows] @ weights, -30.0, 30.0)))
            weights -= learning_rate * (x[rows].T @ (predicted - y[rows]) / len(rows) + l2 * weights)
    return float(np.mean(((x_valid @ weights) > 0) == (y_valid > 0.5)))


@ray.remote(num_gpus=1, max_retries=5)
def trial(seed: int, config: dict, epochs: int) -> dict:
    gpus = [int(i) for i in ray.get_gpu_ids()]
    accuracy = train(seed, config["learning_rate"], config["l2"], config["batch_size"], epochs)
    return {**config, "accuracy": accuracy, "node": ray.get_runtime_context().get_node_id(), "gpus": gpus}


def grid(trials: int) -> list[dict]:
    learning_rates = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0]
    l2s = [0.0, 1e-4, 1e-3, 1e-2, 0.03, 0.1, 0.3, 1.0]
    batch_sizes = [8, 32]
    points = itertools.product(learning_rates, l2s, batch_sizes)
    configs = [{"learning_rate": lr, "l2": l2, "batch_size": bs} for lr, l2, bs in points]
    return configs[:trials]


def key(result: dict) -> tuple:
    """Best accuracy first; ties go to the smaller learning rate, then the smaller penalty."""
    return (-result["accuracy"], result["learning_rate"], result["l2"], result["batch_size"])


def check(condition: bool, message: str) -> None:
    """Fail the run when a result is wrong (``assert`` would vanish under ``python -O``)."""
    if not condition:
        raise AssertionError(f"hyperparameter_sweep: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description="a GPU hyperparameter sweep")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()

    ray.init(num_cpus=4, num_gpus=4)
    start_s = time.monotonic()
    configs = grid(args.trials)
    gpus = ray.cluster_resources().get("GPU", 0)
    print(f"sweeping {len(configs)} configurations on {gpus:g} GPUs")
    pending = {trial.remote(args.seed, config, args.epochs): config for config in configs}
    results = []
    halfway_reported = False
    while pending:
        ready, _rest = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            pending.pop(ref)
            results.append(ray.get(ref))
        if not halfway_reported and len(results) >= len(configs) // 2:
            halfway_reported = True
            best = min(results, key=key)
            print(f"{len(results)} trials done at t={time.monotonic() - start_s:.0f}s, best so far: "
                  f"accuracy {best['accuracy']:.3f}")
    elapsed_s = time.monotonic() - start_s

    best = min(results, key=key)
    print(f"{len(results)} trials in {elapsed_s:.0f}s on {len({r['node'] for r in results})} nodes; best: "
          f"learning_rate={best['learning_rate']} l2={best['l2']} batch_size={best['batch_size']} "
          f"accuracy {best['accuracy']:.3f}")
    check(all(len(r["gpus"]) == 1 for r in results), "a trial ran without exactly one GPU")
    expected = {
        (c["learning_rate"], c["l2"], c["batch_size"]): train(
            args.seed, c["learning_rate"], c["l2"], c["batch_size"], args.epochs
        )
        for c in configs
    }
    got = {(r["learning_rate"], r["l2"], r["batch_size"]): r["accuracy"] for r in results}
    check(got == expected, "some trial's accuracy differs from the sequential run of the same trial")
    expected_best = min(({**c, "accuracy": expected[(c["learning_rate"], c["l2"], c["batch_size"])]} for c in configs), key=key)
    check(key(best) == key(expected_best), f"best trial {best} is not the sequential best {expected_best}")
    check(best["accuracy"] > 0.75, f"the best accuracy {best['accuracy']} is too low: training is broken")
    print("every trial equals its sequential run; the best trial is the same")
    ray.shutdown()


if __name__ == "__main__":
    main()
