"""What it costs to switch between the simulator's loop and user code.

Usage (from the repository root):

    python bench/greenlet_switch.py            # default repetitions
    python bench/greenlet_switch.py --quick    # fewer, for a smoke run

Prints, each as the best of several rounds, in microseconds per operation:

- bare greenlet switch: one round trip loop -> greenlet -> loop
- bare greenlet start+finish: create a greenlet, run a trivial function in it
- unit start+finish: ``Runner.start`` of a trivial `UserCode` (pooled greenlet,
  random states swapped in and out, outcome built)
- the same with one shared `RandomSlot` (an actor's methods): no per-unit
  seeding of the random states, which is the largest part of a start
- unit block+resume: ``block()`` inside a unit and ``Runner.resume`` back
- the same two with the portable random-state swap (getstate/setstate)
- threading baton: a round trip between two threads through a Condition,
  the alternative to greenlets, as the baseline

and the ratios between them.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import greenlet  # noqa: E402

from detray.sim import virtual_env  # noqa: E402
from detray.sim.usercode import Runner, UserCode, block  # noqa: E402
from detray.sim.virtual_env import RandomSlot  # noqa: E402

ROUNDS = 5


def best_us(run: Callable[[int], None], count: int) -> float:
    """Best per-operation time in microseconds over ROUNDS rounds of ``count`` operations."""
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        run(count)
        best = min(best, time.perf_counter() - start)
    return best / count * 1e6


def bare_switch(count: int) -> None:
    loop = greenlet.getcurrent()

    def body(value: int) -> None:
        while True:
            value = loop.switch(value)

    glet = greenlet.greenlet(body)
    switch = glet.switch
    for i in range(count):
        switch(i)
    glet.throw(greenlet.GreenletExit())


def bare_start_finish(count: int) -> None:
    def trivial() -> int:
        return 1

    make = greenlet.greenlet
    for _ in range(count):
        make(trivial).switch()


def trivial() -> int:
    return 1


def unit_start_finish(count: int) -> None:
    with Runner(clock=lambda: 0.0, seed=0) as runner:
        start = runner.start
        for i in range(count):
            start(UserCode(trivial, key=("bench", i)))


def unit_start_finish_shared_slot(count: int) -> None:
    slot = RandomSlot(0)  # one process's state for all: no per-unit seeding
    with Runner(clock=lambda: 0.0, seed=0) as runner:
        start = runner.start
        for _ in range(count):
            start(UserCode(trivial, random_slot=slot))


def blocker(count: int) -> None:
    for _ in range(count):
        block(None)


def unit_block_resume(count: int) -> None:
    with Runner(clock=lambda: 0.0, seed=0) as runner:
        unit = UserCode(blocker, (count,), key=("bench",))
        runner.start(unit)
        resume = runner.resume
        for _ in range(count):
            resume(unit)


def thread_baton(count: int) -> None:
    cond = threading.Condition()
    turn = ["loop"]

    def worker() -> None:
        for _ in range(count):
            with cond:
                while turn[0] != "worker":
                    cond.wait()
                turn[0] = "loop"
                cond.notify()

    thread = threading.Thread(target=worker)
    thread.start()
    for _ in range(count):
        with cond:
            turn[0] = "worker"
            cond.notify()
            while turn[0] != "loop":
                cond.wait()
    thread.join()


RATIOS = (
    ("unit start+finish", "bare switch"),
    ("unit start+finish", "bare start+finish"),
    ("unit start+finish, shared slot", "bare switch"),
    ("unit block+resume", "bare switch"),
    ("unit start+finish (api swap)", "unit start+finish"),
    ("unit block+resume (api swap)", "unit block+resume"),
    ("threading baton", "unit block+resume"),
    ("threading baton", "bare switch"),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    count = 2_000 if parser.parse_args().quick else 20_000
    slow_count = max(count // 20, 100)

    figures = {
        "bare switch": best_us(bare_switch, count),
        "bare start+finish": best_us(bare_start_finish, count),
        "unit start+finish": best_us(unit_start_finish, count),
        "unit start+finish, shared slot": best_us(unit_start_finish_shared_slot, count),
        "unit block+resume": best_us(unit_block_resume, count),
    }
    virtual_env.use_api_swap_for_tests(True)
    try:
        figures["unit start+finish (api swap)"] = best_us(unit_start_finish, slow_count)
        figures["unit block+resume (api swap)"] = best_us(unit_block_resume, slow_count)
    finally:
        virtual_env.use_api_swap_for_tests(False)
    figures["threading baton"] = best_us(thread_baton, max(count // 4, 100))

    print(
        f"Python {sys.version.split()[0]}, greenlet {greenlet.__version__}, "
        f"random swap: {virtual_env.swap_kind()}; best of {ROUNDS} rounds, us per operation"
    )
    for name, us in figures.items():
        print(f"  {name:34s} {us:9.2f} us")
    print("ratios (difference):")
    for slow, fast in RATIOS:
        a, b = figures[slow], figures[fast]
        print(f"  {slow:30s} / {fast:20s} {a / b:7.2f}x  ({a - b:+.2f} us)")


if __name__ == "__main__":
    main()
