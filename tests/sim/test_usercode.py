"""Running user code as greenlets: outcomes, virtual time, per-unit randomness,
labelled output, kills, shutdown and determinism."""

from __future__ import annotations

import contextvars
import gc
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import greenlet
import numpy as np
import pytest
import simpy

from detray.sim import streams, virtual_env
from detray.sim.usercode import (
    Blocked,
    Done,
    Raised,
    Runner,
    Sleep,
    UnitState,
    UserCode,
    block,
    current_context,
)
from detray.sim.virtual_env import EPOCH_NS, EPOCH_S, RandomSlot, Sandbox, Sink

ROOT = Path(__file__).resolve().parents[2]


class Loop:
    """What the simulator does with units, reduced to SimPy and `Sleep`."""

    def __init__(self, seed: int = 0) -> None:
        self.env = simpy.Environment()
        self.runner = Runner(clock=lambda: self.env.now, seed=seed)
        self.outcomes: dict[str, Any] = {}

    def spawn(self, name: str, unit: UserCode, delay_s: float = 0.0) -> None:
        self.env.process(self._drive(name, unit, delay_s))

    def _drive(self, name: str, unit: UserCode, delay_s: float) -> Iterator[simpy.Event]:
        if delay_s:
            yield self.env.timeout(delay_s)
        outcome = self.runner.start(unit)
        while isinstance(outcome, Blocked):
            assert isinstance(outcome.request, Sleep), outcome
            yield self.env.timeout(outcome.request.duration_s)
            outcome = self.runner.resume(unit)
        self.outcomes[name] = outcome

    def run(self) -> dict[str, Any]:
        self.env.run()
        return {name: o.value if isinstance(o, Done) else o for name, o in self.outcomes.items()}


@pytest.fixture
def loop() -> Iterator[Loop]:
    made = Loop()
    yield made
    made.runner.close()
    assert not virtual_env.installed()


def lines_sink() -> tuple[list[tuple[str, str]], Sink]:
    lines: list[tuple[str, str]] = []

    def sink(unit: Sandbox, stream: str, text: str) -> None:
        assert isinstance(unit, UserCode) and text.startswith(f"({unit.label}) ")
        lines.append((stream, text))

    return lines, sink


# -- outcomes ----------------------------------------------------------------


def test_done_value_and_context(loop: Loop) -> None:
    unit = UserCode(lambda a, b=0: (a + b, current_context()), (1,), {"b": 2}, context="ctx")
    outcome = loop.runner.start(unit)
    assert outcome == Done((3, "ctx"))
    assert unit.state is UnitState.FINISHED
    assert current_context() is None


def test_exception_becomes_raised_with_traceback(loop: Loop) -> None:
    def inner() -> None:
        raise KeyError("missing thing")

    def task() -> None:
        try:
            inner()
        except KeyError as exc:
            raise ValueError("task failed") from exc

    outcome = loop.runner.start(UserCode(task))
    assert isinstance(outcome, Raised)
    assert isinstance(outcome.exc, ValueError)
    text = outcome.traceback
    assert "KeyError: 'missing thing'" in text
    assert "ValueError: task failed" in text
    assert "in inner" in text and "in task" in text
    assert "_execute" not in text  # the runner's own frame is not the user's business


@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), greenlet.GreenletExit()])
def test_base_exceptions_become_raised_too(loop: Loop, exc: BaseException) -> None:
    def task() -> None:
        raise exc

    outcome = loop.runner.start(UserCode(task))
    assert isinstance(outcome, Raised) and outcome.exc is exc


def test_block_resume_and_throw(loop: Loop) -> None:
    def task() -> list[Any]:
        got = [block("first")]
        try:
            block("second")
        except LookupError as exc:
            got.append(repr(exc))
        return got

    unit = UserCode(task)
    runner = loop.runner
    assert runner.start(unit) == Blocked("first")
    assert unit.state is UnitState.BLOCKED
    assert runner.resume(unit, 42) == Blocked("second")
    assert runner.throw(unit, LookupError("gone")) == Done([42, "LookupError('gone')"])


def test_block_outside_user_code_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="outside simulated user code"):
        block("x")


def test_user_code_cannot_drive_the_runner(loop: Loop) -> None:
    other = UserCode(lambda: 1)
    outcome = loop.runner.start(UserCode(lambda: loop.runner.start(other)))
    assert isinstance(outcome, Raised) and isinstance(outcome.exc, RuntimeError)
    assert other.state is UnitState.NEW


