"""An asyncio event loop in virtual time, stepped by the simulator (async actors).

Owns: ``VirtualLoop``, an ``asyncio.BaseEventLoop`` whose clock is the
simulation's and which never waits: it has no selector, no sockets and no
threads. The simulator steps it (``run_ready``) inside a unit of user code,
so coroutines see virtual time (``asyncio.sleep`` is virtual), labelled
output and their actor's random state. Must not: block, read the wall clock,
or run callbacks outside a step.

Theory of operation: a step runs every ready callback, including timers
that are due, until none is ready (bounded by ``ROUNDS_PER_STEP_MAX`` so a
coroutine that reschedules itself forever cannot hang the simulator).
``next_timer_s`` tells the simulator when the earliest timer falls due, so it
can schedule the next step in virtual time. ``call_soon_threadsafe`` and
executors (threads) are not supported: they would escape the one order.
"""

from __future__ import annotations

import asyncio
import asyncio.events
import heapq
from collections.abc import Callable
from typing import Any

ROUNDS_PER_STEP_MAX = 1_000_000


class _NoSelector:
    """What ``BaseEventLoop._run_once`` polls: never any I/O, never waits."""

    def select(self, timeout: float | None = None) -> list[Any]:
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """An event loop whose ``time()`` is ``clock()`` (virtual seconds)."""

    def __init__(self, clock: Callable[[], float], label: str = "") -> None:
        super().__init__()
        self._selector = _NoSelector()
        self._virtual_clock = clock
        self.label = label

    def time(self) -> float:
        return self._virtual_clock()

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def call_soon_threadsafe(self, callback: Callable[..., Any], *args: Any, context: Any = None) -> Any:  # type: ignore[override]
        raise RuntimeError("the simulator's actor event loop does not support threads")

    def run_in_executor(self, executor: Any, func: Callable[..., Any], *args: Any) -> Any:  # type: ignore[override]
        raise RuntimeError(
            "run_in_executor is not supported in simulated async actors (threads would escape "
            "the simulator's one order of execution)"
        )

    # -- stepping (the simulator only) ----------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(self._ready)  # type: ignore[attr-defined]

    def next_timer_s(self) -> float | None:
        """Virtual time of the earliest pending timer (cancelled ones skipped), or None."""
        scheduled = self._scheduled  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:
            handle = scheduled[0]
            heapq.heappop(scheduled)
            handle._scheduled = False
            cancelled: int = getattr(self, "_timer_cancelled_count", 0)
            self._timer_cancelled_count = max(0, cancelled - 1)
        return scheduled[0]._when if scheduled else None

    def run_ready(self) -> None:
        """Run callbacks until nothing is ready now (due timers included). Runs as user code."""
        previous = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(self)
        try:
            rounds = 0
            while True:
                due = self.next_timer_s()
                if not self._ready and (due is None or due > self.time()):  # type: ignore[attr-defined]
                    return
                rounds += 1
                if rounds > ROUNDS_PER_STEP_MAX:
                    raise RuntimeError(
                        f"async actor {self.label}: more than {ROUNDS_PER_STEP_MAX} event loop rounds "
                        "at one instant of virtual time (a coroutine that never waits?)"
                    )
                self._run_once()  # type: ignore[attr-defined]
        finally:
            asyncio.events._set_running_loop(previous)
