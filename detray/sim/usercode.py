"""Run user code (driver script, task bodies, actor methods) as greenlets, one at a time.

Owns: switching between the event loop and units of user code, and the
outcome of every switch. Must not: decide what runs when (the loop does, in
its fixed order), read the wall clock, or let an exception from user code
reach the loop as anything but `Raised`.

Theory of operation. A `Runner` belongs to one loop greenlet (the one that
creates it, usually the main greenlet running SimPy). Only the loop starts
or continues a unit; each call switches into the unit and returns when the
unit finishes or blocks, as an `Outcome`:

    start(unit)          -> Done(value) | Raised(exc, text) | Blocked(request)
    resume(unit, value)  -> the same: `block` returns ``value`` in the unit
    throw(unit, exc)     -> the same: `block` raises ``exc`` in the unit
    kill(unit, exc)      -> Done | Raised | None: ``exc`` is raised at the
                            unit's pending `block` and at every later one
    close()              -> every suspended unit is killed with GreenletExit

Inside a unit, the runtime's blocking calls (``get``, ``wait``, actor calls,
``time.sleep`` via `Sleep`, ``os._exit`` via `ProcessExit`, a cooperative
lock's wait via ``coop.LockWait``) end in ``block(request)``: the unit is suspended,
the loop gets ``Blocked(request)`` and decides when to resume it. So units
never run concurrently and never switch to each other: the loop's order is
the only order. Each switch goes through ``virtual_env.enter``/``leave``,
which swap in the unit's random state and make ``time``, ``print`` and
`current_context` see the unit.

Finished units leave their greenlet to a small pool, so a unit that never
blocks costs two switches, not a greenlet's creation. User code must not
switch greenlets itself (gevent and the like are not supported).
"""

from __future__ import annotations

import enum
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import greenlet  # type: ignore[import-untyped]

from detray.sim import streams, virtual_env
from detray.sim.virtual_env import RandomSlot, Sandbox, Sink

IDLE_GREENLETS_MAX = 64
RANDOM_PURPOSE = "user_random"


@dataclass(frozen=True, slots=True)
class Sleep:
    """The request `time.sleep` blocks on inside a unit: resume after ``duration_s``
    of virtual time (``Sleep(0.0)`` still lets every other ready unit run first)."""

    duration_s: float


@dataclass(frozen=True, slots=True)
class ProcessExit:
    """The request ``os._exit(code)`` blocks on inside a unit: its process dies now (the
    loop kills the unit's simulated worker; the unit is never resumed, only killed)."""

    code: int


@dataclass(frozen=True, slots=True)
class Done:
    """The unit returned ``value``."""

    value: Any


@dataclass(frozen=True, slots=True)
class Raised:
    """The unit raised ``exc``; ``traceback`` is its formatted traceback (user frames only)."""

    exc: BaseException
    traceback: str


@dataclass(frozen=True, slots=True)
class Blocked:
    """The unit called ``block(request)`` and waits for `Runner.resume` or `Runner.throw`."""

    request: Any


Outcome = Done | Raised | Blocked