def test_misuse_of_states_is_refused(loop: Loop) -> None:
    unit = UserCode(lambda: 1)
    with pytest.raises(ValueError, match="not blocked"):
        loop.runner.resume(unit)
    loop.runner.start(unit)
    with pytest.raises(ValueError, match="already started"):
        loop.runner.start(unit)


def test_contextvars_do_not_leak_between_units(loop: Loop) -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="fresh")

    def first() -> str:
        var.set("set by first")
        return var.get()

    assert loop.runner.start(UserCode(first)) == Done("set by first")
    assert loop.runner.start(UserCode(var.get)) == Done("fresh")  # same pooled greenlet
    assert var.get() == "fresh"


# -- time --------------------------------------------------------------------


def test_sleep_advances_only_virtual_time(loop: Loop) -> None:
    def task() -> dict[str, Any]:
        seen = {"time0": time.time(), "mono0": time.monotonic(), "perf0": time.perf_counter()}
        time.sleep(3600)
        seen.update(
            time1=time.time(),
            mono1=time.monotonic(),
            perf1=time.perf_counter(),
            time_ns=time.time_ns(),
            mono_ns=time.monotonic_ns(),
            perf_ns=time.perf_counter_ns(),
        )
        time.sleep(0.25)
        seen["time2"] = time.time()
        return seen

    loop.spawn("task", UserCode(task), delay_s=10)
    real_start = time.perf_counter()
    seen = loop.run()["task"]
    assert time.perf_counter() - real_start < 1.0
    assert loop.env.now == 10 + 3600 + 0.25
    assert seen["time0"] == EPOCH_S + 10
    assert seen["mono0"] == seen["perf0"] == 10
    assert seen["time1"] == EPOCH_S + 3610
    assert seen["mono1"] == seen["perf1"] == 3610
    assert seen["time_ns"] == EPOCH_NS + 3610 * 10**9
    assert seen["mono_ns"] == seen["perf_ns"] == 3610 * 10**9
    assert seen["time2"] == EPOCH_S + 3610.25


def test_outside_user_code_time_is_real(loop: Loop) -> None:
    assert virtual_env.installed()
    assert time.time is not virtual_env._real["time"]  # patched...
    assert abs(time.time() - virtual_env._real["time"]()) < 5  # ...but real outside
    assert time.time() > EPOCH_S + 10**7
    start = time.perf_counter()
    time.sleep(0.02)
    assert time.perf_counter() - start >= 0.02


def test_uninstall_restores_the_originals() -> None:
    originals = {name: getattr(time, name) for name in ("time", "sleep", "perf_counter_ns")}
    stdout = sys.stdout
    virtual_env.install()
    virtual_env.install()  # nested: counted
    virtual_env.uninstall()
    assert virtual_env.installed() and time.time is not originals["time"]
    virtual_env.uninstall()
    virtual_env.uninstall()  # extra: no-op
    assert not virtual_env.installed()
    assert {name: getattr(time, name) for name in originals} == originals
    assert sys.stdout is stdout


def test_user_threads_see_real_time(loop: Loop) -> None:
    def task() -> tuple[float, float]:
        seen: list[float] = []
        thread = threading.Thread(target=lambda: seen.append(time.time()))
        thread.start()
        thread.join()
        return time.time(), seen[0]

    inside, in_thread = loop.runner.start(UserCode(task)).value  # type: ignore[union-attr]
    assert inside == EPOCH_S
    assert in_thread > EPOCH_S + 10**7


def test_asyncio_in_user_code_keeps_real_time(loop: Loop) -> None:
    import asyncio

    async def nap() -> float:
        await asyncio.sleep(0.01)
        return time.time()

    def on_alarm(signum: int, frame: Any) -> None:
        raise TimeoutError("asyncio.sleep never returned: the loop's clock is frozen")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(10)
    try:
        outcome = loop.runner.start(UserCode(lambda: asyncio.run(nap())))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert outcome == Done(EPOCH_S)  # finished (no frozen asyncio clock) and time.time virtual


@pytest.mark.parametrize(
    ("arg", "error"), [(-1, ValueError), (float("nan"), ValueError), ("1", TypeError)]
)
def test_bad_sleep_arguments_fail_like_the_real_sleep(
    loop: Loop, arg: Any, error: type[Exception]
) -> None:
    outcome = loop.runner.start(UserCode(time.sleep, (arg,)))
    assert isinstance(outcome, Raised) and isinstance(outcome.exc, error)


