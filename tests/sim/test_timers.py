"""Timers pushed onto SimPy's heap fire where ``env.timeout`` events would, in the same order."""

from __future__ import annotations

import random
from heapq import heappush

import simpy

from detray.sim.timers import NORMAL, Timer, heap_of


def _fire_order(use_timers: bool, seed: int) -> list[tuple[float, int]]:
    """Schedule a random mix of delays (many ties), some from inside callbacks; record the firing order."""
    rng = random.Random(seed)
    env = simpy.Environment()
    heap, ids = heap_of(env)
    fired: list[tuple[float, int]] = []
    delays = [0.0, 0.0, 0.001, 0.002, 0.001 + 0.002, 0.003]

    def on_fire(label: int) -> None:
        fired.append((env.now, label))
        if label < 300:  # chains: a callback schedules more, at ties with pending ones
            schedule(rng.choice(delays), label + 100)

    def fire_timer(timer: Timer) -> None:
        on_fire(timer.target)

    callbacks = (fire_timer,)

    def schedule(delay_s: float, label: int) -> None:
        if use_timers:
            heappush(heap, (env._now + delay_s, NORMAL, next(ids), Timer(callbacks, label)))
        else:
            env.timeout(delay_s).callbacks.append(lambda _event: on_fire(label))

    for label in range(60):
        schedule(rng.choice(delays), label)
    env.run()
    return fired


def test_pushed_timers_fire_like_timeouts() -> None:
    for seed in range(20):
        assert _fire_order(True, seed) == _fire_order(False, seed)
