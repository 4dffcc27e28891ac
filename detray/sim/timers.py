"""Bare SimPy timer events: what ``env.timeout(delay)`` plus a closure does, at half the cost.

Owns: the `Timer` record and `schedule_of(env)`: ``schedule(timer, NORMAL,
delay_s)`` puts a timer exactly where ``env.timeout(delay_s)`` would put its
event (same instant, same tie-break by scheduling order), so a run that
switches from timeouts to timers steps through the same events in the same
order. Must not: fail (a timer is always ``ok``) or carry a value. Callers
check that the delay is not negative (``env.timeout`` did).

``env.step`` reads only an event's ``callbacks`` and ``_ok``; a timer's
``callbacks`` is a tuple shared by every timer of one kind, and ``target``
and ``token`` tell the callback what the timer is for and whether it is
still current (a message's token, a link's generation).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import simpy
from simpy.events import NORMAL

__all__ = ["NORMAL", "Timer", "schedule_of"]


class Timer:
    """One pending timer (see the module docstring)."""

    __slots__ = ("callbacks", "target", "token")
    _ok = True  # a timer never fails

    def __init__(self, callbacks: tuple[Callable[[Timer], None], ...], target: Any, token: int = 0) -> None:
        self.callbacks = callbacks
        self.target = target
        self.token = token


def schedule_of(env: simpy.Environment) -> Callable[[Timer, int, float], None]:
    """``env.schedule``, typed for timers (a Timer has all of an event that ``env.step`` reads)."""
    return cast(Callable[[Timer, int, float], None], env.schedule)