# -- randomness --------------------------------------------------------------


def draw_four() -> list[float]:
    return [random.random(), random.gauss(0, 1), float(np.random.rand()), float(np.random.randn())]


def draw_twice() -> list[float]:
    """Draws from both global generators, blocks (others may run), draws again."""
    first = draw_four()
    time.sleep(1)
    return first + draw_four()


def noisy() -> None:
    """Draws a lot, reseeds, leaves gaussian caches behind, in the middle of draw_twice."""
    time.sleep(0.5)
    random.seed(99)
    np.random.seed(99)
    [random.random() for _ in range(1000)]
    random.gauss(0, 1)  # leaves random's gauss_next
    np.random.randn(3)  # odd: leaves numpy's cached gaussian
    time.sleep(5)
    np.random.randn(1)


def test_random_draws_do_not_depend_on_interleaving() -> None:
    alone = Loop(seed=7)
    alone.spawn("a", UserCode(draw_twice, key=("a",)))
    expected = alone.run()["a"]
    alone.runner.close()
    with Runner(clock=lambda: 0.0, seed=7) as runner:  # the same draws without blocking
        unblocked = runner.start(UserCode(lambda: draw_four() + draw_four(), key=("a",)))
    assert unblocked == Done(expected)

    crowded = Loop(seed=7)
    crowded.spawn("noisy-1", UserCode(noisy, key=("n", 1)))
    crowded.spawn("a", UserCode(draw_twice, key=("a",)))
    crowded.spawn("noisy-2", UserCode(noisy, key=("n", 2)), delay_s=0.5)
    crowded.spawn("b", UserCode(draw_twice, key=("b",)))

    # The loop itself also draws between switches (it should not, but must not matter).
    def loop_noise() -> Iterator[simpy.Event]:
        for _ in range(4):
            random.random()
            np.random.rand()
            yield crowded.env.timeout(0.3)

    crowded.env.process(loop_noise())
    got = crowded.run()
    crowded.runner.close()
    assert got["a"] == expected
    assert got["b"] != expected  # another key, other numbers


def test_outside_random_state_is_untouched() -> None:
    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), float(np.random.rand()))
    random.seed(5)
    np.random.seed(5)
    with Runner(clock=lambda: 0.0, seed=0) as runner:
        runner.start(UserCode(lambda: [random.random(), np.random.rand(), random.seed(1)]))
        unit = UserCode(draw_twice)
        runner.start(unit)
        assert (random.random(), float(np.random.rand())) == expected


def test_same_key_same_numbers_across_runners_and_seeds() -> None:
    def first_draws(seed: int, key: tuple[Any, ...]) -> Any:
        with Runner(clock=lambda: 0.0, seed=seed) as runner:
            return runner.start(
                UserCode(lambda: (random.random(), float(np.random.rand())), key=key)
            ).value  # type: ignore[union-attr]

    assert first_draws(0, ("t", 1)) == first_draws(0, ("t", 1))
    assert first_draws(0, ("t", 1)) != first_draws(0, ("t", 2))
    assert first_draws(0, ("t", 1)) != first_draws(1, ("t", 1))


def test_a_shared_slot_is_one_process() -> None:
    slot = RandomSlot(123)
    with Runner(clock=lambda: 0.0, seed=0) as runner:
        runner.start(UserCode(lambda: random.seed(42), random_slot=slot))
        got = runner.start(UserCode(random.random, random_slot=slot))
    assert isinstance(got, Done)
    random.seed(42)
    assert got.value == random.random()


def test_memory_and_api_swaps_give_the_same_numbers() -> None:
    def run() -> Any:
        loop = Loop(seed=3)
        loop.spawn("noisy", UserCode(noisy, key=("n",)))
        loop.spawn("a", UserCode(draw_twice, key=("a",)))
        try:
            return loop.run()["a"]
        finally:
            loop.runner.close()

    kind = virtual_env.swap_kind()
    fast = run()
    virtual_env.use_api_swap_for_tests(True)
    try:
        assert virtual_env.swap_kind() == "api"
        slow = run()
    finally:
        virtual_env.use_api_swap_for_tests(False)
    assert virtual_env.swap_kind() == kind
    assert fast == slow