class UnitState(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    BLOCKED = "blocked"
    FINISHED = "finished"


# Module constants: an enum member lookup costs about 0.1 us on the hot path.
_NEW, _RUNNING, _BLOCKED, _FINISHED = (
    UnitState.NEW,
    UnitState.RUNNING,
    UnitState.BLOCKED,
    UnitState.FINISHED,
)


_NO_KWARGS: dict[str, Any] = {}  # shared by units without keyword arguments: only ever read (``**kwargs``)


class UserCode(Sandbox):
    """One piece of user code: ``fn(*args, **kwargs)`` run by a `Runner`.

    ``context`` is whatever the runtime wants `current_context` to return
    inside (the task, worker and node). ``label`` prefixes its output lines,
    e.g. ``"train_step pid=node-00003/w00001"``. ``key`` (stable ids, e.g. the
    task id and attempt) picks its random stream; ``random_slot`` instead
    shares a state with other units (an actor's methods).
    """

    __slots__ = (
        "fn",
        "args",
        "kwargs",
        "context",
        "key",
        "state",
        "_glet",
        "_loop",
        "_kill",
        "_own_slot",
    )

    def __init__(
        self,
        fn: Callable[..., Any],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        context: Any = None,
        label: str = "",
        key: tuple[streams.StreamId, ...] = (),
        random_slot: RandomSlot | None = None,
    ) -> None:
        # Every parameter may be given by position: the per-task unit is built that way
        # (keyword matching is a third of a small constructor's cost).
        Sandbox.__init__(self, label)  # no super() lookup (one per unit)
        self.fn = fn
        self.args = tuple(args)
        self.kwargs = dict(kwargs) if kwargs else _NO_KWARGS
        self.context = context
        self.key = key
        self.random_slot = random_slot
        self._own_slot = random_slot is None
        self.state = _NEW
        self._glet: greenlet.greenlet | None = None
        self._loop: greenlet.greenlet | None = None
        self._kill: BaseException | None = None

    def sleep(self, seconds: float) -> None:
        block(Sleep(seconds))

    def exit_process(self, code: int) -> None:
        block(ProcessExit(code))
        raise AssertionError("a unit that called os._exit was resumed")  # the loop only kills it

    def __repr__(self) -> str:
        name = getattr(self.fn, "__qualname__", repr(self.fn))
        return f"<UserCode {name} {self.label!r} {self.state.value}>"


def block(request: Any) -> Any:
    """Suspend the running unit until the loop resumes it; return the resume value.

    Raises what the loop throws in, and the kill exception at once if the unit
    was killed. Only the runtime's own blocking calls use this.
    """
    unit = virtual_env.current()
    if unit is None:
        raise RuntimeError("block() called outside simulated user code")
    if unit._kill is not None:  # type: ignore[attr-defined]
        raise unit._kill  # type: ignore[attr-defined]
    if greenlet.getcurrent() is not unit._glet:  # type: ignore[attr-defined]
        raise RuntimeError("block() called from a greenlet the simulator did not start")
    return unit._loop.switch(Blocked(request))  # type: ignore[attr-defined]


def current_context() -> Any:
    """The ``context`` of the running unit, or None outside user code."""
    unit = virtual_env.current()
    return None if unit is None else unit.context  # type: ignore[attr-defined]


def _execute(unit: UserCode) -> Outcome:
    try:
        value = unit.fn(*unit.args, **unit.kwargs)
    except BaseException as exc:  # noqa: B036 -- everything from user code becomes Raised
        return Raised(exc, format_user_traceback(exc))
    return Done(value)


def format_user_traceback(exc: BaseException) -> str:
    """``exc``'s traceback without the runner's own frame."""
    tb = exc.__traceback__
    if tb is not None and tb.tb_frame.f_code is _execute.__code__:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb))


