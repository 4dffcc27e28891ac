"""``Queue``: a first-in, first-out queue shared by tasks and actors (Ray's ``ray.util.queue``).

Owns: the client class ``Queue`` (picklable: pass it to tasks and actors),
the async actor that holds the items (``_QueueActor``, over ``asyncio.Queue``)
and the ``Empty``/``Full`` errors. Built only on the public API (``remote``,
``get``, ``wait``, ``kill``), so it behaves the same on every driver; on the
simulator, blocking timeouts run in virtual time.

Ray's rules kept: ``Empty`` and ``Full`` subclass the standard library's
``queue.Empty`` and ``queue.Full``; a non-blocking ``get``/``put`` raises them
at once, a blocking one after ``timeout`` seconds (``None``: wait for ever); a
negative timeout is a ``ValueError``; batches are all-or-nothing; items put by
one caller come out in its order, while several producers (or consumers)
blocked on a full (empty) queue are served in no promised order.
``shutdown(force=False)`` waits up to ``grace_period_s`` for the calls running
in the actor to end, then kills it (detray has no graceful actor exit); calls
still blocked then fail with ``ActorDiedError``, as in Ray. Added: the
arguments are checked on the caller's side, a ``Queue`` used after its
``shutdown()`` says so, and a ``get``/``put`` with ``timeout=0`` on a queue that
can serve it at once succeeds.
"""

from __future__ import annotations

import asyncio
import queue as _stdlib_queue
from collections.abc import Iterable
from typing import Any

__all__ = ["Empty", "Full", "Queue"]


class Empty(_stdlib_queue.Empty):
    """Raised by ``get`` on an empty ``Queue``: at once if not blocking, else on timeout."""


class Full(_stdlib_queue.Full):
    """Raised by ``put`` on a full ``Queue``: at once if not blocking, else on timeout."""