def golden_draws() -> list[float]:
    return [
        random.random(),
        random.getrandbits(32),
        random.gauss(0, 1),
        float(np.random.rand()),
        int(np.random.randint(0, 2**31)),
        float(np.random.randn()),
    ]


def test_initial_random_states_are_pinned() -> None:
    # The numbers a unit's first draws give: any change to how a state is built changes every run.
    with Runner(clock=lambda: 0.0, seed=11) as runner:
        keyed = runner.start(UserCode(golden_draws, key=("task-1", 2)))
        big = runner.start(UserCode(golden_draws, random_slot=RandomSlot(2**255 + 12345)))
        negative = runner.start(UserCode(golden_draws, random_slot=RandomSlot(-3)))
    assert keyed == Done([0.778881559387402, 1852559776, 1.242438536246078, 0.1948908806403008, 1095548082, -0.009933005447597731])
    assert big == Done([0.4564040864538831, 85662304, -1.8186160157046865, 0.00149650406315871, 2127784762, -0.16501944872636756])
    assert negative == Done([0.21748999664065471, 922920557, -0.3765690390099508, 0.7257571342259622, 922721344, 0.24654666397767827])


def test_the_expander_keyed_in_memory_matches_its_state_setter(monkeypatch: pytest.MonkeyPatch) -> None:
    assert virtual_env._expander_key is not None  # found here (CPython, numpy as pinned)
    seeds = [0, 1, -1, 255, 256, 2**127, 2**255 + 12345, 2**256 - 1, streams.stream_seed(3, "user_random", "t", 1)]
    in_memory = [virtual_env._initial_words(seed).copy() for seed in seeds]
    monkeypatch.setattr(virtual_env, "_expander_key", None)
    through_api = [virtual_env._initial_words(seed).copy() for seed in seeds]
    assert all(np.array_equal(a, b) for a, b in zip(in_memory, through_api))


def test_a_nested_unit_on_a_running_units_slot_starts_from_its_initial_state() -> None:
    slot = RandomSlot(77)

    def outer_task() -> tuple[Any, Any]:
        mine = random.random()
        with Runner(clock=lambda: 0.0, seed=0) as inner:
            nested = inner.start(UserCode(random.random, random_slot=slot))
        return mine, nested

    with Runner(clock=lambda: 0.0, seed=0) as runner:
        got = runner.start(UserCode(outer_task, random_slot=slot))
        after = runner.start(UserCode(random.random, random_slot=slot))
    assert isinstance(got, Done) and isinstance(after, Done)
    mine, nested = got.value
    assert nested == Done(mine)  # the slot's saved state was still its initial one
    assert after.value != mine  # the slot moved on past that draw


def test_the_memory_swap_is_found_here() -> None:
    # CPython and numpy as pinned: the fast path must be in use, or the
    # simulator is 100x slower per switch without anyone noticing.
    assert virtual_env.swap_kind() == "memory"


# -- output ------------------------------------------------------------------


def test_print_inside_is_prefixed_and_outside_is_not(capsys: pytest.CaptureFixture[str]) -> None:
    lines, sink = lines_sink()

    def task() -> None:
        print("hello", 1)
        print("two\nlines", file=sys.stderr)
        sys.stdout.write("partial ")
        time.sleep(1)
        print("line")
        sys.stdout.write("no newline at the end")

    with Runner(clock=lambda: 0.0, seed=0, sink=sink) as runner:
        print("outside")
        unit = UserCode(task, label="train_step pid=node-00003/w00001")
        runner.start(unit)
        print("outside, while the unit is blocked")
        runner.resume(unit)
        assert sys.stdout.encoding and not sys.stdout.closed  # attributes pass through

    prefix = "(train_step pid=node-00003/w00001) "
    assert lines == [
        ("stdout", prefix + "hello 1\n"),
        ("stderr", prefix + "two\n"),
        ("stderr", prefix + "lines\n"),
        ("stdout", prefix + "partial line\n"),
        ("stdout", prefix + "no newline at the end\n"),
    ]
    assert capsys.readouterr().out == "outside\noutside, while the unit is blocked\n"


def test_a_sink_that_prints_reaches_the_real_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    def sink(unit: Sandbox, stream: str, text: str) -> None:
        print(f"[{time.time() - EPOCH_S:g}s] {text}", end="")  # no loop back into the proxy

    with Runner(clock=lambda: 2.5, seed=0, sink=sink) as runner:
        runner.start(UserCode(print, ("hi",), label="f"))
    assert capsys.readouterr().out == "[2.5s] (f) hi\n"


