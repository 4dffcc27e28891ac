"""Child processes of the real runtime: spawned so they die with their parent, stopped so they are reaped.

Owns: forking children that the kernel kills when this process dies
(``spawn_dying_with_parent``, for any binary), starting a Python child that
runs ``module:function`` with the driver's working directory, ``sys.path``
and the cluster token (``spawn_python_child``), and stopping a child
(SIGTERM, then SIGKILL, then reap: ``stop_process``).
Must not: decide which processes exist (the raylet and driver do), put a
secret on a command line or in the environment, or leave a child running or
unreaped.

Theory of operation:

* Dying with the parent: between fork and exec the child asks the kernel to
  SIGKILL it when its parent dies (``prctl(PR_SET_PDEATHSIG)``, as Ray does),
  which covers a parent killed with SIGKILL; it then checks its parent is
  still the one that forked it, closing the window where the parent died
  first. The kernel ties the signal to the *thread* that forked, so a child
  started off the main thread is forked by a helper thread that lives as
  long as the process. Children run in their own session: a Ctrl-C at the
  terminal reaches the driver only. Linux only; elsewhere the Python child's
  parent watch below is the only guard.
* Bootstrap through an inherited pipe: the parent writes a small JSON
  document (working directory, ``sys.path``, the target, the token in hex,
  the parent's pid, a caller's payload) into a fresh pipe *before* it forks,
  closes the write end, and the child reads it to end-of-file from the fd
  whose number is its last argument. Nothing can block (the document fits
  in the pipe, at most ``BOOTSTRAP_BYTES_MAX``), and the token is read once
  and gone: not on the command line (``ps``, ``/proc/PID/cmdline``), and not
  in the environment, which every process the user's code starts would
  inherit (and which stays readable in ``/proc/PID/environ`` for the
  child's whole life).
* In the child, a daemon thread checks once per ``PARENT_CHECK_INTERVAL_S``
  that its parent is still the one that started it and exits at once if not:
  a second guard next to ``PR_SET_PDEATHSIG``, and the only one elsewhere.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import fcntl
import importlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "BOOTSTRAP_BYTES_MAX",
    "ChildContext",
    "ChildProcess",
    "ProcessError",
    "spawn_dying_with_parent",
    "spawn_python_child",
    "stop_process",
]

DEFAULT_STOP_TIMEOUT_S = 5.0
KILL_WAIT_S = 5.0  # after SIGKILL: only a process stuck in the kernel takes longer
SPAWN_TIMEOUT_S = 30.0  # fork + exec on the helper thread
BOOTSTRAP_BYTES_MAX = 1 << 20  # Linux's default /proc/sys/fs/pipe-max-size for unprivileged users
PIPE_DEFAULT_BYTES = 1 << 16
PARENT_CHECK_INTERVAL_S = 1.0
ORPHAN_EXIT_CODE = 70  # the child found its parent gone

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
CHILD_MARKER = "detray-child"  # argv[1] of every Python child: ``ps`` shows what it runs

# Runs in the child with nothing on sys.path but the interpreter's defaults: read the bootstrap
# document, take the driver's directory and sys.path, then hand over to _run_child below.
_BOOTSTRAP_CODE = (
    "import json, os, sys\n"
    "with os.fdopen(int(sys.argv[-1]), 'rb') as f: boot = json.loads(f.read())\n"
    "os.chdir(boot['cwd']); sys.path[:] = boot['sys_path']\n"
    "from detray.real.processes import _run_child\n"
    "_run_child(boot)\n"
)


class ProcessError(RuntimeError):
    """A child process could not be started, or did not stop; the message says which and why."""


# --- spawning a child that dies with this process ---------------------------------------------


def spawn_dying_with_parent(
    args: list[str], *, death_signal: int = signal.SIGKILL, **popen_kwargs: Any
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(args, **popen_kwargs)`` whose child gets ``death_signal`` (default
    SIGKILL) when this process dies; a child that must clean up (the raylet owns shared
    memory) asks for SIGTERM and handles it.

    Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere a plain ``Popen``.
    Called off the main thread, the fork happens on a helper thread that
    lives as long as the process, since the kernel sends the signal when the
    forking *thread* exits. The child runs in a new session.
    """
    for reserved in ("preexec_fn", "start_new_session", "process_group"):
        if reserved in popen_kwargs:
            raise ValueError(f"spawn_dying_with_parent sets {reserved} itself")

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            args,
            preexec_fn=_die_with_parent_preexec(os.getpid(), int(death_signal)),
            start_new_session=True,
            **popen_kwargs,
        )

    if threading.current_thread() is threading.main_thread():
        return spawn()
    return _fork_thread().call(spawn)


_prctl: Any = None


