"""The private Redis server: authenticated, loopback only, persisting nothing, never orphaned."""

from __future__ import annotations

import ipaddress
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from detray.controlplane import ControlPlaneUnavailable, connect
from detray.real import redis_server as rs
from detray.real.redis_server import RedisServer, RedisServerError, RedisServerNotFound

ORPHAN_EXIT_S_MAX = 5.0  # how long a server may outlive a SIGKILLed parent
CHILD_START_TIMEOUT_S = 20.0


# --- /proc probes (Linux): what a process holds, whether it still runs ------------------------


def process_alive(pid: int) -> bool:
    """``True`` while ``pid`` exists and is not a zombie (a zombie has exited; reaping it is its parent's job)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def listening_sockets(pid: int) -> set[tuple[str, int]]:
    """``(address, port)`` of every TCP socket in LISTEN state held by process ``pid`` (IPv4 and IPv6)."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = set()
    for table, ipv6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        if not os.path.exists(table):
            continue
        with open(table, encoding="ascii") as rows:
            next(rows)  # header
            for row in rows:
                cols = row.split()
                local, state, inode = cols[1], cols[3], cols[9]
                if state == "0A" and inode in inodes:  # 0A: LISTEN
                    address_hex, port_hex = local.rsplit(":", 1)
                    found.add((_decode_address(address_hex, ipv6), int(port_hex, 16)))
    return found


def _decode_address(address_hex: str, ipv6: bool) -> str:
    raw = bytes.fromhex(address_hex)  # 32-bit words in host (little-endian) order
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.IPv6Address(words) if ipv6 else ipaddress.IPv4Address(words))


# --- a client with the password works; without it, nothing does ------------------------------


def test_a_client_with_the_password_uses_the_server_through_the_control_plane(redis_server: RedisServer) -> None:
    plane = connect(redis_server.host, redis_server.port, password=redis_server.password, cluster_id="t-auth")
    assert plane.register_function("f1", b"\x80payload") is True
    assert plane.register_function("f1", b"other") is False
    other = redis_server.control_plane("t-auth")
    assert other.get_function("f1") == b"\x80payload"
    client = redis.Redis(**redis_server.connection_kwargs())
    assert client.get("detray:t-auth:fn:f1") == b"\x80payload"
    assert redis.Redis.from_url(redis_server.url).get("detray:t-auth:fn:f1") == b"\x80payload"


def test_a_client_without_the_password_is_refused(redis_server: RedisServer) -> None:
    anonymous = redis.Redis(
        host=redis_server.host, port=redis_server.port, socket_timeout=2, retry=Retry(NoBackoff(), 0)
    )
    with pytest.raises(redis.exceptions.AuthenticationError):
        anonymous.set("detray:t-anon:x", b"1")
    with pytest.raises(ControlPlaneUnavailable, match="refused the password"):
        connect(redis_server.host, redis_server.port, password="not-the-password", cluster_id="t-anon")
    assert redis.Redis(**redis_server.connection_kwargs()).exists("detray:t-anon:x") == 0


def test_it_listens_only_on_127_0_0_1(redis_server: RedisServer) -> None:
    assert redis_server.pid is not None
    assert listening_sockets(redis_server.pid) == {("127.0.0.1", redis_server.port)}


