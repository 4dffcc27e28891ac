"""A process's connection to its raylet: batched sends, request/reply, pushed messages, ref changes.

Owns: the one authenticated channel of a driver or worker process to the
raylet, the lock that makes sending thread-safe, reading the channel
(completing replies by request number, handing pushed messages such as
worker assignments, task runs and printed lines to the process's handler),
and the queue of reference changes the ``ObjectRef``/``ActorHandle`` hooks
record. Must not: interpret values or decide anything.

Theory of operation, sending: every send takes the recorded reference
changes first and ships them in the same batch (``protocol.REFS`` before the
message), so the raylet counts a ref before it sees the call that depends on
it (the core counts a return id's handle before its task is submitted).
Calls that wait for nothing (task submissions, puts, kills) are *posted*:
they join an outbox that goes out with the next ``send`` (a ``get`` flushes
it first, so order holds), when ``POST_BATCH_MAX`` wait, or by the flusher
thread: the first post after a quiet spell wakes it and it sends after
``POST_DELAY_S``; while posts keep coming it polls every ``POST_POLL_S``
instead, so a loop of submit-then-get (whose get sends the submission)
wakes it for nothing. A burst of submissions thus reaches the raylet as a
few large batches, one read and one reference event each, not one per
task. The flusher also sends reference changes left over after
``FLUSH_INTERVAL_S`` (a program that drops refs and then idles still frees
its objects). When the channel closes, every pending reply fails with
``RaySystemError``, so no caller waits forever on a raylet that is gone.

Theory of operation, receiving. One thread at a time reads the channel (the
*reader*) and handles each batch completely, in order, before another may
read, so no message is lost or reordered. In a driver a reader thread reads
all the time: its main thread must not, as a signal handler (Ctrl-C, an
alarm) may raise there at any bytecode and a frame read halfway would
desynchronise the channel. In a worker (``main_thread_reads=True``) the main
thread runs the tasks and is also the reader whenever it is idle: it waits
for its next run in ``next_main_item`` by reading the channel itself, so a
run reaches it with no hand-off between threads (each costs a wake-up and
tens of microseconds; the worker's SIGINT handler raises only in task code).
``on_push`` returns what is for the main thread (a run, an assignment) and
it is queued for ``next_main_item``; other pushes are handled where they are
read. While the main thread runs something, a helper thread becomes the
reader when anything needs one: at once when a thread waits for a reply (a
nested ``get``), else once nothing has been read for a whole
``HELPER_POLL_S`` while the main thread is busy (a long task: cancels and a
dead raylet are then noticed within two polls). The helper gives the
reader's role back when the main thread waits for work (it has then handed
it the next run through the queue, as a driver's reader thread would). Short
tasks back to back thus cost no thread switch at all; the helper wakes every
``HELPER_POLL_S`` while tasks come and sleeps once the main thread has been
idle for ``HELPER_IDLE_POLLS`` polls.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import select
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
"""How long the first posted message after a quiet spell waits for company before the flusher sends it."""
POST_POLL_S = 0.002
"""While messages keep being posted, how often the flusher sends what no send took meanwhile."""
POST_BATCH_MAX = 256
"""Posted messages sent at once when this many wait."""
HELPER_POLL_S = 0.005
"""How often a worker's helper looks whether the main thread has been busy (not reading) too long."""
HELPER_IDLE_POLLS = 20
"""Polls that find the main thread idle (reading itself) before the helper sleeps until it is busy again."""

_MAIN = "main"
_HELPER = "helper"


