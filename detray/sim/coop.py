"""Cooperative ``threading`` locks for simulated user code.

Owns: the lock types user code gets from ``threading.Lock()`` and
``threading.RLock()`` while a unit of user code runs (so also the
``Condition``, ``Event``, ``Semaphore``, ``BoundedSemaphore``, ``Barrier``,
``queue.Queue`` and ``concurrent.futures.Future`` it creates, which the
standard library builds on them), the `LockWait` request a unit blocks on
while it waits for one, and the patches that put them in place
(`install`/`uninstall`, called by ``virtual_env``). Must not: change a lock
made outside user code, or decide when a waiting unit runs (the loop does:
``workers.Executor.blocked_on_lock``).

Why: every unit runs on the one OS thread of the simulation, so a threaded
actor's call (``max_concurrency > 1``) that blocked the thread on a real lock
held by another call of the same actor would hang the process: the holder
could never run again to release it. A cooperative lock instead blocks only
the unit (``usercode.block``): the loop runs other units, in its fixed
order, and the unit resumes when the lock is handed to it (or its timeout,
in virtual time, passes). Waiters are served first come, first served; a
release hands the lock straight to the first waiter.

Which wait is cooperative (a unit, blocking, the lock taken):

- held by another unit: always (only a unit can release it, and units run
  only when the loop lets them);
- held by the unit itself or by code outside units (a ``Condition``'s
  wait: ``Event.wait``, ``Queue.get``, ``Future.result`` wait for another
  party's ``notify``): cooperative unless user threads are alive (threads
  started since the simulation began); then it is a real wait, in real time,
  as before, because such a thread may be the one to release it (``Thread.start``
  itself waits so for the new thread). A real wait that lasts longer than
  `REAL_WAIT_WARN_S` says so once on stderr.

Outside units (the loop, user threads, after the simulation) a cooperative
lock behaves as a real one; only the simulation's own thread, outside units,
while the simulation runs, refuses to wait without a timeout for a lock a unit
holds (it would wait forever): it raises ``RuntimeError`` naming the holder.
A zero timeout only tries, as a real lock's (the unit does not yield).

A killed unit (its worker died) unwinds through its ``finally`` clauses, where
it can no longer wait: a ``Condition.wait`` it was in cannot take the lock
back, so the ``with`` around it finds the lock held by another unit; that
release is skipped (a dead process releases nothing another one holds).

Not covered (real, as before): locks made before the simulation started
(module-level locks of modules imported earlier, names bound by ``from
threading import Lock`` before `install`), ``_thread.allocate_lock``,
``queue.SimpleQueue`` (a C type), locks made by user threads, and
``threading.local``/``get_ident``/``current_thread``, which are the same in
every unit (one OS thread).

The module-level clocks ``threading`` and ``queue`` captured at import
(``threading._time``, ``queue.time``: ``time.monotonic``) are patched with
the virtual one, so ``Semaphore.acquire(timeout=)``, ``Condition.wait_for``
and ``Queue.get(timeout=)`` count virtual seconds inside units.
"""

from __future__ import annotations

import queue
import sys
import threading
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

from detray.sim import usercode, virtual_env
from detray.sim.virtual_env import Sandbox

REAL_WAIT_WARN_S = 10.0
"""A unit's real wait (user threads alive) longer than this is reported once on stderr."""
REAL_WAIT_SLICE_S = 1.0
"""A real wait is cut in slices this long, to see whether user threads are still alive."""

_real_allocate_lock: Callable[[], Any] = threading._allocate_lock  # type: ignore[attr-defined]
_real_rlock: Callable[..., Any] = threading.RLock
_baseline_threads: frozenset[threading.Thread] = frozenset()
_warned_real_wait = False


