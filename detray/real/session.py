"""Session files: how to reach the private clusters this user's drivers started (Ray's ``session_latest``).

Owns: where session files live, their format, writing and removing one, and
telling a live session from a stale one. Must not: start or stop anything,
talk to Redis, or ever put the password anywhere but the file itself (no
log line, no ``repr``, no exception message).

Theory of operation: a driver that starts a private cluster calls
``write(...)`` once the cluster answers, and ``remove(path)`` when it stops
it. The file, ``session-<cluster id>.json``, holds the Redis host, port and
password, the cluster id, the driver's pid (with the kernel's start time of
that process, so a reused pid does not look alive) and the wall-clock start
time. It is written to a temporary name and renamed, so a reader never sees
half a file, and it is mode 0600 in a directory of mode 0700 owned by this
user: only this user (and root) can read the password.

The directory is ``$DETRAY_SESSION_DIR`` when set, else
``$XDG_RUNTIME_DIR/detray`` when that runtime directory exists and is ours
(a per-user tmpfs on systemd machines, removed at logout), else
``/tmp/detray-<uid>``. It is a fixed ``/tmp`` (not ``$TMPDIR``), as Ray's
``/tmp/ray``, so a shell with another ``TMPDIR`` finds the same sessions.
A directory that is not ours, or a symlink, is refused (``SessionError``):
someone else could read what we write there.

A driver killed with SIGKILL cannot remove its file. Readers
(``find_live``) therefore check that the driver is still running and remove
the files of drivers that are gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SESSION_DIR_ENV",
    "Session",
    "SessionError",
    "driver_alive",
    "find_live",
    "read",
    "remove",
    "session_dir",
    "write",
]

SESSION_DIR_ENV = "DETRAY_SESSION_DIR"
"""Overrides the directory of session files (tests; several users of one account)."""
FORMAT_VERSION = 1
SESSION_FILE_BYTES_MAX = 64 * 1024
"""A session file is a few hundred bytes; anything larger is not ours and is not read."""
_FILE_PREFIX = "session-"
_FILE_SUFFIX = ".json"
_CLUSTER_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class SessionError(OSError):
    """The session directory or file cannot be used safely (names the path, never the password)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    """One session file's contents. ``repr`` and ``public()`` leave the password out."""

    path: Path
    cluster_id: str
    redis_host: str
    redis_port: int
    redis_password: str = field(repr=False)
    driver_pid: int
    driver_start_ticks: int | None
    """The driver's start time in clock ticks since boot (``/proc/PID/stat``), to detect a reused pid."""
    started_at_s: float
    """Wall-clock (Unix) time the driver wrote the file."""

    @property
    def redis_address(self) -> str:
        return f"{self.redis_host}:{self.redis_port}"

    def is_live(self) -> bool:
        return driver_alive(self.driver_pid, self.driver_start_ticks)

    def public(self) -> dict[str, Any]:
        """Everything but the password, for display and ``--json``."""
        return {
            "path": str(self.path),
            "cluster_id": self.cluster_id,
            "redis_address": self.redis_address,
            "driver_pid": self.driver_pid,
            "started_at_s": self.started_at_s,
        }


# --- the directory ---------------------------------------------------------------------------


def session_dir() -> Path:
    """Where session files live (see the module docstring); read from the environment at each call."""
    override = os.environ.get(SESSION_DIR_ENV, "").strip()
    if override:
        return Path(override)
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "").strip()
    if runtime_dir:
        try:
            info = os.stat(runtime_dir)
        except OSError:
            info = None
        if info is not None and stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid():
            return Path(runtime_dir) / "detray"
    return Path("/tmp") / f"detray-{os.getuid()}"


