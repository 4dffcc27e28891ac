"""Authenticated message channels between detray's processes (driver, raylet, workers).

Owns: the listening socket and its private directory, the per-cluster token
(``new_token``), the mutual challenge-response handshake on every
connection, framing and the message-size bound, and the timeouts that keep a
silent or hostile peer from hanging anyone.
Must not: unpickle, or even read more than a 256-byte handshake frame from, a
peer that has not proved it holds the token; listen beyond loopback unless
told so by ``expose_to_network_unencrypted=True``; decide what the messages
mean (callers choose their serialization: bytes in, bytes out).

Theory of operation:

* Framing and the handshake are the standard library's
  ``multiprocessing.connection``: a frame is a 4-byte big-endian length and
  the payload. The handshake is its HMAC challenge-response, run both ways
  (``deliver_challenge`` then ``answer_challenge`` on the listener,
  the reverse on the client, exactly as ``Listener``/``Client`` with an
  ``authkey`` do): each side sends random bytes and checks the peer's
  HMAC of them under the token (MD5 HMAC on Python 3.11, SHA-256 from
  3.12). Both sides read handshake frames with ``recv_bytes(256)`` and
  compare bytes, so nothing from an unauthenticated peer is ever
  unpickled, nor is more than 256 bytes of it buffered. A ``Channel``
  exists only after both directions succeeded; only then may
  ``recv_obj`` unpickle.
* Not ``Listener.accept()`` itself: it runs the handshake on the calling
  thread with no timeout, so one client that connects and says nothing
  blocks every other. Here an acceptor thread accepts raw connections and
  hands each to its own short-lived handshake thread (at most
  ``MAX_PENDING_HANDSHAKES`` at once; more are closed at once). The acceptor
  wakes every ``ACCEPT_POLL_S`` and shuts down the socket of any handshake
  past its ``handshake_timeout_s`` deadline, which ends it with an error.
  Authenticated channels wait in a bounded queue for ``accept()``.
* Address: by default a Unix domain socket in a fresh ``0700`` directory
  (``tempfile.mkdtemp``) that only this user can enter, removed with the
  socket at ``close()`` (or interpreter exit). ``family="tcp"`` binds
  ``127.0.0.1`` (or another loopback address) for a later multi-node mode;
  any other host needs ``expose_to_network_unencrypted=True``: the traffic
  is authenticated, not encrypted.
* Size bound: ``max_message_bytes`` on both sides. Sending more raises
  ``MessageTooLarge`` before a byte is sent; receiving a larger frame
  header closes the channel (the stream cannot be resynchronised) and
  raises ``MessageTooLarge``, without reading or allocating the payload.
* The token: ``secrets.token_bytes(32)``, one per cluster. Children get it
  through ``detray.real.processes.spawn_python_child`` (an inherited pipe,
  never argv or the environment).
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import logging
import multiprocessing
import multiprocessing.connection as mpc
import os
import pickle
import queue
import secrets
import shutil
import socket
import struct
import tempfile
import threading
import time
import weakref
from typing import Any, Literal

__all__ = [
    "AuthenticationFailed",
    "Channel",
    "ChannelAddress",
    "ChannelClosed",
    "ChannelError",
    "ChannelListener",
    "ChannelTimeout",
    "MessageTooLarge",
    "connect",
    "new_token",
]

TOKEN_BYTES = 32
TOKEN_BYTES_MIN = 16
DEFAULT_MAX_MESSAGE_BYTES = 64 << 20  # control messages; large objects travel through the object store
DEFAULT_CONNECT_TIMEOUT_S = 5.0
DEFAULT_HANDSHAKE_TIMEOUT_S = 5.0
MAX_PENDING_HANDSHAKES = 64
ACCEPT_QUEUE_MAX = 1024  # authenticated channels not yet taken by accept()
ACCEPT_POLL_S = 0.1
LISTEN_BACKLOG = 128
UNIX_PATH_BYTES_MAX = 107  # sun_path is 108 bytes with the terminating NUL
SOCKET_NAME = "sock"

log = logging.getLogger(__name__)


class ChannelError(RuntimeError):
    """A channel failed; the message names the address and what went wrong."""


class AuthenticationFailed(ChannelError):
    """The peer did not prove it holds the cluster token (or did not accept ours)."""


class ChannelClosed(ChannelError, EOFError):
    """The channel is closed: by us, by the peer, or after an oversized message."""


class ChannelTimeout(ChannelError, TimeoutError):
    """Connecting, the handshake, ``accept`` or ``recv`` did not finish in time."""


class MessageTooLarge(ChannelError, ValueError):
    """A message over ``max_message_bytes``; a received one also closes the channel."""


def new_token() -> bytes:
    """A fresh per-cluster token: 32 random bytes from ``secrets``."""
    return secrets.token_bytes(TOKEN_BYTES)


def _check_token(token: bytes) -> bytes:
    if not isinstance(token, bytes):
        raise TypeError(f"the cluster token must be bytes, got {type(token).__name__}")
    if len(token) < TOKEN_BYTES_MIN:
        raise ValueError(f"the cluster token must be at least {TOKEN_BYTES_MIN} bytes, got {len(token)}")
    return token


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


# --- addresses --------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChannelAddress:
    """Where a listener is: ``unix:/path`` or ``tcp:host:port`` (``str()`` and ``parse`` round-trip)."""

    family: Literal["unix", "tcp"]
    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        host = f"[{self.host}]" if self.host is not None and ":" in self.host else self.host
        return f"tcp:{host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> ChannelAddress:
        family, _, rest = text.partition(":")
        if family == "unix" and rest:
            return cls(family="unix", path=rest)
        if family == "tcp":
            host, _, port = rest.rpartition(":")
            if host and port.isdigit():
                return cls(family="tcp", host=host.strip("[]"), port=int(port))
        raise ValueError(f"not a channel address (unix:/path or tcp:host:port): {text!r}")


# --- a channel --------------------------------------------------------------------------------


class Channel:
    """One authenticated, framed, two-way connection. Built only by ``connect`` and ``ChannelListener``.

    ``send_bytes``/``recv_bytes`` carry bytes; ``send_obj``/``recv_obj``
    pickle (the peer has proved it holds the cluster token). Sends are
    serialised by one lock and receives by another, so threads may share a
    channel. ``recv_bytes(timeout_s)`` waits for a message to start; an
    authenticated peer that stalls mid-message is trusted to finish it.
    """

    def __init__(self, connection: mpc.Connection, *, max_message_bytes: int, peer: str) -> None:
        self._connection = connection
        self.max_message_bytes = max_message_bytes
        self.peer = peer
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()

    def send_bytes(self, payload: bytes | bytearray | memoryview) -> None:
        size_bytes = memoryview(payload).nbytes
        if size_bytes > self.max_message_bytes:
            raise MessageTooLarge(
                f"message to {self.peer} is {size_bytes} bytes, over max_message_bytes={self.max_message_bytes}"
            )
        with self._send_lock:
            try:
                self._connection.send_bytes(payload)
            except OSError as exc:
                raise ChannelClosed(f"channel to {self.peer}: send failed: {exc}") from exc

    def recv_bytes(self, timeout_s: float | None = None) -> bytes:
        """The next message; ``ChannelTimeout`` if none starts within ``timeout_s`` (``None``: wait)."""
        with self._recv_lock:
            try:
                ready = timeout_s is None or self._connection.poll(timeout_s)
                if ready:
                    return self._connection.recv_bytes(self.max_message_bytes)
            except EOFError:
                raise ChannelClosed(f"channel to {self.peer} was closed by the peer") from None
            except OSError as exc:
                if str(exc) == "bad message length":  # raised after reading the header only
                    self.close()
                    raise MessageTooLarge(
                        f"message from {self.peer} is over max_message_bytes={self.max_message_bytes}; "
                        "the channel is closed"
                    ) from None
                raise ChannelClosed(f"channel to {self.peer}: receive failed: {exc}") from exc
            raise ChannelTimeout(f"no message from {self.peer} within {timeout_s} s")

    def send_obj(self, obj: Any) -> None:
        """``pickle`` ``obj`` (highest protocol) and send it."""
        self.send_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def recv_obj(self, timeout_s: float | None = None) -> Any:
        """Receive a message and unpickle it (only authenticated peers reach this)."""
        return pickle.loads(self.recv_bytes(timeout_s))

    def poll(self, timeout_s: float = 0.0) -> bool:
        """Whether a message (or end-of-file) is ready within ``timeout_s``."""
        try:
            return self._connection.poll(timeout_s)
        except OSError as exc:
            raise ChannelClosed(f"channel to {self.peer}: {exc}") from exc

    def fileno(self) -> int:
        """The socket's fd, for ``select``/``multiprocessing.connection.wait``."""
        return self._connection.fileno()

    @property
    def closed(self) -> bool:
        return self._connection.closed

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._connection.close()

    def __enter__(self) -> Channel:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Channel({self.peer}, {'closed' if self.closed else 'open'})"


