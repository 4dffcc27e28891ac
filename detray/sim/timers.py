"""Bare SimPy timer events: what ``env.timeout(delay)`` plus a closure does, at a fraction of the cost.

Owns: the `Timer` record and `heap_of(env)`, SimPy's event heap and
insertion-id counter. ``heappush(heap, (env._now + delay_s, NORMAL,
next(ids), timer))`` is exactly ``env.schedule(timer, NORMAL, delay_s)``
without the call: the timer lands where ``env.timeout(delay_s)`` would put
its event (same instant, same tie-break by scheduling order), so a run that
switches from timeouts to timers steps through the same events in the same
order. Must not: fail (a timer is always ``ok``) or carry a value. Callers
check that the delay is not negative (``env.timeout`` did).

``env.step`` reads only an event's ``callbacks`` and ``_ok``; a timer's
``callbacks`` is a one-callback tuple shared by every timer of one kind, and
``target`` and ``token`` tell the callback what the timer is for and whether
it is still current (a message's token, a link's generation; for
``SimCluster.later``: the function and its arguments). The cluster's loop
fires timers itself (pop the heap, set the clock, call the one callback:
what ``env.step`` does for them); anything else goes through ``env.step``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import simpy
from simpy.events import NORMAL

__all__ = ["NORMAL", "Timer", "heap_of"]


class Timer:
    """One pending timer (see the module docstring)."""

    __slots__ = ("callbacks", "target", "token")
    _ok = True  # a timer never fails

    def __init__(self, callbacks: tuple[Callable[[Timer], None], ...], target: Any, token: Any = 0) -> None:
        self.callbacks = callbacks
        self.target = target
        self.token = token


def heap_of(env: simpy.Environment) -> tuple[list[tuple[Any, Any, int, Any]], Iterator[int]]:
    """SimPy's event heap and its insertion-id counter (SimPy 4: ``env._queue``, ``env._eid``).

    ``heappush(heap, (env._now + delay_s, NORMAL, next(ids), timer))`` is exactly
    ``env.schedule(timer, NORMAL, delay_s)``; ``tests/sim/test_timers.py`` checks it.
    """
    return cast("list[tuple[Any, Any, int, Any]]", env._queue), env._eid