def test_the_password_is_never_on_a_command_line(redis_executable: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Redis overwrites its argv with a process title once it runs, so /proc/PID/cmdline alone
    # could not tell; what matters is what was exec'd, readable by any local user until then.
    argvs: list[list[str]] = []
    real_spawn = rs.spawn_dying_with_parent

    def recording_spawn(args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        argvs.append(list(args))
        return real_spawn(args, **kwargs)

    monkeypatch.setattr(rs, "spawn_dying_with_parent", recording_spawn)
    with RedisServer(executable=redis_executable) as server:
        assert argvs and all(server.password not in " ".join(argv) for argv in argvs)
        with open(f"/proc/{server.pid}/cmdline", "rb") as cmdline:
            assert server.password.encode() not in cmdline.read()
        assert server.password not in repr(server)


def test_each_server_gets_its_own_random_password(redis_executable: str) -> None:
    first, second = RedisServer(executable=redis_executable), RedisServer(executable=redis_executable)
    assert first.password != second.password
    assert len(first.password) >= 32


# --- nothing left behind -----------------------------------------------------------------------


def test_stop_leaves_no_process(redis_executable: str) -> None:
    server = RedisServer(executable=redis_executable).start()
    pid = server.pid
    assert pid is not None and process_alive(pid)
    server.stop()
    assert not os.path.exists(f"/proc/{pid}"), "stop() must terminate and reap the server"
    assert not server.running and server.pid is None
    server.stop()  # idempotent


def test_a_server_that_ignores_sigterm_is_killed_after_the_stop_timeout(redis_executable: str) -> None:
    server = RedisServer(executable=redis_executable, stop_timeout_s=0.2).start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)  # a stopped process cannot act on SIGTERM
    started = time.monotonic()
    server.stop()
    assert not os.path.exists(f"/proc/{pid}")
    assert time.monotonic() - started < 0.2 + rs.KILL_WAIT_S


def test_nothing_is_written_to_the_cwd_or_the_temp_dir(
    redis_executable: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    tmp_root = Path(tempfile.gettempdir())
    before = {p.name for p in tmp_root.glob("detray-redis-*")}
    with RedisServer(executable=redis_executable) as server:
        client = redis.Redis(**server.connection_kwargs())
        client.set("k", b"v" * 1000)
        with pytest.raises(redis.exceptions.ResponseError):
            client.save()  # persistence is impossible, not just switched off
        with pytest.raises(redis.exceptions.ResponseError):
            client.config_set("dir", str(tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert {p.name for p in tmp_root.glob("detray-redis-*")} == before


CHILD = """
import sys, threading, time
from detray.real.redis_server import RedisServer
box = []
start = lambda: box.append(RedisServer(executable=sys.argv[1]).start())
if sys.argv[2] == "thread":
    worker = threading.Thread(target=start)
    worker.start()
    worker.join()
else:
    start()
print(box[0].pid, flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("started_on", ["main", "thread"])
def test_a_sigkilled_parent_leaves_no_server(redis_executable: str, tmp_path: Path, started_on: str) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", CHILD, redis_executable, started_on],
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    server_pid = 0
    try:
        assert parent.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(parent.stdout, selectors.EVENT_READ)
            assert selector.select(CHILD_START_TIMEOUT_S), "the child did not start a server in time"
        server_pid = int(parent.stdout.readline())
        time.sleep(0.3)  # the server must not die with the thread that started it
        assert process_alive(server_pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait(5)
        assert wait_gone(server_pid, ORPHAN_EXIT_S_MAX), f"redis-server {server_pid} outlived its parent"
        assert list(tmp_path.iterdir()) == []
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(5)
        if server_pid and process_alive(server_pid):
            os.kill(server_pid, signal.SIGKILL)


def test_a_server_started_from_a_thread_outlives_that_thread(redis_executable: str) -> None:
    box: list[RedisServer] = []
    worker = threading.Thread(target=lambda: box.append(RedisServer(executable=redis_executable).start()))
    worker.start()
    worker.join(30)
    server = box[0]
    try:
        time.sleep(0.3)  # PR_SET_PDEATHSIG would have fired by now if tied to the exited thread
        assert server.running
        redis.Redis(**server.connection_kwargs()).ping()
    finally:
        server.stop()


# --- ports and startup errors ---------------------------------------------------------------------


def test_a_lost_race_for_a_port_is_retried_on_another(
    redis_executable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        picks = iter([taken])
        real_pick = rs.pick_free_port
        monkeypatch.setattr(rs, "pick_free_port", lambda host: next(picks, None) or real_pick(host))
        with RedisServer(executable=redis_executable) as server:
            assert server.port != taken
            redis.Redis(**server.connection_kwargs()).ping()


def test_an_explicit_port_in_use_is_a_clear_error(redis_executable: str) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        with pytest.raises(RedisServerError, match=rf"127\.0\.0\.1:{taken}: the port is in use"):
            RedisServer(executable=redis_executable, port=taken).start()


def test_a_failed_startup_names_the_binary_and_quotes_its_log(redis_executable: str) -> None:
    server = RedisServer(executable=redis_executable, extra_config={"no-such-directive": "1"})
    with pytest.raises(RedisServerError) as failure:
        server.start()
    message = str(failure.value)
    assert redis_executable in message and "exited during startup" in message
    assert "no-such-directive" in message  # the server's own complaint, from its log tail
    assert not server.running


def test_a_missing_binary_says_how_to_install_one(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(rs.ENV_EXECUTABLE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RedisServerNotFound, match="apt-get install redis-server"):
        RedisServer().start()
    monkeypatch.setenv(rs.ENV_EXECUTABLE, str(tmp_path / "redis-server"))
    with pytest.raises(RedisServerNotFound, match=r"\$DETRAY_REDIS_SERVER names"):
        rs.find_executable()


def test_managed_directives_and_unsafe_values_are_refused() -> None:
    with pytest.raises(ValueError, match="'requirepass' is set by RedisServer itself"):
        RedisServer(extra_config={"requirepass": "x"})
    with pytest.raises(ValueError, match="one-line string"):
        RedisServer(extra_config={"maxmemory": "1gb\nrequirepass x"})
    with pytest.raises(ValueError, match="password must be"):
        RedisServer(password="short")