class LockWait:
    """What a unit blocks on while it waits for a cooperative lock (``usercode.block``).

    The loop sets ``wake`` (schedules the unit's resumption with ``granted``)
    when the unit blocks; `grant` (a release handed the lock over) and
    `expire` (the timeout passed) each call it at most once between them.
    """

    __slots__ = ("lock", "unit", "timeout_s", "granted", "done", "wake")

    def __init__(self, lock: CoopLock, unit: Sandbox, timeout_s: float | None) -> None:
        self.lock = lock
        self.unit = unit
        self.timeout_s = timeout_s
        self.granted = False
        self.done = False
        self.wake: Callable[[bool], None] | None = None

    def grant(self) -> None:
        self.granted = True
        self.done = True
        if self.wake is not None:
            self.wake(True)

    def expire(self) -> None:
        """The timeout passed: leave the line, resume the unit with False."""
        if self.done:
            return
        self.done = True
        self.lock._leave_line(self)
        if self.wake is not None:
            self.wake(False)

    def describe(self) -> str:
        """What the unit waits for, for a deadlock report."""
        lock = self.lock
        holder = lock.holder()
        if lock._condition_wait:
            at = f" at {lock._origin}" if lock._origin else ""
            return (
                f"waits{at} in a threading Condition's wait (Event.wait, Queue.get or put, "
                "Semaphore.acquire, Future.result...) that only another unit's notify can end"
            )
        made = f" (made at {lock._origin})" if lock._origin else ""
        if holder is None:
            return f"waits for a threading lock{made}, which is free (its wake is pending)"
        if isinstance(holder, Sandbox) and _key(holder) is _key(self.unit):
            return f"waits for a threading lock{made} it holds itself (a Lock is not re-entrant)"
        return f"waits for a threading lock{made} held by {describe_holder(holder)}"


def describe_holder(holder: Any) -> str:
    if isinstance(holder, Sandbox):
        state = getattr(holder, "state", None)
        status = "" if state is None else f" ({state.value}{', it never released it' if state.value == 'finished' else ''})"
        if getattr(getattr(holder, "context", None), "kind", None) == "driver":
            return f"the driver{status}"
        return f"unit {holder.label or repr(holder)}{status}"
    return f"thread {holder} (outside the simulated units)"


def _dying_elsewhere(holder: Sandbox) -> bool:
    """Whether the caller is a killed unit unwinding (its process died: a real one runs no
    more code) and ``holder``, the unit holding the lock it releases, is another one.

    A killed unit's ``with cond:`` around ``cond.wait()`` ends so: the wait's re-acquire
    raises the kill at once (the unit cannot wait any more), then the ``with`` releases a
    lock the unit never got back. Releasing it would take it from the unit holding it (a
    lock shared beyond the dead process: made by a library in a module-level name), so the
    release is skipped.
    """
    box = virtual_env.current()
    return box is not None and box is not holder and getattr(box, "_kill", None) is not None


def _key(box: Sandbox) -> object:
    """The simulated thread a unit runs in: its own, or the one it shares (an async actor's loop)."""
    key = getattr(box, "thread_key", None)
    return box if key is None else key


def _origin() -> tuple[str, bool]:
    """``file:line`` of the user code that made a lock (past the standard library's frames),
    and whether the lock is a ``threading.Condition``'s wait (made by ``Condition.wait``)."""
    frame: FrameType | None = sys._getframe(1)
    skip = (__file__, threading.__file__, queue.__file__)
    first_outside = True
    condition_wait = False
    while frame is not None and (frame.f_code.co_filename in skip or "concurrent/futures" in frame.f_code.co_filename):
        if frame.f_code.co_filename != __file__ and first_outside:
            first_outside = False
            condition_wait = frame.f_code.co_filename == threading.__file__ and frame.f_code.co_name == "wait"
        frame = frame.f_back
    if frame is None:
        return "", condition_wait
    return f"{frame.f_code.co_filename}:{frame.f_lineno}", condition_wait


def _timeout_of(blocking: Any, timeout: Any) -> float | None:
    """``timeout`` in seconds (None: none), after the checks a real lock's ``acquire`` makes,
    with its errors and messages: a fresh, free real lock makes them (and is taken at once)."""
    _real_allocate_lock().acquire(blocking, timeout)
    seconds = float(timeout)
    return None if seconds == -1 else seconds


def _user_threads() -> list[threading.Thread]:
    """Threads alive or starting that were not there when the simulation began."""
    return [thread for thread in threading.enumerate() if thread not in _baseline_threads]


