"""A process's connection to its raylet: batched sends, request/reply, pushed messages, ref changes.

Owns: the one authenticated channel of a driver or worker process to the
raylet, the lock that makes sending thread-safe, the reader thread that
completes replies (by request number) and hands pushed messages (worker
assignments, task runs, printed lines) to the process's handler, and the
queue of reference changes the ``ObjectRef``/``ActorHandle`` hooks record.
Must not: interpret values or decide anything.

Theory of operation: every send takes the recorded reference changes first
and ships them in the same batch (``protocol.REFS`` before the message), so
the raylet counts a ref before it sees the call that depends on it (the core
counts a return id's handle before its task is submitted). Calls that wait
for nothing (task submissions, puts, kills) are *posted*: they join an
outbox that goes out with the next ``send`` (a ``get`` flushes it first, so
order holds), when ``POST_BATCH_MAX`` wait, or after ``POST_DELAY_S`` (the
flusher thread). A burst of submissions thus reaches the raylet as a few
large batches, one read and one reference event each, not one per task.
A flusher thread sends changes left over after ``FLUSH_INTERVAL_S`` (a
program that drops refs and then idles still frees its objects). When the
channel closes, every pending reply fails with ``RaySystemError``, so no
caller waits forever on a raylet that is gone.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from detray.core.ids import ActorID, ObjectID
from detray.exceptions import RaySystemError
from detray.real import protocol as P
from detray.real.channel import Channel, ChannelError

FLUSH_INTERVAL_S = 0.05
POST_DELAY_S = 0.0005
"""How long a posted message waits for company before the flusher sends it."""
POST_BATCH_MAX = 256
"""Posted messages sent at once when this many wait."""


class RayletConnection:
    """See the module docstring. ``on_push(message)`` runs on the reader thread."""

    def __init__(self, channel: Channel, on_push: Callable[[P.Message], None]) -> None:
        self.channel = channel
        self.on_push = on_push
        self.lock = threading.RLock()
        """Held to send; callers hold it around creating refs and sending the message that
        introduces their objects, so no other batch carries those refs first."""
        self.pending: dict[int, concurrent.futures.Future[Any]] = {}
        self.requests = itertools.count(1)
        self.closed = False
        self.close_reason = "the connection to the raylet is closed"
        self.added: deque[ObjectID] = deque()
        self.removed: deque[ObjectID] = deque()
        self.escaped: deque[ObjectID] = deque()
        self.actors_added: deque[ActorID] = deque()
        self.actors_removed: deque[ActorID] = deque()
        self.outbox: list[P.Message] = []
        self._posted = threading.Event()
        self._stop = threading.Event()
        self.reader = threading.Thread(target=self._read_loop, name="detray-raylet-reader", daemon=True)
        self.reader.start()
        self.flusher = threading.Thread(target=self._flush_loop, name="detray-ref-flusher", daemon=True)
        self.flusher.start()

    # --- sending ------------------------------------------------------------------------------------

    def _ref_batch(self) -> list[P.Message]:
        if not (self.added or self.removed or self.escaped or self.actors_added or self.actors_removed):
            return []
        return [
            (
                P.REFS,
                _drain(self.added),
                _drain(self.removed),
                _drain(self.actors_added),
                _drain(self.actors_removed),
                _drain(self.escaped),
            )
        ]

    def send(self, *messages: P.Message) -> None:
        """Send the outbox, the recorded ref changes and ``messages`` now, in one batch."""
        with self.lock:
            if self.closed:
                raise RaySystemError(self.close_reason)
            batch, self.outbox = self.outbox, []
            batch.extend(self._ref_batch())
            batch.extend(messages)
            self._write(batch)

    def post(self, *messages: P.Message) -> None:
        """Queue ``messages`` (after the ref changes recorded so far) for the next batch."""
        with self.lock:
            if self.closed:
                raise RaySystemError(self.close_reason)
            outbox = self.outbox
            outbox.extend(self._ref_batch())
            outbox.extend(messages)
            if len(outbox) >= POST_BATCH_MAX:
                self.outbox = []
                self._write(outbox)
            elif not self._posted.is_set():
                self._posted.set()

    def _write(self, batch: list[P.Message]) -> None:
        try:
            self.channel.send_obj(batch)
        except (ChannelError, OSError) as exc:
            self._close(f"the connection to the raylet broke: {exc}")
            raise RaySystemError(self.close_reason) from exc

    def request(self, make: Callable[[int], P.Message]) -> tuple[int, concurrent.futures.Future[Any]]:
        """Send the message ``make(req)`` and return ``req`` and the future of its reply."""
        req = next(self.requests)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        self.pending[req] = future
        try:
            self.send(make(req))
        except BaseException:
            self.pending.pop(req, None)
            raise
        return req, future

    def call(self, make: Callable[[int], P.Message], timeout_s: float | None = None) -> Any:
        """``request`` and wait for the reply."""
        _, future = self.request(make)
        return future.result(timeout_s)

    def flush(self) -> None:
        """Send what is posted and the recorded ref changes, if anything."""
        with self.lock:
            if self.closed:
                return
            batch, self.outbox = self.outbox, []
            batch.extend(self._ref_batch())
            if batch:
                try:
                    self._write(batch)
                except RaySystemError:
                    pass  # the reader and every waiting caller learn it from _close

    # --- receiving ----------------------------------------------------------------------------------

    def _read_loop(self) -> None:
        channel = self.channel
        pending = self.pending
        try:
            while True:
                batch = channel.recv_obj()
                for message in batch:
                    if message[0] == P.REPLY:
                        future = pending.pop(message[1], None)
                        if future is not None and not future.done():
                            future.set_result(message[2])
                    else:
                        self.on_push(message)
        except (ChannelError, EOFError, OSError) as exc:
            self._close(f"the raylet is gone ({type(exc).__name__}: {exc})")
        finally:
            self._stop.set()

    def _flush_loop(self) -> None:
        posted = self._posted
        while not self._stop.is_set():
            if posted.wait(FLUSH_INTERVAL_S):
                time.sleep(POST_DELAY_S)  # let a burst gather
                posted.clear()
                self.flush()
            elif self.added or self.removed or self.escaped or self.actors_added or self.actors_removed:
                self.flush()

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for req in list(self.pending):
            future = self.pending.pop(req, None)
            if future is not None and not future.done():
                future.set_exception(RaySystemError(reason))
        self.on_push((P.EXIT,))

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            self.closed = True
        self.channel.close()


def _drain(queue: deque[Any]) -> list[Any]:
    out = []
    popleft = queue.popleft
    try:
        while True:
            out.append(popleft())
    except IndexError:
        return out
