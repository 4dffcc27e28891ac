"""Helpers for the real-process fault and leak tests: a cluster's footprint, process trees, sockets, cleanup.

Owns: finding what a private cluster started by ``detray.init()`` holds on
this machine (its processes, its object-store directories, its raylet's
Unix socket, its Redis port), polling for a condition with a deadline, and
the ``running_cluster`` context manager that starts a cluster and, whatever
the test did, shuts it down and then removes anything it left (so a failing
test leaves nothing behind). Must not: assert anything about leaks itself
(the tests in ``test_real_leaks.py`` do, on the footprint this returns),
kill a process that is not a descendant of this test process, or touch
another cluster's files.

Theory of operation: Linux only, read from ``/proc``. A process is
identified by ``(pid, start time)`` so a pid reused after its process died
never looks like a survivor. A cluster's processes are the descendants of
the driver that appeared while the cluster ran (Redis and the raylet are
the driver's children, workers the raylet's). Listening sockets are found
by matching the socket inodes in ``/proc/PID/fd`` against the listening
entries of ``/proc/net/tcp``, ``tcp6`` and ``unix``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import detray
from detray import runtime as runtime_mod

POLL_INTERVAL_S = 0.02
T = TypeVar("T")


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Proc:
    """One process, by pid and start time (clock ticks since boot): a reused pid is another Proc."""

    pid: int
    start_ticks: int
    name: str = field(compare=False, default="")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            text = stat_file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm is in parentheses and may hold spaces: split after the last ")"
    return text.rsplit(")", 1)[1].split()


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmd_file:
            return cmd_file.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def proc(pid: int) -> Proc | None:
    fields = _stat_fields(pid)
    if fields is None:
        return None
    # after comm: state(0) ppid(1) ... starttime is field 22 of the full line, index 19 here
    return Proc(pid, int(fields[19]), _cmdline(pid)[-80:])


def is_alive(process: Proc) -> bool:
    """Running and the same process (a zombie counts as dead: it only waits to be reaped)."""
    fields = _stat_fields(process.pid)
    if fields is None or int(fields[19]) != process.start_ticks:
        return False
    return fields[0] not in ("Z", "X")


def descendants(root_pid: int) -> set[Proc]:
    """Every live process whose parent chain leads to ``root_pid`` (not ``root_pid`` itself)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found: set[Proc] = set()
    todo = list(children.get(root_pid, ()))
    while todo:
        pid = todo.pop()
        process = proc(pid)
        if process is not None:
            found.add(process)
        todo.extend(children.get(pid, ()))
    return found


def kill_leftovers(processes: Iterable[Proc]) -> list[Proc]:
    """SIGKILL each process still alive (same pid and start time); returns the ones killed."""
    killed = []
    for process in processes:
        if is_alive(process):
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)
            killed.append(process)
    for process in killed:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(process.pid, os.WNOHANG)  # ours to reap only if it is our child
    return killed


def wait_for(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"after {timeout_s} s: {what}")
        time.sleep(POLL_INTERVAL_S)


# --- sockets -----------------------------------------------------------------------------------

_TCP_LISTEN = "0A"
_UNIX_ACCEPTING = 0x10000  # __SO_ACCEPTCON in /proc/net/unix's Flags