class CoopLock:
    """``threading.Lock`` made inside a unit: see the module docstring."""

    # Mangled names: the unpicklable internals stay out of the search for what fails to pickle
    # (``serialization.find_unpicklable`` stops at the lock itself, as at a real one).
    __slots__ = ("__lock", "__holder", "__waiters", "_origin", "_condition_wait", "__weakref__")

    def __init__(self) -> None:
        self.__lock = _real_allocate_lock()
        self.__holder: Any = None
        """The unit (a ``Sandbox``) or thread id that holds it; None when free."""
        self.__waiters: deque[LockWait] = deque()
        self._origin, self._condition_wait = _origin()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        seconds = None if timeout == -1 else _timeout_of(blocking, timeout)
        box = virtual_env.current()
        if self.__lock.acquire(False):
            self.__holder = box if box is not None else threading.get_ident()
            return True
        if not blocking or seconds == 0:
            return False  # a zero timeout only tries, as a real lock's (no wait, no yield to other units)
        if box is None:
            return self._outside_wait(seconds)
        holder = self.__holder
        if not (isinstance(holder, Sandbox) and _key(holder) is not _key(box)) and _user_threads():
            return self._real_wait(box, seconds)
        return self._cooperative_wait(box, seconds)

    def _cooperative_wait(self, box: Sandbox, seconds: float | None) -> bool:
        if self.__lock.acquire(False):
            # Released meanwhile by a user thread that has ended since (only another thread can
            # have: nothing of the simulation ran since the caller found it taken).
            self.__holder = box
            return True
        wait = LockWait(self, box, seconds)
        self.__waiters.append(wait)
        try:
            granted = bool(usercode.block(wait))
        except BaseException:
            # Thrown in (a kill, a cancel, a deadlock report): leave the line, or pass on a lock
            # handed over meanwhile.
            if wait.granted:
                self._release_held()
            else:
                wait.done = True
                self._leave_line(wait)
            raise
        return granted  # the release set the holder when it handed the lock over

    def _real_wait(self, box: Sandbox, seconds: float | None) -> bool:
        """User threads are alive and may release it: block the OS thread, in slices."""
        global _warned_real_wait
        clock = virtual_env._real["monotonic"]
        started = clock()
        while True:
            waited = clock() - started
            slice_s = REAL_WAIT_SLICE_S if seconds is None else min(REAL_WAIT_SLICE_S, max(0.0, seconds - waited))
            if self.__lock.acquire(True, slice_s):
                self.__holder = box
                return True
            waited = clock() - started
            if seconds is not None and waited >= seconds:
                return False
            if not _user_threads():  # nobody outside the units is left to release it
                remaining = None if seconds is None else seconds - waited
                return self._cooperative_wait(box, remaining)
            if waited > REAL_WAIT_WARN_S and not _warned_real_wait:
                _warned_real_wait = True
                names = ", ".join(thread.name for thread in _user_threads())
                virtual_env.real_stream("stderr").write(
                    f"detray (sim) warning: {box.label or 'a unit'} has waited {waited:.0f} s (real time) for a "
                    f"threading lock while user threads run ({names}); the simulation is stopped meanwhile. "
                    "If no user thread releases it, this never ends.\n"
                )

    def _outside_wait(self, seconds: float | None) -> bool:
        holder = self.__holder
        if seconds is None and _patched and isinstance(holder, Sandbox) and virtual_env.in_simulation_thread():
            # A timed wait ends (False), and after the simulation it is a real lock's wait.
            raise RuntimeError(
                f"detray (sim): waiting for a threading lock (made at {self._origin or 'an unknown place'}) "
                f"held by simulated {describe_holder(holder)} would block the simulation's only thread forever"
            )
        got = self.__lock.acquire(True, -1 if seconds is None else seconds)
        if got:
            self.__holder = threading.get_ident()
        return bool(got)

    def holder(self) -> Any:
        """The unit (a ``Sandbox``) or thread id that holds it; None when free."""
        return self.__holder

    def _leave_line(self, wait: LockWait) -> None:
        try:
            self.__waiters.remove(wait)
        except ValueError:
            pass

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("cannot pickle '_thread.lock' object")

    def release(self) -> None:
        if not self.__lock.locked():
            raise RuntimeError("release unlocked lock")
        holder = self.__holder
        if isinstance(holder, Sandbox) and _dying_elsewhere(holder):
            return
        self._release_held()

    def _release_held(self) -> None:
        waiters = self.__waiters
        while waiters:
            wait = waiters.popleft()
            if wait.done:
                continue
            self.__holder = wait.unit  # handed over: the lock stays taken
            wait.grant()
            return
        self.__holder = None
        self.__lock.release()

    def locked(self) -> bool:
        return bool(self.__lock.locked())

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _at_fork_reinit(self) -> None:
        self.__lock = _real_allocate_lock()
        self.__holder = None
        self.__waiters = deque()

    acquire_lock = acquire
    release_lock = release
    locked_lock = locked

    def __repr__(self) -> str:
        state = "locked" if self.locked() else "unlocked"
        return f"<{state} cooperative _thread.lock object at {id(self):#x}>"