def test_default_sink_is_the_real_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with Runner(clock=lambda: 0.0, seed=0) as runner:
        runner.start(UserCode(print, ("hi",), label="f pid=1"))
        runner.start(UserCode(print, ("no label",)))
    assert capsys.readouterr().out == "(f pid=1) hi\nno label\n"


# -- nesting -----------------------------------------------------------------


def test_a_runner_nested_in_a_unit_keeps_both_worlds_apart() -> None:
    def inner_task() -> tuple[float, float]:
        random.random()  # while the outer unit is suspended mid-way
        time.sleep(2)
        return time.monotonic(), random.random()

    def outer_task() -> dict[str, Any]:
        inner_now = [100.0]
        with Runner(clock=lambda: inner_now[0], seed=5) as inner:
            unit = UserCode(inner_task, key=("inner",))
            request = inner.start(unit)
            assert isinstance(request, Blocked) and request.request == Sleep(2.0)
            mine = random.random()
            time.sleep(1)  # the outer unit blocks while the inner one is suspended
            inner_now[0] += 2
            inner_done = inner.resume(unit)
        assert isinstance(inner_done, Done)
        return {"inner": inner_done.value, "mine": mine, "now": time.monotonic()}

    def run(with_nested: bool) -> Any:
        now = [7.0]
        with Runner(clock=lambda: now[0], seed=1) as outer:
            if not with_nested:
                return outer.start(UserCode(lambda: random.random(), key=("outer",)))
            unit = UserCode(outer_task, key=("outer",))
            assert outer.start(unit) == Blocked(Sleep(1.0))
            now[0] += 1
            return outer.resume(unit)

    nested = run(with_nested=True)
    assert isinstance(nested, Done), nested
    assert nested.value["inner"][0] == 102.0 and nested.value["now"] == 8.0
    assert nested.value["mine"] == run(with_nested=False).value  # the inner unit drew apart
    assert not virtual_env.installed()


# -- kill and shutdown -------------------------------------------------------


class WorkerDied(Exception):
    pass


def test_kill_raises_at_the_pending_block_and_every_later_one(loop: Loop) -> None:
    events: list[str] = []

    def task() -> str:
        try:
            block("get")
        except WorkerDied:
            events.append("caught")
        try:
            block("cleanup get")  # the worker is gone: raises at once
        except WorkerDied:
            events.append("caught again")
        try:
            time.sleep(1)
        finally:
            events.append("finally")
        return "unreachable"

    unit = UserCode(task)
    loop.runner.start(unit)
    died = WorkerDied("node-00003 died")
    outcome = loop.runner.kill(unit, died)
    assert isinstance(outcome, Raised) and outcome.exc is died
    assert events == ["caught", "caught again", "finally"]
    assert unit.state is UnitState.FINISHED
    assert loop.runner.kill(unit, died) is None  # late kill: nothing to do
    assert loop.runner.suspended == []


def test_kill_before_start_runs_nothing(loop: Loop) -> None:
    ran: list[int] = []
    unit = UserCode(lambda: ran.append(1))
    outcome = loop.runner.kill(unit, WorkerDied())
    assert isinstance(outcome, Raised) and isinstance(outcome.exc, WorkerDied)
    assert ran == [] and unit.state is UnitState.FINISHED


def live_greenlets() -> list[greenlet.greenlet]:
    gc.collect()
    main = greenlet.getcurrent()
    return [
        g
        for g in gc.get_objects()
        if isinstance(g, greenlet.greenlet) and g is not main and not g.dead
    ]


def test_close_ends_every_greenlet() -> None:
    before = live_greenlets()
    cleanups: list[str] = []

    def waits_forever(name: str) -> None:
        try:
            block("never resumed")
        except greenlet.GreenletExit:
            cleanups.append(name)
            block("tries to block again")  # raises GreenletExit again

    runner = Runner(clock=lambda: 0.0, seed=0)
    for i in range(5):
        runner.start(UserCode(waits_forever, (f"u{i}",)))
    for _ in range(3):
        runner.start(UserCode(lambda: None))  # leaves idle pooled greenlets
    assert len(runner.suspended) == 5
    runner.close()
    runner.close()  # idempotent
    assert cleanups == [f"u{i}" for i in range(5)]  # in start order
    assert live_greenlets() == before
    assert not virtual_env.installed()
    with pytest.raises(RuntimeError, match="after close"):
        runner.start(UserCode(lambda: None))