# --- the client side --------------------------------------------------------------------------


def connect(
    address: ChannelAddress | str,
    token: bytes,
    *,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
) -> Channel:
    """Connect to a ``ChannelListener`` and authenticate both ways; an open ``Channel``.

    Raises ``ChannelTimeout`` when connecting or a handshake read takes
    longer than its timeout, ``AuthenticationFailed`` when either side's
    proof fails, ``ChannelError`` when nothing listens there.
    """
    _check_token(token)
    _check_positive("connect_timeout_s", connect_timeout_s)
    _check_positive("handshake_timeout_s", handshake_timeout_s)
    if isinstance(address, str):
        address = ChannelAddress.parse(address)
    if address.family == "unix":
        assert address.path is not None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address.path
    else:
        assert address.host is not None and address.port is not None
        sock = socket.socket(socket.AF_INET6 if ":" in address.host else socket.AF_INET, socket.SOCK_STREAM)
        target = (address.host, address.port)
    try:
        sock.settimeout(connect_timeout_s)
        try:
            sock.connect(target)
        except TimeoutError:
            raise ChannelTimeout(f"connecting to {address} took over {connect_timeout_s} s") from None
        except OSError as exc:
            raise ChannelError(f"cannot connect to {address}: {exc}") from exc
        sock.settimeout(None)
        _set_io_timeouts(sock, handshake_timeout_s)  # bounds every handshake read and write
    except BaseException:
        sock.close()
        raise
    connection = mpc.Connection(sock.detach())
    try:
        mpc.answer_challenge(connection, token)
        mpc.deliver_challenge(connection, token)
        _set_io_timeouts_fd(connection.fileno(), 0.0)  # 0: block without limit again
    except BaseException as exc:
        connection.close()
        raise _handshake_error(exc, f"handshake with {address}", handshake_timeout_s) from None
    return Channel(connection, max_message_bytes=max_message_bytes, peer=str(address))