class CoopRLock:
    """``threading.RLock`` made inside a unit: owned by the simulated thread that took it
    (a unit, or an async actor's loop), not by the one OS thread every unit shares."""

    __slots__ = ("__block", "__owner", "_count", "__weakref__")  # mangled: see CoopLock

    def __init__(self) -> None:
        self.__block = CoopLock()
        self.__owner: object = None
        self._count = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = _me()
        if self.__owner is me and self._count:
            if timeout != -1:
                _timeout_of(blocking, timeout)  # the checks a real RLock makes first
            self._count += 1
            return True
        got = self.__block.acquire(blocking, timeout)
        if got:
            self.__owner = me
            self._count = 1
        return got

    def release(self) -> None:
        if self.__owner is not _me() or not self._count:
            box = virtual_env.current()
            if box is not None and getattr(box, "_kill", None) is not None:
                return  # a killed unit's unwinding (see `_dying_elsewhere`)
            raise RuntimeError("cannot release un-acquired lock")
        self._count -= 1
        if not self._count:
            self.__owner = None
            self.__block.release()

    __enter__ = acquire

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("cannot pickle '_thread.RLock' object")

    def _is_owned(self) -> bool:
        return self.__owner is _me() and self._count > 0

    def _release_save(self) -> tuple[int, object]:
        if not self._count:
            raise RuntimeError("cannot release un-acquired lock")
        state = (self._count, self.__owner)
        self._count = 0
        self.__owner = None
        self.__block.release()
        return state

    def _acquire_restore(self, state: tuple[int, object]) -> None:
        self.__block.acquire()
        self._count, self.__owner = state

    def _recursion_count(self) -> int:
        return self._count if self.__owner is _me() else 0

    def _at_fork_reinit(self) -> None:
        self.__block._at_fork_reinit()
        self.__owner = None
        self._count = 0

    def __repr__(self) -> str:
        state = "locked" if self._count else "unlocked"
        return f"<{state} cooperative _thread.RLock object owner={self.__owner!r} count={self._count} at {id(self):#x}>"


_ident_keys: dict[int, object] = {}


def _me() -> object:
    """The simulated thread calling: the unit's key inside units, else the OS thread (an int,
    interned so that ``is`` compares it)."""
    box = virtual_env.current()
    if box is not None:
        return _key(box)
    ident = threading.get_ident()
    return _ident_keys.setdefault(ident, ident)


def _new_lock() -> Any:
    if virtual_env.current() is None:
        return _real_allocate_lock()
    return CoopLock()


def _new_rlock(*args: Any, **kwargs: Any) -> Any:
    if virtual_env.current() is None:
        return _real_rlock(*args, **kwargs)
    return CoopRLock(*args, **kwargs)


_patched: list[tuple[Any, str, Any, Any]] = []  # (module, name, original, fake)


def install() -> None:
    """Patch the lock factories and the captured clocks (``virtual_env.install`` calls this)."""
    global _baseline_threads, _real_allocate_lock, _real_rlock
    if _patched:
        return
    _baseline_threads = frozenset(threading.enumerate())
    _real_allocate_lock = threading._allocate_lock  # type: ignore[attr-defined]
    _real_rlock = threading.RLock
    monotonic = virtual_env.virtual_monotonic
    for module, name, fake in (
        (threading, "Lock", _new_lock),
        (threading, "_allocate_lock", _new_lock),
        (threading, "RLock", _new_rlock),
        (threading, "_time", monotonic),
        (queue, "time", monotonic),
    ):
        _patched.append((module, name, getattr(module, name), fake))
        setattr(module, name, fake)


def uninstall() -> None:
    """Undo `install` (a patch someone else replaced since is left to its new owner)."""
    for module, name, original, fake in reversed(_patched):
        if getattr(module, name) is fake:
            setattr(module, name, original)
    _patched.clear()
