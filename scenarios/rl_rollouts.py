"""Asynchronous RL: CPU rollout actors feed a GPU learner, in a ``ray.wait`` loop.

Ordinary Ray code (``import ray`` in place of ``import detray as ray`` runs it
on Ray). The environment is a multi-armed bandit with noisy rewards; the
policy is a softmax over per-arm logits. Each ``RolloutWorker`` actor samples
episodes with the policy weights it is handed and returns a batch; the
``Learner`` actor (one GPU) takes a REINFORCE step per batch and hands back new
weights. The driver keeps one rollout in flight per worker: whichever batch
comes back first (``ray.wait``) goes to the learner, and that worker starts
again with the newest weights, so the learner never waits for the slowest
worker, and batches are a few updates stale (off-policy, as in IMPALA/APPO).

Rollout workers restart when their node dies (``max_restarts``, and
``max_task_retries`` for the rollout in flight). The program fails
(``AssertionError``) unless every batch was learnt from exactly once, every
worker contributed, and the policy found the best arm.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import numpy as np

import detray as ray

ARM_MEANS = np.array([0.1, 0.5, 0.2, 0.8, 0.3, 0.6])
BEST_ARM = int(np.argmax(ARM_MEANS))


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max())
    return shifted / shifted.sum()


@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=-1)
class RolloutWorker:
    def __init__(self, index: int, seed: int, episodes: int) -> None:
        self.index = index
        self.seed = seed
        self.episodes = episodes

    def sample(self, weights: tuple[int, np.ndarray], batch: int) -> dict:
        """``episodes`` one-step episodes with the given policy; a batch for the learner.
        Each batch has its own random stream, so a retried rollout returns the same batch."""
        version, logits = weights
        rng = np.random.default_rng([self.seed, self.index, batch])
        actions = rng.choice(len(logits), size=self.episodes, p=softmax(logits))
        rewards = rng.normal(ARM_MEANS[actions], 0.1)
        return {"worker": self.index, "batch": batch, "policy_version": version,
                "actions": actions, "rewards": rewards}


@ray.remote(num_gpus=1)
class Learner:
    def __init__(self, arms: int, learning_rate: float) -> None:
        self.logits = np.zeros(arms)
        self.version = 0
        self.learning_rate = learning_rate
        self.seen: list[tuple[int, int]] = []
        self.gpus = [int(i) for i in ray.get_gpu_ids()]

    def update(self, batch: dict) -> tuple[int, np.ndarray]:
        """One REINFORCE step (baseline: the batch's mean reward); the new weights."""
        probs = softmax(self.logits)
        advantages = batch["rewards"] - batch["rewards"].mean()
        grad = np.zeros_like(self.logits)
        for action, advantage in zip(batch["actions"], advantages):
            one_hot = np.zeros_like(self.logits)
            one_hot[action] = 1.0
            grad += advantage * (one_hot - probs)
        self.logits = self.logits + self.learning_rate * grad / len(advantages)
        self.version += 1
        self.seen.append((batch["worker"], batch["batch"]))
        return self.version, self.logits

    def report(self) -> dict:
        return {"gpus": self.gpus, "version": self.version, "seen": self.seen, "logits": self.logits}


def check(condition: bool, message: str) -> None:
    """Fail the run when a result is wrong (``assert`` would vanish under ``python -O``)."""
    if not condition:
        raise AssertionError(f"rl_rollouts: {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description="rollout actors feeding a GPU learner")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--updates", type=int, default=100)
    parser.add_argument("--episodes", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()

    ray.init(num_cpus=args.workers + 1, num_gpus=1)
    start_s = time.monotonic()
    learner = Learner.remote(len(ARM_MEANS), args.learning_rate)
    workers = [RolloutWorker.remote(i, args.seed, args.episodes) for i in range(args.workers)]
    weights = ray.put((0, np.zeros(len(ARM_MEANS))))
    next_batch = [0] * args.workers
    in_flight = {}
    for i, worker in enumerate(workers):
        in_flight[worker.sample.remote(weights, next_batch[i])] = i
    submitted = args.workers
    staleness = []
    updates = 0
    while in_flight:
        [ready], _rest = ray.wait(list(in_flight), num_returns=1)
        i = in_flight.pop(ready)
        batch = ray.get(ready)
        if updates < args.updates:
            weights = learner.update.remote(ready)
            updates += 1
            staleness.append(updates - 1 - batch["policy_version"])
        if submitted < args.updates:
            next_batch[i] += 1
            in_flight[workers[i].sample.remote(weights, next_batch[i])] = i
            submitted += 1
    report = ray.get(learner.report.remote())
    elapsed_s = time.monotonic() - start_s

    probs = softmax(report["logits"])
    per_worker = Counter(worker for worker, _batch in report["seen"])
    print(f"learner on GPU {report['gpus']}: {report['version']} updates in {elapsed_s:.2f}s from "
          f"{args.workers} rollout workers (batches per worker: {dict(sorted(per_worker.items()))})")
    print(f"batches were {np.mean(staleness):.1f} updates stale on average (max {max(staleness)}); "
          f"policy picks arm {int(np.argmax(probs))} with p={probs.max():.2f} (best arm: {BEST_ARM})")
    check(report["gpus"] and len(report["gpus"]) == 1, f"the learner holds GPUs {report['gpus']}, expected one")
    check(report["version"] == args.updates, f"the learner made {report['version']} updates, expected {args.updates}")
    check(len(set(report["seen"])) == len(report["seen"]), "the learner saw a batch twice")
    check(len(per_worker) == args.workers, f"only workers {sorted(per_worker)} contributed")
    check(int(np.argmax(probs)) == BEST_ARM and probs.max() > 0.5, f"the policy did not find the best arm: {probs}")
    print("every batch learnt from once; the policy found the best arm")
    ray.shutdown()


if __name__ == "__main__":
    main()