def socket_inodes(pid: int) -> set[int]:
    inodes: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, PermissionError):
        return inodes
    for name in names:
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{name}")
            if target.startswith("socket:["):
                inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def listening_tcp() -> dict[int, int]:
    """Listening TCP sockets on this machine: inode -> port."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as table_file:
            for line in list(table_file)[1:]:
                parts = line.split()
                if parts[3] == _TCP_LISTEN:
                    found[int(parts[9])] = int(parts[1].rsplit(":", 1)[1], 16)
    return found


def listening_unix() -> dict[int, str]:
    """Listening Unix sockets on this machine: inode -> path ('' when unnamed)."""
    found = {}
    with open("/proc/net/unix") as table_file:
        for line in list(table_file)[1:]:
            parts = line.split()
            if int(parts[3], 16) & _UNIX_ACCEPTING:
                found[int(parts[6])] = parts[7] if len(parts) > 7 else ""
    return found


def listening_sockets_of(processes: Iterable[Proc]) -> tuple[set[int], set[str]]:
    """(TCP ports, Unix socket paths) on which any of ``processes`` listens."""
    tcp, unix = listening_tcp(), listening_unix()
    ports: set[int] = set()
    paths: set[str] = set()
    for process in processes:
        for inode in socket_inodes(process.pid):
            if inode in tcp:
                ports.add(tcp[inode])
            if inode in unix:
                paths.add(unix[inode])
    return ports, paths


def tcp_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


# --- a cluster's footprint ---------------------------------------------------------------------


@dataclass
class Footprint:
    """What one private cluster holds on this machine while it runs."""

    cluster_id: str
    processes: set[Proc]
    redis: Proc
    raylet: Proc
    store_dirs: list[str]
    raylet_socket: str
    redis_port: int
    listening_ports: set[int]
    listening_paths: set[str]

    def what_is_left(self) -> list[str]:
        """Everything of this footprint still present, as readable lines (empty when all is gone)."""
        left = [f"process {p.pid} ({p.name})" for p in sorted(self.processes) if is_alive(p)]
        left += [f"directory {d}" for d in self.store_dirs if os.path.lexists(d)]
        if os.path.lexists(self.raylet_socket) or os.path.lexists(os.path.dirname(self.raylet_socket)):
            left.append(f"raylet socket {self.raylet_socket}")
        tcp_ports = set(listening_tcp().values())
        left += [f"listening TCP port {port}" for port in sorted(self.listening_ports) if port in tcp_ports]
        unix_paths = set(listening_unix().values())
        left += [f"listening Unix socket {path}" for path in sorted(self.listening_paths) if path in unix_paths]
        return left


def local_cluster(rt: Any) -> Any:
    """The ``LocalCluster`` behind a driver's ``RealRuntime`` (its shutdown hook's owner)."""
    return rt._on_shutdown.__self__


def footprint(rt: Any, driver_pid: int | None = None) -> Footprint:
    """The footprint of the cluster behind driver runtime ``rt`` (this process's, by default)."""
    cluster = local_cluster(rt)
    processes = descendants(os.getpid() if driver_pid is None else driver_pid)
    by_pid = {p.pid: p for p in processes}
    redis, raylet = by_pid[cluster.redis.pid], by_pid[cluster.raylet.pid]
    cluster_processes = {redis} | {p for p in processes if p == raylet or _has_ancestor(p.pid, raylet.pid)}
    location = rt.store.location
    node = cluster.plane.get_node(cluster.node)
    assert node is not None and node.address.startswith("unix:"), node
    ports, paths = listening_sockets_of(cluster_processes)
    return Footprint(
        cluster_id=cluster.cluster_id,
        processes=cluster_processes,
        redis=redis,
        raylet=raylet,
        store_dirs=[location.memory_dir, location.spill_dir],
        raylet_socket=node.address[len("unix:") :],
        redis_port=cluster.redis.port,
        listening_ports=ports,
        listening_paths=paths,
    )


def _has_ancestor(pid: int, ancestor: int) -> bool:
    seen = 0
    while pid > 1 and seen < 64:
        fields = _stat_fields(pid)
        if fields is None:
            return False
        pid = int(fields[1])
        if pid == ancestor:
            return True
        seen += 1
    return False


def remove_leftovers(print_: Footprint | None, processes: Iterable[Proc] = ()) -> list[str]:
    """Kill the footprint's (and ``processes``') survivors and remove its directories; returns what was left."""
    left: list[str] = []
    survivors = set(processes) | (print_.processes if print_ is not None else set())
    left += [f"process {p.pid} ({p.name})" for p in kill_leftovers(survivors)]
    if print_ is not None:
        for directory in [*print_.store_dirs, os.path.dirname(print_.raylet_socket)]:
            if os.path.lexists(directory):
                left.append(f"directory {directory}")
                shutil.rmtree(directory, ignore_errors=True)
    return left


@contextlib.contextmanager
def running_cluster(**init_kwargs: Any) -> Iterator[Any]:
    """``detray.init(**init_kwargs)``; afterwards, always: shut down every runtime started meanwhile
    (a call after the cluster broke may have auto-started another), then remove what survived."""
    if detray.is_initialized():
        detray.shutdown()
    before = descendants(os.getpid())
    detray.init(**init_kwargs)
    rt = runtime_mod.current()
    started: list[Any] = [rt]
    try:
        print_: Footprint | None = footprint(rt)
    except Exception:  # noqa: BLE001 -- a broken start: cleaned up below all the same
        print_ = None
    try:
        yield rt
    finally:
        latest = runtime_mod.current()
        if latest is not None and latest is not rt:
            started.append(latest)
        seen = descendants(os.getpid()) - before
        for started_rt in started:
            with contextlib.suppress(Exception):
                started_rt.shutdown()
        with contextlib.suppress(Exception):
            detray.shutdown()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline and any(is_alive(p) for p in seen):
            time.sleep(POLL_INTERVAL_S)
        remove_leftovers(print_, seen)