class Runner:
    """Runs `UserCode` units for one loop greenlet; see the module's theory of operation.

    ``clock()`` returns virtual seconds; ``seed`` is the run seed (units'
    random streams derive from it); ``sink`` receives their output lines
    (default: the real stdout/stderr). Creating a runner installs the
    virtualization (`virtual_env.install`); `close` removes it.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        seed: int,
        sink: Sink | None = None,
        idle_greenlets_max: int = IDLE_GREENLETS_MAX,
    ) -> None:
        self.clock = clock
        self.seed = seed
        self._random_seed = streams.seeder(seed, RANDOM_PURPOSE)  # key -> the unit's stream seed
        self.sink = sink or virtual_env.console_sink
        self._idle_greenlets_max = idle_greenlets_max
        self._loop = greenlet.getcurrent()
        self._idle: list[greenlet.greenlet] = []
        self._live: dict[UserCode, None] = {}  # started, not finished; insertion order
        self._anonymous_count = 0
        self._closed = False
        virtual_env.install()

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def suspended(self) -> list[UserCode]:
        """Units started and not finished, in start order."""
        return list(self._live)

    def start(self, unit: UserCode) -> Outcome:
        """Run ``unit`` from its beginning until it finishes or blocks."""
        self._check_loop()
        if self._closed:
            raise RuntimeError("Runner.start after close")
        if unit.state is not _NEW:
            raise ValueError(f"cannot start {unit!r}: already started")
        if unit.random_slot is None:
            key = unit.key
            if not key:
                key = ("anonymous", self._anonymous_count)
                self._anonymous_count += 1
            unit.random_slot = RandomSlot(self._random_seed(*key))
        unit.clock = self.clock
        unit.sink = self.sink
        unit._loop = self._loop
        if self._idle:
            glet = self._idle.pop()
        else:
            glet = greenlet.greenlet(self._worker_main, self._loop)
        unit._glet = glet
        self._live[unit] = None
        return self._switch(unit, glet.switch, unit)

    def resume(self, unit: UserCode, value: Any = None) -> Outcome:
        """Continue a blocked ``unit``: its `block` returns ``value``."""
        self._check_blocked(unit)
        assert unit._glet is not None
        return self._switch(unit, unit._glet.switch, value)

    def throw(self, unit: UserCode, exc: BaseException) -> Outcome:
        """Continue a blocked ``unit``: its `block` raises ``exc``."""
        self._check_blocked(unit)
        assert unit._glet is not None
        return self._switch(unit, unit._glet.throw, exc)

    def kill(self, unit: UserCode, exc: BaseException) -> Outcome | None:
        """End ``unit`` (its worker died): ``exc`` is raised at its pending `block`
        and at every later one, so it unwinds (its ``finally`` clauses run) and
        finishes. A unit never started finishes without running; a finished one
        is left alone (None).
        """
        self._check_loop()
        if unit.state is _FINISHED:
            return None
        unit._kill = exc
        if unit.state is _NEW:
            unit.state = _FINISHED
            return Raised(exc, "".join(traceback.format_exception_only(type(exc), exc)))
        assert unit.state is _BLOCKED and unit._glet is not None, unit
        outcome = self._switch(unit, unit._glet.throw, exc)
        assert not isinstance(outcome, Blocked), "a killed unit cannot block"
        return outcome

    def adopt(self, unit: UserCode, glet: greenlet.greenlet) -> None:
        """Make ``glet``, code that was already running before the loop existed
        (the driver script that called ``init``), the unit ``unit``, as if it
        were suspended at a pending `block`: `resume` and `throw` continue it.

        Its ``fn`` is never called. End the adoption with `release` (before
        `close`, which would otherwise kill it like any suspended unit).
        """
        self._check_loop()
        if self._closed:
            raise RuntimeError("Runner.adopt after close")
        if unit.state is not _NEW:
            raise ValueError(f"cannot adopt {unit!r}: already started")
        if glet is self._loop or glet.dead:
            raise ValueError("adopt needs a live greenlet other than the loop")
        if unit.random_slot is None:
            key = unit.key or ("adopted",)
            unit.random_slot = RandomSlot(self._random_seed(*key))
        unit.clock = self.clock
        unit.sink = self.sink
        unit._loop = self._loop
        unit._glet = glet
        unit.state = _BLOCKED
        self._live[unit] = None

    def release(self, unit: UserCode) -> None:
        """End the adoption of a blocked adopted unit without killing it: its
        greenlet is the caller's business again (it continues when the loop
        greenlet ends or switches to it)."""
        self._check_blocked(unit)
        unit.state = _FINISHED
        del self._live[unit]
        unit.flush_output()
        if unit._own_slot and unit.random_slot is not None:
            virtual_env.release(unit.random_slot)
        unit._glet = None

    def close(self) -> None:
        """Kill every suspended unit with GreenletExit (in start order), end the
        pooled greenlets, and remove the virtualization. Idempotent."""
        if self._closed:
            return
        self._check_loop()
        for unit in list(self._live):
            if unit.state is _BLOCKED:  # else a runner bug left it half-switched
                self.kill(unit, greenlet.GreenletExit())
        for glet in self._idle:
            glet.throw(greenlet.GreenletExit())
            assert glet.dead
        self._idle.clear()
        self._closed = True
        virtual_env.uninstall()

    # -- internals -----------------------------------------------------------

    def _worker_main(self, unit: UserCode) -> None:
        # Runs units one after another: hand the outcome to the loop, get the next unit.
        loop = self._loop
        while True:
            unit = loop.switch(_execute(unit))

    def _switch(self, unit: UserCode, switch: Callable[[Any], Any], arg: Any) -> Outcome:
        unit.state = _RUNNING
        outer = virtual_env.enter(unit)
        try:
            outcome = switch(arg)
        except BaseException:
            virtual_env.leave(unit, outer)
            raise
        if outcome.__class__ is Blocked:
            virtual_env.leave(unit, outer)
            unit.state = _BLOCKED
            return outcome
        # Finished: a random state of its own is released, not saved (nothing can read it again).
        virtual_env.leave(unit, outer, unit._own_slot)
        assert outcome.__class__ is Done or outcome.__class__ is Raised, outcome
        self._finish(unit)
        return outcome

    def _finish(self, unit: UserCode) -> None:
        unit.state = _FINISHED
        # It never runs again: drop its arguments (they often point back at the records
        # that hold the unit, a cycle only the collector could free).
        unit.args = ()
        unit.kwargs = _NO_KWARGS
        del self._live[unit]
        if unit._partial:  # held partial output lines (the call is skipped for most units)
            unit.flush_output()
        glet = unit._glet
        unit._glet = None
        assert glet is not None
        if len(self._idle) < self._idle_greenlets_max:
            glet.gr_context = None  # the next unit starts with empty contextvars
            self._idle.append(glet)
        else:
            glet.throw(greenlet.GreenletExit())

    def _check_loop(self) -> None:
        if greenlet.getcurrent() is not self._loop:
            raise RuntimeError("Runner methods are for the loop greenlet, not for user code")

    def _check_blocked(self, unit: UserCode) -> None:
        self._check_loop()
        if unit.state is not _BLOCKED:
            raise ValueError(f"{unit!r} is not blocked")