def _die_with_parent_preexec(parent_pid: int, kill_signal: int) -> Callable[[], None] | None:
    global _prctl
    if not sys.platform.startswith("linux"):
        return None
    if _prctl is None:  # resolved in the parent: no dynamic loading between fork and exec
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        prctl.restype = ctypes.c_int
        _prctl = prctl
    prctl = _prctl

    def preexec() -> None:  # runs in the child between fork and exec
        if prctl(PR_SET_PDEATHSIG, kill_signal, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:  # the parent died before the request took effect
            os._exit(1)

    return preexec


class _ForkThread:
    """A daemon thread that lives until the process exits and forks children for other threads."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self._requests: queue.SimpleQueue[_SpawnRequest] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="detray-fork", daemon=True).start()

    def call(self, spawn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        request = _SpawnRequest(spawn)
        self._requests.put(request)
        try:
            ok, value = request.reply.get(timeout=SPAWN_TIMEOUT_S)
        except queue.Empty:
            request.abandoned.set()  # the helper kills the child if the fork completes later
            raise ProcessError(f"forking a child did not finish within {SPAWN_TIMEOUT_S} s") from None
        if ok:
            assert isinstance(value, subprocess.Popen)
            return value
        raise value

    def _serve(self) -> None:
        while True:
            request = self._requests.get()
            try:
                result: tuple[bool, Any] = (True, request.spawn())
            except BaseException as exc:  # handed to the caller, raised there
                result = (False, exc)
            if request.abandoned.is_set() and result[0]:
                stop_process(result[1], stop_timeout_s=0.0)
            request.reply.put(result)


class _SpawnRequest:
    def __init__(self, spawn: Callable[[], subprocess.Popen[bytes]]) -> None:
        self.spawn = spawn
        self.reply: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self.abandoned = threading.Event()


_fork_thread_lock = threading.Lock()
_fork_thread_instance: _ForkThread | None = None


def _fork_thread() -> _ForkThread:
    global _fork_thread_instance
    with _fork_thread_lock:
        if _fork_thread_instance is None or _fork_thread_instance.pid != os.getpid():
            _fork_thread_instance = _ForkThread()
        return _fork_thread_instance


def _reset_after_fork() -> None:  # a forked child has neither the thread nor a sane lock
    global _fork_thread_lock, _fork_thread_instance
    _fork_thread_lock = threading.Lock()
    _fork_thread_instance = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


# --- stopping ---------------------------------------------------------------------------------


def stop_process(
    process: subprocess.Popen[Any],
    *,
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    kill_wait_s: float = KILL_WAIT_S,
    close_pipes: bool = True,
) -> int:
    """SIGTERM, wait up to ``stop_timeout_s``, then SIGKILL and wait up to ``kill_wait_s``; always reaps.

    Returns the exit code (negative: the signal that ended it). Raises
    ``ProcessError`` only for a process that survives SIGKILL (stuck in the
    kernel). Closes the ``Popen``'s pipes unless ``close_pipes`` is False (a
    reader thread still draining the child's output closes its own).
    """
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            process.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            try:
                process.wait(kill_wait_s)
            except subprocess.TimeoutExpired:
                raise ProcessError(
                    f"pid {process.pid} ({_describe(process.args)}) survived SIGKILL for {kill_wait_s} s"
                ) from None
    for stream in (process.stdin, process.stdout, process.stderr) if close_pipes else ():
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    assert process.returncode is not None
    return process.returncode


def _describe(args: Any) -> str:
    if isinstance(args, (list, tuple)) and len(args) > 4 and args[3] == CHILD_MARKER:
        return f"python child {args[4]}"
    return str(args[0] if isinstance(args, (list, tuple)) else args)


# --- a Python child ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChildContext:
    """What a Python child's target function receives as its one argument."""

    token: bytes | None  # the cluster token, or None when the parent passed none
    parent_pid: int
    name: str
    payload: dict[str, Any]  # the parent's JSON payload (addresses, ids, options)


class ChildProcess:
    """A started Python child: ``pid``, ``running``, ``wait()``, ``stop()`` (terminate, kill, reap).

    A child still running when this handle is collected, or at interpreter
    exit, is stopped by a finalizer; and it dies with this process anyway.
    """

    def __init__(self, popen: subprocess.Popen[bytes], *, name: str, stop_timeout_s: float) -> None:
        self.popen = popen
        self.name = name
        self.stop_timeout_s = stop_timeout_s
        self._finalizer = weakref.finalize(self, stop_process, popen, stop_timeout_s=0.5)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def running(self) -> bool:
        return self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout_s: float | None = None) -> int:
        """The exit code once the child exits; ``subprocess.TimeoutExpired`` after ``timeout_s``."""
        return self.popen.wait(timeout_s)

    def stop(self, timeout_s: float | None = None) -> int:
        """SIGTERM, then SIGKILL after ``timeout_s`` (default ``stop_timeout_s``); reaps; the exit code."""
        self._finalizer.detach()
        return stop_process(self.popen, stop_timeout_s=self.stop_timeout_s if timeout_s is None else timeout_s)

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # never shows the token
        return f"ChildProcess({self.name!r}, pid={self.pid}, {'running' if self.running else 'exited'})"