def _set_io_timeouts(sock: socket.socket, timeout_s: float) -> None:
    timeval = struct.pack("ll", int(timeout_s), int((timeout_s % 1) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


def _set_io_timeouts_fd(fd: int, timeout_s: float) -> None:
    sock = socket.socket(fileno=fd)
    try:
        _set_io_timeouts(sock, timeout_s)
    finally:
        sock.detach()


def _handshake_error(exc: BaseException, where: str, timeout_s: float) -> ChannelError:
    if isinstance(exc, multiprocessing.AuthenticationError | AssertionError):  # 3.11 asserts the challenge prefix
        return AuthenticationFailed(f"{where}: wrong cluster token ({exc or 'bad challenge'})")
    if isinstance(exc, BlockingIOError | TimeoutError):  # SO_RCVTIMEO expired
        return ChannelTimeout(f"{where}: the peer was silent for {timeout_s} s (handshake_timeout_s)")
    if isinstance(exc, EOFError | OSError):
        return AuthenticationFailed(f"{where}: the peer closed the connection during the handshake ({exc!r})")
    if isinstance(exc, ChannelError):
        return exc
    return ChannelError(f"{where}: {exc!r}")


# --- the listening side -----------------------------------------------------------------------


class _PendingHandshake:
    def __init__(self, fd: int, deadline: float) -> None:
        self.fd = fd
        self.deadline = deadline
        self.done = False
        self.timed_out = False


class ChannelListener:
    """Accepts authenticated channels on a private Unix socket (default) or a loopback TCP port.

    ``accept(timeout_s)`` returns the next authenticated ``Channel``; clients
    that fail or stall in the handshake never reach it, and never hold up
    others. ``address`` (a ``ChannelAddress``, picklable, ``str()`` for
    passing on) is what ``connect`` takes. ``close()`` stops accepting,
    closes channels not yet accepted, and removes the socket and its
    directory. ``handshake_failures`` counts refused connections.
    """

    def __init__(
        self,
        token: bytes,
        *,
        family: Literal["unix", "tcp"] = "unix",
        host: str = "127.0.0.1",
        port: int = 0,
        socket_dir_parent: str | None = None,
        expose_to_network_unencrypted: bool = False,
        handshake_timeout_s: float = DEFAULT_HANDSHAKE_TIMEOUT_S,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        max_pending_handshakes: int = MAX_PENDING_HANDSHAKES,
    ) -> None:
        self._token = _check_token(token)
        _check_positive("handshake_timeout_s", handshake_timeout_s)
        _check_positive("max_message_bytes", max_message_bytes)
        _check_positive("max_pending_handshakes", max_pending_handshakes)
        self.handshake_timeout_s = handshake_timeout_s
        self.max_message_bytes = max_message_bytes
        self.max_pending_handshakes = max_pending_handshakes
        self.handshake_failures = 0
        self._socket_dir: str | None = None
        if family == "unix":
            self._socket, self.address, self._socket_dir = _unix_socket(socket_dir_parent)
        elif family == "tcp":
            self._socket, self.address = _tcp_socket(host, port, expose_to_network_unencrypted)
        else:
            raise ValueError(f"family must be 'unix' or 'tcp', got {family!r}")
        self._socket.settimeout(ACCEPT_POLL_S)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pending: set[_PendingHandshake] = set()
        self._ready: queue.Queue[Channel] = queue.Queue(ACCEPT_QUEUE_MAX)
        self._finalizer = weakref.finalize(self, _remove_socket, self._socket, self._socket_dir)
        self._acceptor = threading.Thread(target=self._accept_loop, name=f"detray-accept {self.address}", daemon=True)
        self._acceptor.start()

    def accept(self, timeout_s: float | None = None) -> Channel:
        """The next authenticated channel; ``ChannelTimeout`` after ``timeout_s``, ``ChannelClosed`` once closed."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self._closed.is_set():
                raise ChannelClosed(f"listener {self.address} is closed")
            wait_s = ACCEPT_POLL_S if deadline is None else min(ACCEPT_POLL_S, deadline - time.monotonic())
            try:
                return self._ready.get(timeout=max(wait_s, 0.0))
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise ChannelTimeout(
                        f"no authenticated connection to {self.address} within {timeout_s} s"
                    ) from None

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        """Stop accepting; close unaccepted channels; remove the socket file and its directory."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._acceptor is not threading.current_thread():
            self._acceptor.join()
        with self._lock:
            for pending in self._pending:
                _shutdown_fd(pending.fd)
        while True:
            try:
                self._ready.get_nowait().close()
            except queue.Empty:
                break
        self._finalizer()

    def __enter__(self) -> ChannelListener:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ChannelListener({self.address}, {'closed' if self.closed else 'open'})"

    # --- internals

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            self._expire_handshakes()
            try:
                sock, peer = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._closed.is_set():
                    return
                log.exception("accept on %s failed", self.address)
                time.sleep(ACCEPT_POLL_S)  # e.g. EMFILE: do not spin
                continue
            sock.setblocking(True)
            with self._lock:
                if len(self._pending) >= self.max_pending_handshakes:
                    self.handshake_failures += 1
                    log.warning("%s: %d handshakes pending, refusing a connection", self.address, len(self._pending))
                    sock.close()
                    continue
                pending = _PendingHandshake(sock.detach(), time.monotonic() + self.handshake_timeout_s)
                self._pending.add(pending)
            peer_name = f"{self.address} peer {peer}" if peer else f"{self.address} peer"
            threading.Thread(
                target=self._handshake, args=(pending, peer_name), name="detray-handshake", daemon=True
            ).start()

    def _expire_handshakes(self) -> None:
        now = time.monotonic()
        with self._lock:
            for pending in self._pending:
                if not pending.done and not pending.timed_out and now >= pending.deadline:
                    pending.timed_out = True
                    _shutdown_fd(pending.fd)  # the handshake thread's read ends with EOF

    def _handshake(self, pending: _PendingHandshake, peer_name: str) -> None:
        connection = mpc.Connection(pending.fd)
        error: BaseException | None = None
        try:
            mpc.deliver_challenge(connection, self._token)
            mpc.answer_challenge(connection, self._token)
        except BaseException as exc:  # any failure refuses this peer only
            error = exc
        with self._lock:
            pending.done = True
            self._pending.discard(pending)
            if error is not None or self._closed.is_set():
                self.handshake_failures += 1
        if error is not None or self._closed.is_set():
            connection.close()
            if error is not None:
                reason = "timed out" if pending.timed_out else repr(_handshake_error(error, peer_name, 0))
                log.info("%s: refused (%s)", peer_name, reason)
            return
        channel = Channel(connection, max_message_bytes=self.max_message_bytes, peer=peer_name)
        try:
            self._ready.put(channel, timeout=self.handshake_timeout_s)
        except queue.Full:
            log.warning("%s: %d channels wait for accept(); closing a new one", self.address, ACCEPT_QUEUE_MAX)
            channel.close()
        else:
            if self._closed.is_set():  # close() may have drained the queue already
                with contextlib.suppress(queue.Empty):
                    self._ready.get_nowait().close()


def _shutdown_fd(fd: int) -> None:
    sock = socket.socket(fileno=fd)
    try:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    finally:
        sock.detach()


def _unix_socket(parent: str | None) -> tuple[socket.socket, ChannelAddress, str]:
    directory = tempfile.mkdtemp(prefix="detray-ch-", dir=parent)  # mode 0700, a fresh name
    path = os.path.join(directory, SOCKET_NAME)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if len(os.fsencode(path)) > UNIX_PATH_BYTES_MAX:
            raise ValueError(
                f"Unix socket path {path!r} is over {UNIX_PATH_BYTES_MAX} bytes; "
                "pass a shorter socket_dir_parent (or set TMPDIR)"
            )
        sock.bind(path)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return sock, ChannelAddress(family="unix", path=path), directory


def _tcp_socket(host: str, port: int, expose: bool) -> tuple[socket.socket, ChannelAddress]:
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be an IP address literal, got {host!r}") from None
    if not ip.is_loopback and not expose:
        raise ValueError(
            f"refusing to listen on {host}: not a loopback address. Channels are authenticated but not "
            "encrypted; pass expose_to_network_unencrypted=True to listen there anyway"
        )
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be in 0..65535 (0: pick a free one), got {port}")
    sock = socket.socket(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    bound_port: int = sock.getsockname()[1]
    return sock, ChannelAddress(family="tcp", host=host, port=bound_port)


def _remove_socket(sock: socket.socket, directory: str | None) -> None:
    sock.close()
    if directory is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, SOCKET_NAME))
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(directory)