class Queue:
    """A FIFO queue held by an actor: ``q = Queue(maxsize=10); q.put(1); q.get()``.

    ``maxsize`` <= 0 means unbounded. ``actor_options`` go to the queue
    actor's ``.options(...)`` (``num_cpus``, ``name``, ...).
    """

    def __init__(self, maxsize: int = 0, actor_options: dict[str, Any] | None = None) -> None:
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"Queue(): maxsize must be an int, got {type(maxsize).__name__}")
        if actor_options is not None and not isinstance(actor_options, dict):
            raise TypeError(
                f"Queue(): actor_options must be a dict of actor options, got {type(actor_options).__name__}"
            )
        self.maxsize = maxsize
        actor_class = _queue_actor_class()
        if actor_options:
            actor_class = actor_class.options(**actor_options)
        self.actor: Any = actor_class.remote(maxsize)

    def __len__(self) -> int:
        return self.size()

    def size(self) -> int:
        """The number of items in the queue."""
        return int(_get(self._actor("size").qsize.remote()))

    def qsize(self) -> int:
        """The number of items in the queue."""
        return self.size()

    def empty(self) -> bool:
        """Whether the queue holds no item."""
        return bool(_get(self._actor("empty").empty.remote()))

    def full(self) -> bool:
        """Whether the queue holds ``maxsize`` items (never, when unbounded)."""
        return bool(_get(self._actor("full").full.remote()))

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """Add ``item``; on a full queue raise ``Full`` (``block=False``) or wait up to ``timeout``."""
        actor = self._actor("put")
        if not block:
            _unwrap(_get(actor.put_nowait.remote(item)))
            return
        _unwrap(_get(actor.put.remote(item, _checked_timeout("put", timeout))))

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        """Remove and return the oldest item; on an empty queue raise ``Empty`` (``block=False``)
        or wait up to ``timeout``."""
        actor = self._actor("get")
        if not block:
            return _unwrap(_get(actor.get_nowait.remote()))
        return _unwrap(_get(actor.get.remote(_checked_timeout("get", timeout))))

    async def put_async(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        """``put`` for async code (inside an async actor, or any coroutine)."""
        actor = self._actor("put_async")
        if not block:
            _unwrap(await actor.put_nowait.remote(item))
            return
        _unwrap(await actor.put.remote(item, _checked_timeout("put_async", timeout)))

    async def get_async(self, block: bool = True, timeout: float | None = None) -> Any:
        """``get`` for async code (inside an async actor, or any coroutine)."""
        actor = self._actor("get_async")
        if not block:
            return _unwrap(await actor.get_nowait.remote())
        return _unwrap(await actor.get.remote(_checked_timeout("get_async", timeout)))

    def put_nowait(self, item: Any) -> None:
        """``put(item, block=False)``: raises ``Full`` on a full queue."""
        self.put(item, block=False)

    def get_nowait(self) -> Any:
        """``get(block=False)``: raises ``Empty`` on an empty queue."""
        return self.get(block=False)

    def put_nowait_batch(self, items: Iterable[Any]) -> None:
        """Add all ``items`` in order, or none: ``Full`` if they would not all fit."""
        if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
            raise TypeError(
                f"put_nowait_batch(): items must be an iterable of items, got {type(items).__name__}"
            )
        _unwrap(_get(self._actor("put_nowait_batch").put_nowait_batch.remote(list(items))))

    def get_nowait_batch(self, num_items: int) -> list[Any]:
        """Remove and return the ``num_items`` oldest items, or none: ``Empty`` if there are fewer."""
        if isinstance(num_items, bool) or not isinstance(num_items, int):
            raise TypeError(f"get_nowait_batch(): num_items must be an int, got {type(num_items).__name__}")
        if num_items < 0:
            raise ValueError(f"get_nowait_batch(): num_items must be non-negative, got {num_items}")
        items = _unwrap(_get(self._actor("get_nowait_batch").get_nowait_batch.remote(num_items)))
        return list(items)

    def shutdown(self, force: bool = False, grace_period_s: float = 5) -> None:
        """Stop the queue's actor and release its resources (a second call does nothing).

        ``force=True`` kills it at once. Otherwise the calls running in it get up
        to ``grace_period_s`` seconds to end, then it is killed. Calls still
        waiting fail with ``ActorDiedError``; this ``Queue`` refuses further use.
        """
        if isinstance(grace_period_s, bool) or not isinstance(grace_period_s, (int, float)):
            raise TypeError(
                f"shutdown(): grace_period_s must be a number of seconds, got {type(grace_period_s).__name__}"
            )
        if grace_period_s < 0:
            raise ValueError(f"shutdown(): grace_period_s must be non-negative, got {grace_period_s}")
        from detray.api import kill, wait

        actor = self.actor
        if actor is None:
            return
        if not force:
            wait([actor.drain.remote()], timeout=grace_period_s)
        kill(actor, no_restart=True)
        self.actor = None

    def _actor(self, method: str) -> Any:
        if self.actor is None:
            raise RuntimeError(f"Queue.{method}(): this queue was shut down")
        return self.actor

    def __repr__(self) -> str:
        state = "shut down" if self.actor is None else repr(self.actor)
        return f"Queue(maxsize={self.maxsize}, {state})"


# --- the actor --------------------------------------------------------------------------------
# Its methods answer (_OK, value), (_EMPTY, message) or (_FULL, message): the caller raises
# Empty/Full itself, so users see those exact types with a plain message, not a task error.

_OK = "ok"
_EMPTY = "empty"
_FULL = "full"


class _QueueActor:
    """Holds the items; async, so that blocked puts and gets wait without holding the actor."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize)
        self.running_calls = 0
        self.drain_waiters: list[asyncio.Future[None]] = []

    def qsize(self) -> int:
        return self.queue.qsize()

    def empty(self) -> bool:
        return self.queue.empty()

    def full(self) -> bool:
        return self.queue.full()

    def put_nowait(self, item: Any) -> tuple[str, Any]:
        if self.queue.full():
            return _FULL, f"Queue.put_nowait(): the queue is full ({self.maxsize} items)"
        self.queue.put_nowait(item)
        return _OK, None

    def get_nowait(self) -> tuple[str, Any]:
        if self.queue.empty():
            return _EMPTY, "Queue.get_nowait(): the queue is empty"
        return _OK, self.queue.get_nowait()

    async def put(self, item: Any, timeout: float | None) -> tuple[str, Any]:
        if not self.queue.full():
            self.queue.put_nowait(item)
            return _OK, None
        self.running_calls += 1
        try:
            await asyncio.wait_for(self.queue.put(item), timeout)
        except asyncio.TimeoutError:
            return _FULL, f"Queue.put(): the queue stayed full ({self.maxsize} items) for {timeout} s"
        finally:
            self._call_ended()
        return _OK, None

    async def get(self, timeout: float | None) -> tuple[str, Any]:
        if not self.queue.empty():
            return _OK, self.queue.get_nowait()
        self.running_calls += 1
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return _EMPTY, f"Queue.get(): the queue stayed empty for {timeout} s"
        finally:
            self._call_ended()
        return _OK, item

    def put_nowait_batch(self, items: list[Any]) -> tuple[str, Any]:
        if self.maxsize > 0 and self.queue.qsize() + len(items) > self.maxsize:
            return _FULL, (
                f"Queue.put_nowait_batch(): cannot add {len(items)} items to a queue holding "
                f"{self.queue.qsize()} of at most {self.maxsize}"
            )
        for item in items:
            self.queue.put_nowait(item)
        return _OK, None

    def get_nowait_batch(self, num_items: int) -> tuple[str, Any]:
        if num_items > self.queue.qsize():
            return _EMPTY, (
                f"Queue.get_nowait_batch(): cannot get {num_items} items from a queue holding "
                f"{self.queue.qsize()}"
            )
        return _OK, [self.queue.get_nowait() for _ in range(num_items)]

    async def drain(self) -> None:
        """Return once no put or get is waiting in the actor (``shutdown``'s grace period)."""
        if self.running_calls:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.drain_waiters.append(waiter)
            await waiter

    def _call_ended(self) -> None:
        self.running_calls -= 1
        if self.running_calls == 0:
            for waiter in self.drain_waiters:
                if not waiter.done():
                    waiter.set_result(None)
            self.drain_waiters.clear()


def _queue_actor_class() -> Any:
    global _actor_class
    if _actor_class is None:
        from detray.api import remote

        _actor_class = remote(_QueueActor)
    return _actor_class


_actor_class: Any = None


def _get(ref: Any) -> Any:
    from detray.api import get

    return get(ref)


def _unwrap(answer: tuple[str, Any]) -> Any:
    outcome, value = answer
    if outcome == _EMPTY:
        raise Empty(value)
    if outcome == _FULL:
        raise Full(value)
    return value


def _checked_timeout(method: str, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"Queue.{method}(): timeout must be a number of seconds or None, got {timeout!r}")
    if timeout < 0:
        raise ValueError(f"Queue.{method}(): 'timeout' must be a non-negative number, got {timeout}")
    return float(timeout)
