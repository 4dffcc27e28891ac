"""Worker processes in milliseconds: a pre-imported template process that forks them on request.

Owns: the zygote (a child of the raylet, started with ``spawn_python_child``
so it begins from a clean ``exec``; it imports the worker's modules once and
then waits), the forked workers' process handles (``ForkedProcess``: by pid,
since they are the zygote's children, not the raylet's), and the raylet's end
of the pipe that asks for forks. Must not: run user code (the forked child
becomes a ``detray.real.worker`` and only then meets user code) or decide how
many workers exist (the raylet does).

Theory of operation: starting a Python worker from scratch costs about as
much as importing detray (a quarter of a second here); a fork of a process
that already imported it costs a few milliseconds, and its pages are shared
copy-on-write. The raylet starts the zygote first thing, so its imports run
beside the raylet's own, and tells it (``configure``) what workers need once
it knows (its address, the store). The zygote is single-threaded when it forks (its only other
thread, the parent watch, does not survive a fork and is restarted in the
child), so the child inherits no held lock. Protocol: the raylet writes one
line ``fork\\n`` per worker to the zygote's stdin and does not wait: the
zygote may still be importing; each child connects to the raylet like any
worker and says hello with its pid, which is how the raylet learns it (the
pids the zygote writes back are only drained). A hello from a worker the
raylet did not ask for cannot happen: every connection proves the token. In the child: new session, SIGKILL
when the zygote dies (``PR_SET_PDEATHSIG``; the zygote itself dies with the
raylet), stdin and stdout closed (the zygote's control pipes) and fd 1 pointed
at fd 2 until the worker forwards output to the driver, then
``worker.main``. The zygote ignores SIGCHLD so the kernel reaps its children.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Any

from detray.real.processes import ChildContext, ChildProcess, spawn_python_child

TARGET = "detray.real.zygote:main"
PR_SET_PDEATHSIG = 1
FORK_TIMEOUT_S = 5.0


class ForkedProcess:
    """A worker forked by the zygote, handled by pid (the same interface as ``ChildProcess``)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    @property
    def running(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _state(self.pid) not in ("Z", "X", None)

    @property
    def returncode(self) -> int | None:
        return None if self.running else -1

    def wait(self, timeout_s: float | None = None) -> int:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self.running:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(f"worker pid {self.pid}", timeout_s or 0.0)
            time.sleep(0.01)
        return -1

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s``."""
        for sig, wait_s in ((signal.SIGTERM, 0.5 if timeout_s is None else timeout_s), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            try:
                return self.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        return -1

    def __repr__(self) -> str:
        return f"ForkedProcess(pid={self.pid}, {'running' if self.running else 'exited'})"


def _state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except (OSError, IndexError):
        return None


class Zygote:
    """The raylet's handle on its zygote: ``fork()`` returns a ``ForkedProcess``."""

    def __init__(self, token: bytes, cwd: str, sys_path: list[str]) -> None:
        self.process: ChildProcess = spawn_python_child(
            TARGET,
            token=token,
            name="detray-zygote",
            cwd=cwd,
            sys_path=sys_path,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.process.popen.stdin is not None and self.process.popen.stdout is not None
        self._in: IO[bytes] = self.process.popen.stdin
        self._out: IO[bytes] = self.process.popen.stdout
        os.set_blocking(self._out.fileno(), False)
        self.pending = 0
        """Forks asked for whose worker has not said hello yet."""

    @property
    def alive(self) -> bool:
        return self.process.running

    def configure(self, payload: dict[str, Any]) -> bool:
        """What every worker forked from now on receives (the raylet's address, the store...)."""
        try:
            self._in.write(b"config " + json.dumps(payload).encode() + b"\n")
            self._in.flush()
        except (OSError, ValueError):
            return False
        return True

    def request_fork(self) -> bool:
        """Ask for one more worker without waiting (the zygote may still be importing).
        The worker introduces itself to the raylet with its pid; False when the zygote is gone."""
        try:
            self._in.write(b"fork\n")
            self._in.flush()
        except (OSError, ValueError):
            return False
        self.pending += 1
        return True

    def reply_fd(self) -> int:
        """The zygote's replies (one pid per line): the raylet drains them."""
        return self._out.fileno()

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):
            while os.read(self._out.fileno(), 65536):
                pass

    def take(self, pid: int) -> ForkedProcess | None:
        """The handle of a worker that said hello with ``pid``, if it is one of ours."""
        if self.pending <= 0:
            return None
        self.pending -= 1
        return ForkedProcess(pid)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._in.close()
        self.process.stop(2.0)
        with contextlib.suppress(OSError):
            self._out.close()


def main(context: ChildContext) -> None:
    """The zygote process: import the worker, then fork one on each request."""
    from detray.real import worker  # the point of the zygote: imported once, before any fork

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps forked workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    commands = sys.stdin.buffer
    replies = sys.stdout.buffer
    libc = ctypes.CDLL(None, use_errno=True)
    child_context: ChildContext | None = None
    while True:
        line = commands.readline()
        if not line:
            os._exit(0)  # the raylet closed the pipe (or died)
        if line.startswith(b"config "):
            payload = json.loads(line[len(b"config ") :])
            child_context = ChildContext(
                token=context.token, parent_pid=os.getpid(), name="detray-worker", payload=payload
            )
            continue
        if line.strip() != b"fork" or child_context is None:
            continue
        pid = os.fork()
        if pid == 0:
            _become_worker(child_context, worker, libc)  # never returns
        replies.write(f"{pid}\n".encode())
        replies.flush()


def _become_worker(context: ChildContext, worker: Any, libc: Any) -> None:
    try:
        os.setsid()
        zygote_pid = os.getppid()
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != zygote_pid:
            os._exit(1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.dup2(2, 1)  # fd 1 was the zygote's reply pipe
        os.close(0)
        os.open(os.devnull, os.O_RDONLY)  # fd 0
        sys.stdin = open(os.devnull)  # noqa: SIM115 -- lives as long as the process
        sys.stdout = os.fdopen(1, "w", buffering=1)
        threading.Thread(target=_watch_parent, args=(zygote_pid,), name="detray-parent-watch", daemon=True).start()
        worker.main(context)
    finally:
        os._exit(0)


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(70)
        time.sleep(1.0)