class RayletConnection:
    """See the module docstring.

    ``on_push(message)`` runs on whichever thread reads; with
    ``main_thread_reads`` what it returns (unless ``None``) is queued for
    ``next_main_item``, which only the main thread calls.
    """

    def __init__(
        self, channel: Channel, on_push: Callable[[P.Message], object], *, main_thread_reads: bool = False
    ) -> None:
        self.channel = channel
        self.on_push = on_push
        self.main_thread_reads = main_thread_reads
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
        self._posts = 0  # messages posted so far (the flusher compares it between its polls)
        self._flusher_quiet = True  # waiting to be woken by a post, not polling (changed under ``lock``)
        self._stop = threading.Event()
        self._readable = select.poll()  # used by the reader only, so by one thread at a time
        self._readable.register(channel.fileno(), select.POLLIN)
        # Who reads (main_thread_reads only); all of it guarded by _state.
        self._state = threading.Lock()
        self._main_wakeup = threading.Condition(self._state)
        self._helper_wakeup = threading.Condition(self._state)
        self._reader: str | None = None
        self._main_items: deque[object] = deque()
        self._main_busy = True  # until it first asks for an item
        self._main_waiting = False  # in next_main_item while the helper reads
        self._batches_read = 0  # by any reader (the helper compares it between its polls)
        self._reader_wanted = False
        self._helper_sleeping = False  # waiting without a timeout
        loop = self._helper_loop if main_thread_reads else self._read_loop
        self.reader = threading.Thread(target=loop, name="detray-raylet-reader", daemon=True)
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
            self._posts += 1
            if len(outbox) >= POST_BATCH_MAX:
                self.outbox = []
                self._write(outbox)
            elif self._flusher_quiet and not self._posted.is_set():
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
        if self.main_thread_reads:
            self._want_reader()
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

    def _read_batch(self) -> list[object]:
        """Read one batch and handle it: replies complete their futures, pushes go to ``on_push``.
        The items ``on_push`` returned, in order. Only the reader calls this."""
        try:
            # Wait in poll, not in read: a thread blocked in read on a Unix socket is also woken
            # (for nothing) each time the raylet reads what this process sent; poll filters that.
            self._readable.poll()
            batch = self.channel.recv_obj()
        except (ChannelError, EOFError, OSError) as exc:
            self._close(f"the raylet is gone ({type(exc).__name__}: {exc})")
            return []
        self._batches_read += 1  # only the reader writes it
        items: list[object] = []
        pending = self.pending
        for message in batch:
            if message[0] == P.REPLY:
                future = pending.pop(message[1], None)
                if future is not None and not future.done():
                    future.set_result(message[2])
            else:
                item = self.on_push(message)
                if item is not None:
                    items.append(item)
        return items

    def _read_loop(self) -> None:
        try:
            while not self.closed:
                self._read_batch()
        finally:
            self._stop.set()

    def next_main_item(self) -> object:
        """The next item ``on_push`` returned for the main thread, in order (main thread only).

        Reads the channel itself while no other thread does; raises
        ``RaySystemError`` once the channel is closed and nothing is left.
        """
        assert self.main_thread_reads
        state = self._state
        with state:
            self._main_busy = False
            try:
                items = self._main_items
                while not items:
                    if self.closed:
                        raise RaySystemError(self.close_reason)
                    if self._reader is None:
                        self._reader = _MAIN
                        self._reader_wanted = False
                        state.release()
                        try:
                            new = self._read_batch()
                        finally:
                            state.acquire()
                            self._reader = None
                        items.extend(new)
                        continue
                    self._main_waiting = True  # the helper reads; it hands over the role at its next batch
                    try:
                        self._main_wakeup.wait()
                    finally:
                        self._main_waiting = False
                return items.popleft()
            finally:
                self._main_busy = True
                if self._helper_sleeping:
                    self._helper_wakeup.notify()

    def _want_reader(self) -> None:
        """A reply is awaited: if nobody reads (the main thread is busy), wake the helper to."""
        with self._state:
            if self._reader is None and not self._reader_wanted:
                self._reader_wanted = True
                self._helper_wakeup.notify()

    def _helper_loop(self) -> None:
        state = self._state
        wakeup = self._helper_wakeup
        read_at_poll = -1  # batches read when the last poll found the main thread busy and nobody reading
        idle_polls = 0
        try:
            with state:
                while not self.closed and not self._stop.is_set():
                    if self._reader is None and self._main_busy:
                        idle_polls = 0
                        if self._reader_wanted or self._batches_read == read_at_poll:
                            read_at_poll = -1
                            self._read_as_helper()  # nothing was read for a whole poll, or a reply is awaited
                            continue
                        read_at_poll = self._batches_read
                        wakeup.wait(HELPER_POLL_S)
                        continue
                    read_at_poll = -1
                    if idle_polls < HELPER_IDLE_POLLS:
                        idle_polls += 1
                        wakeup.wait(HELPER_POLL_S)
                        continue
                    self._helper_sleeping = True
                    try:
                        wakeup.wait()
                    finally:
                        self._helper_sleeping = False
                    idle_polls = 0
        finally:
            self._stop.set()

    def _read_as_helper(self) -> None:
        """Be the reader until the main thread waits for work (called and returns with ``_state`` held)."""
        state = self._state
        self._reader = _HELPER
        self._reader_wanted = False
        try:
            while True:
                state.release()
                try:
                    new = self._read_batch()
                finally:
                    state.acquire()
                self._main_items.extend(new)
                if self._main_waiting or self.closed:
                    return
        finally:
            self._reader = None
            if self._main_waiting:
                self._main_wakeup.notify()

    def _flush_loop(self) -> None:
        # Quiet: the first post wakes it; it lets a burst gather for POST_DELAY_S and sends it.
        # Busy (posts keep coming): it polls every POST_POLL_S instead, so a program that submits
        # and then gets (which sends the submission itself) costs it no wake-up per call.
        posted = self._posted
        posts_seen = 0
        refs_flushed_at = time.monotonic()
        while not self._stop.is_set():
            if self._flusher_quiet:
                if posted.wait(FLUSH_INTERVAL_S):
                    with self.lock:
                        posted.clear()
                        self._flusher_quiet = False
                        posts_seen = self._posts
                    time.sleep(POST_DELAY_S)  # let a burst gather
                    self.flush()
                elif self.added or self.removed or self.escaped or self.actors_added or self.actors_removed:
                    self.flush()
                refs_flushed_at = time.monotonic()
                continue
            time.sleep(POST_POLL_S)
            now = time.monotonic()
            if self.outbox or now - refs_flushed_at >= FLUSH_INTERVAL_S:
                self.flush()
                refs_flushed_at = now
            with self.lock:
                if self._posts == posts_seen and not self.outbox:
                    self._flusher_quiet = True  # nothing posted for a whole poll: wait for the next post
                posts_seen = self._posts

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        for req in list(self.pending):
            future = self.pending.pop(req, None)
            if future is not None and not future.done():
                future.set_exception(RaySystemError(reason))
        item = self.on_push((P.EXIT,))
        if self.main_thread_reads:
            with self._state:
                if item is not None:
                    self._main_items.append(item)
                self._main_wakeup.notify()
                self._helper_wakeup.notify()

    def close(self) -> None:
        self._stop.set()
        with self.lock:
            self.closed = True
        self.channel.close()
        if self.main_thread_reads:
            with self._state:
                self._main_wakeup.notify()
                self._helper_wakeup.notify()


def _drain(queue: deque[Any]) -> list[Any]:
    out = []
    popleft = queue.popleft
    try:
        while True:
            out.append(popleft())
    except IndexError:
        return out