def test_an_adopted_greenlet_is_the_unit_until_released() -> None:
    # The simulator's driver: the code that called init keeps running in its own
    # greenlet, as a unit of a loop that runs in another greenlet.
    main = greenlet.getcurrent()
    seen: list[Any] = []

    def loop_main() -> str:
        clock = [5.0]
        runner = Runner(clock=lambda: clock[0], seed=0)
        unit = UserCode(lambda: None, context="driver", key=("driver",))
        runner.adopt(unit, main)
        assert runner.suspended == [unit]
        outcome = runner.resume(unit, "first resume")
        assert outcome == Blocked("sleepy")
        clock[0] = 9.0
        outcome = runner.resume(unit, "second resume")
        assert outcome == Blocked("done")
        runner.release(unit)
        assert unit.state is UnitState.FINISHED and runner.suspended == []
        runner.close()
        return "loop ended"

    loop = greenlet.greenlet(loop_main, parent=main)
    seen.append(loop.switch())  # the loop resumes us as the adopted unit
    seen.append((current_context(), time.monotonic()))
    seen.append(block("sleepy"))
    seen.append(time.monotonic())
    seen.append(block("done"))  # released, then the loop greenlet ends and returns here
    assert seen == ["first resume", ("driver", 5.0), "second resume", 9.0, "loop ended"]
    assert current_context() is None and not virtual_env.installed()


def test_adopt_refuses_the_loop_and_started_units() -> None:
    with Runner(clock=lambda: 0.0, seed=0) as runner:
        with pytest.raises(ValueError, match="greenlet"):
            runner.adopt(UserCode(lambda: None), greenlet.getcurrent())
        unit = UserCode(lambda: 1)
        runner.start(unit)
        other = greenlet.greenlet(lambda: None)
        with pytest.raises(ValueError, match="already started"):
            runner.adopt(unit, other)


def test_pool_overflow_ends_greenlets() -> None:
    before = live_greenlets()
    with Runner(clock=lambda: 0.0, seed=0, idle_greenlets_max=2) as runner:
        units = [UserCode(block, ("x",)) for _ in range(5)]
        for unit in units:
            runner.start(unit)
        for unit in units:
            runner.resume(unit)
        assert len(live_greenlets()) == len(before) + 2
    assert live_greenlets() == before


# -- determinism -------------------------------------------------------------


_SCENARIO = r'''
import json, random, sys, time
import numpy as np
import simpy
from detray.sim.usercode import Blocked, Runner, UserCode

def worker(name, naps):
    total = 0.0
    for nap in naps:
        time.sleep(nap * random.random())
        total += np.random.rand()
        print(name, "woke at", time.time())
    return {"name": name, "t": time.monotonic(), "total": total, "r": random.random()}

def run():
    env = simpy.Environment()
    lines = []
    runner = Runner(
        clock=lambda: env.now, seed=11, sink=lambda u, s, t: lines.append((env.now, s, t))
    )
    results = []

    def drive(unit):
        outcome = runner.start(unit)
        while isinstance(outcome, Blocked):
            yield env.timeout(outcome.request.duration_s)
            outcome = runner.resume(unit)
        results.append((env.now, outcome.value))

    names = {f"w{i}": [1 + i % 3, 2, 0.5 * i] for i in range(8)}
    for name, naps in names.items():
        env.process(drive(UserCode(worker, (name, naps), label=name, key=(name,))))
    env.run()
    runner.close()
    return {"results": results, "lines": lines}
'''


def _scenario_in_this_process() -> Any:
    namespace: dict[str, Any] = {}
    exec(compile(_SCENARIO, "<scenario>", "exec"), namespace)
    return json.loads(json.dumps(namespace["run"]()))


def test_same_run_twice_gives_the_same_events() -> None:
    first = _scenario_in_this_process()
    assert first == _scenario_in_this_process()
    assert len(first["results"]) == 8 and len(first["lines"]) == 24


def test_same_run_in_a_fresh_process_with_another_hash_seed() -> None:
    here = _scenario_in_this_process()
    script = _SCENARIO + "\nprint(json.dumps(run()))\n"
    for hash_seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        )
        assert json.loads(done.stdout) == here