def spawn_python_child(
    target: str,
    *,
    token: bytes | None = None,
    payload: Mapping[str, Any] | None = None,
    name: str | None = None,
    cwd: str | None = None,
    sys_path: list[str] | None = None,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    death_signal: int = signal.SIGKILL,
    **popen_kwargs: Any,
) -> ChildProcess:
    """Start ``python`` running ``target`` (``"package.module:function"``) called with a ``ChildContext``.

    The child starts in ``cwd`` (default: this process's working directory)
    with ``sys.path`` set to ``sys_path`` (default: this process's), so the
    user's own modules import as they do here; it receives ``token`` and
    ``payload`` (JSON-serialisable) through an inherited pipe, never on its
    command line or in its environment; it dies when this process dies.
    Its exit code is 0 when ``target`` returns, 1 when it raises (the
    traceback goes to its stderr). ``popen_kwargs`` (``stdout``,
    ``stderr``...) go to ``subprocess.Popen``.
    """
    module_name, _, function_name = target.partition(":")
    if not module_name or not function_name:
        raise ValueError(f"target must be 'package.module:function', got {target!r}")
    if token is not None and not isinstance(token, bytes):
        raise TypeError(f"token must be bytes or None, got {type(token).__name__}")
    for reserved in ("pass_fds", "close_fds", "cwd", "args"):
        if reserved in popen_kwargs:
            raise ValueError(f"spawn_python_child sets {reserved} itself")
    child_name = name or target
    boot = {
        "cwd": os.getcwd() if cwd is None else os.path.abspath(cwd),
        "sys_path": list(sys.path if sys_path is None else sys_path),
        "target": target,
        "name": child_name,
        "token_hex": None if token is None else token.hex(),
        "parent_pid": os.getpid(),
        "payload": dict(payload or {}),
    }
    try:
        document = json.dumps(boot).encode()
    except (TypeError, ValueError) as exc:
        raise TypeError(f"spawn_python_child({target!r}): payload must be JSON-serialisable: {exc}") from exc
    read_fd = _bootstrap_pipe(document, target)
    try:
        popen = spawn_dying_with_parent(
            [python, "-c", _BOOTSTRAP_CODE, CHILD_MARKER, child_name, str(read_fd)],
            pass_fds=(read_fd,),
            cwd=boot["cwd"],
            env=None if env is None else dict(env),
            death_signal=death_signal,
            **popen_kwargs,
        )
    except OSError as exc:
        raise ProcessError(f"could not start {python} for {target!r}: {exc}") from exc
    finally:
        os.close(read_fd)
    return ChildProcess(popen, name=child_name, stop_timeout_s=stop_timeout_s)


def _bootstrap_pipe(document: bytes, target: str) -> int:
    """A pipe holding ``document`` with its write end closed; returns the read end (non-inheritable)."""
    if len(document) > BOOTSTRAP_BYTES_MAX:
        raise ProcessError(
            f"spawn_python_child({target!r}): the bootstrap document (cwd, sys.path, payload) is "
            f"{len(document)} bytes, over BOOTSTRAP_BYTES_MAX={BOOTSTRAP_BYTES_MAX}; pass less in payload"
        )
    read_fd, write_fd = os.pipe()
    try:
        if len(document) > PIPE_DEFAULT_BYTES and hasattr(fcntl, "F_SETPIPE_SZ"):
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, len(document))
        os.set_blocking(write_fd, False)  # a document that does not fit raises instead of hanging
        view = memoryview(document)
        while view:
            view = view[os.write(write_fd, view) :]
    except OSError as exc:
        os.close(read_fd)
        raise ProcessError(f"spawn_python_child({target!r}): could not write the bootstrap pipe: {exc}") from exc
    finally:
        os.close(write_fd)
    return read_fd


def _watch_parent(parent_pid: int) -> None:
    while True:
        if os.getppid() != parent_pid:
            os._exit(ORPHAN_EXIT_CODE)
        time.sleep(PARENT_CHECK_INTERVAL_S)


def _run_child(boot: dict[str, Any]) -> None:
    """The child's side: watch the parent, import the target, call it, exit."""
    parent_pid = int(boot["parent_pid"])
    if os.getppid() != parent_pid:
        os._exit(ORPHAN_EXIT_CODE)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="detray-parent-watch", daemon=True).start()
    module_name, _, function_name = boot["target"].partition(":")
    function = getattr(importlib.import_module(module_name), function_name)
    token_hex = boot["token_hex"]
    context = ChildContext(
        token=None if token_hex is None else bytes.fromhex(token_hex),
        parent_pid=parent_pid,
        name=boot["name"],
        payload=boot["payload"],
    )
    function(context)
    sys.exit(0)