def _check_dir(path: Path, *, create: bool) -> bool:
    """``True`` if ``path`` is a directory only we can use (tightened to 0700 if it is ours but wider).

    ``False`` if it does not exist and ``create`` is false. Raises
    ``SessionError`` if it is a symlink, not a directory, or not ours.
    """
    if create:
        with contextlib.suppress(FileExistsError):
            os.makedirs(path, mode=0o700)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        if create:
            raise SessionError(f"the session directory {path} vanished while being created") from None
        return False
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise SessionError(f"the session directory {path} is not a directory (a symlink or a file): refusing it")
    if info.st_uid != os.getuid():
        raise SessionError(
            f"the session directory {path} belongs to uid {info.st_uid}, not to this user ({os.getuid()}): "
            f"refusing it (set {SESSION_DIR_ENV} to a directory of your own)"
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return True


# --- the driver's liveness ---------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in ticks) of ``pid`` from ``/proc``; ``None`` if unreadable."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) ": comm may hold spaces and ')'
    try:
        return fields[0], int(fields[19])  # fields 3 and 22 of proc(5)
    except (IndexError, ValueError):
        return None


def driver_alive(pid: int, start_ticks: int | None) -> bool:
    """Whether process ``pid`` runs and is the one that started at ``start_ticks`` (when known)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, another user's: only a reused pid can be another user's; /proc tells below
    proc = _proc_stat(pid)
    if proc is None:
        return True  # no /proc: the signal check is all we have
    state, ticks = proc
    if state in ("Z", "X"):
        return False
    return start_ticks is None or ticks == start_ticks


# --- writing, reading, removing ----------------------------------------------------------------


def write(
    *,
    cluster_id: str,
    redis_host: str,
    redis_port: int,
    redis_password: str,
    driver_pid: int | None = None,
    started_at_s: float | None = None,
    directory: Path | None = None,
) -> Path:
    """Record how to reach cluster ``cluster_id``; returns the file's path (give it to ``remove``).

    ``driver_pid`` defaults to this process, ``started_at_s`` to now. Raises
    ``SessionError`` (an ``OSError``) if the directory is not safe to use.
    """
    if not _CLUSTER_ID.fullmatch(cluster_id):
        raise ValueError(f"a cluster id for a session file is 1 to 128 of [A-Za-z0-9_.-], got {cluster_id!r}")
    if not 0 < redis_port < 65536:
        raise ValueError(f"redis_port must be in 1..65535, got {redis_port}")
    if not redis_password:
        raise ValueError("a session needs the Redis password: a cluster without one is not reachable")
    pid = os.getpid() if driver_pid is None else driver_pid
    proc = _proc_stat(pid)
    document = {
        "version": FORMAT_VERSION,
        "cluster_id": cluster_id,
        "redis_host": redis_host,
        "redis_port": redis_port,
        "redis_password": redis_password,
        "driver_pid": pid,
        "driver_start_ticks": None if proc is None else proc[1],
        "started_at_s": time.time() if started_at_s is None else started_at_s,
    }
    folder = session_dir() if directory is None else directory
    _check_dir(folder, create=True)
    path = folder / f"{_FILE_PREFIX}{cluster_id}{_FILE_SUFFIX}"
    temporary = folder / f".{_FILE_PREFIX}{cluster_id}.{os.getpid()}.{time.monotonic_ns()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # whatever the umask
            json.dump(document, handle, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return path


def remove(path: Path | str) -> None:
    """Remove a session file (at shutdown); a file already gone is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read(path: Path | str) -> Session | None:
    """The session in ``path``; ``None`` if it is missing, malformed, or not a private file of ours."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            return None
        raw = handle.read(SESSION_FILE_BYTES_MAX + 1)
    if len(raw) > SESSION_FILE_BYTES_MAX:
        return None
    try:
        document = json.loads(raw)
        return _session(path, document)
    except (ValueError, TypeError, KeyError):
        return None


def _session(path: Path, document: Any) -> Session:
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise ValueError("not a detray session document of this version")
    ticks = document.get("driver_start_ticks")
    session = Session(
        path=path,
        cluster_id=str(document["cluster_id"]),
        redis_host=str(document["redis_host"]),
        redis_port=int(document["redis_port"]),
        redis_password=str(document["redis_password"]),
        driver_pid=int(document["driver_pid"]),
        driver_start_ticks=None if ticks is None else int(ticks),
        started_at_s=float(document["started_at_s"]),
    )
    if not _CLUSTER_ID.fullmatch(session.cluster_id) or not 0 < session.redis_port < 65536:
        raise ValueError("a session document with a bad cluster id or port")
    return session


def find_live(directory: Path | None = None) -> list[Session]:
    """Sessions whose driver still runs, oldest first; removes the files of drivers that are gone.

    Files that cannot be parsed are skipped and left alone (they are not
    known to be stale). Raises ``SessionError`` if the directory is not ours.
    """
    folder = session_dir() if directory is None else directory
    if not _check_dir(folder, create=False):
        return []
    live: list[Session] = []
    for path in sorted(folder.glob(f"{_FILE_PREFIX}*{_FILE_SUFFIX}")):
        found = read(path)
        if found is None:
            continue
        if found.is_live():
            live.append(found)
        else:
            remove(path)
    live.sort(key=lambda s: (s.started_at_s, s.cluster_id))
    return live
