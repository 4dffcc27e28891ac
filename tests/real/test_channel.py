"""Authenticated channels: exchange, refusal without unpickling, timeouts, size bound, address safety."""

from __future__ import annotations

import multiprocessing.connection as mpc
import os
import pickle
import select
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from detray.real.channel import (
    AuthenticationFailed,
    ChannelAddress,
    ChannelClosed,
    ChannelListener,
    ChannelTimeout,
    MessageTooLarge,
    connect,
    new_token,
)

WAIT_S = 5.0


class _CreatesFile:
    """Unpickling this creates ``path``: the proof of whether a pickle was loaded."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.fixture
def token() -> bytes:
    return new_token()


@pytest.fixture(params=["unix", "tcp"])
def listener(request: pytest.FixtureRequest, token: bytes) -> Iterator[ChannelListener]:
    with ChannelListener(token, family=request.param, handshake_timeout_s=1.0) as listening:
        yield listening


def _wait_until(condition: Any, timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def test_authenticated_client_exchanges_messages_both_ways(listener: ChannelListener, token: bytes) -> None:
    with connect(str(listener.address), token) as client, listener.accept(WAIT_S) as server:
        for size_bytes in (0, 1, 100_000):
            client.send_bytes(bytes(range(256)) * (size_bytes // 256) + b"x" * (size_bytes % 256))
            assert len(server.recv_bytes(WAIT_S)) == size_bytes
        server.send_obj({"task": 1, "args": [1.5, None, b"raw"]})
        assert client.recv_obj(WAIT_S) == {"task": 1, "args": [1.5, None, b"raw"]}
        with pytest.raises(ChannelTimeout):
            client.recv_bytes(timeout_s=0.05)
        client.close()
        with pytest.raises(ChannelClosed):
            server.recv_bytes(WAIT_S)
    assert listener.handshake_failures == 0


def test_wrong_token_is_refused_and_nothing_it_sent_is_unpickled(
    listener: ChannelListener, token: bytes, tmp_path: Path
) -> None:
    # Control: the same kind of pickle from an authenticated peer does create its file.
    control = tmp_path / "control"
    with connect(listener.address, token) as client, listener.accept(WAIT_S) as server:
        client.send_obj(_CreatesFile(str(control)))
        server.recv_obj(WAIT_S)
    assert control.exists()

    planted = tmp_path / "planted"
    evil = pickle.dumps(_CreatesFile(str(planted)))
    assert len(evil) < 256  # fits a handshake frame: the listener reads it, and must only compare it

    with pytest.raises(AuthenticationFailed):
        connect(listener.address, new_token())

    # A hand-made attacker: answers the challenge with a pickle, then keeps sending pickles.
    raw = _raw_connection(listener.address)
    challenge = raw.recv_bytes(256)
    assert challenge.startswith(b"#CHALLENGE#")
    raw.send_bytes(evil)
    for _ in range(3):
        try:
            raw.send_bytes(evil)
        except OSError:
            break
    # And one that sends pickles without reading the challenge at all.
    blind = _raw_connection(listener.address)
    for _ in range(2):
        try:
            blind.send_bytes(evil)
        except OSError:
            break

    assert _wait_until(lambda: listener.handshake_failures >= 3)
    with pytest.raises(ChannelTimeout):
        listener.accept(timeout_s=0.2)
    raw.close()
    blind.close()
    assert not planted.exists()


def test_wrong_token_on_the_listener_side_is_refused_by_the_client(token: bytes) -> None:
    with ChannelListener(new_token()) as impostor:
        with pytest.raises(AuthenticationFailed):
            connect(impostor.address, token)


def test_silent_client_does_not_block_others_and_is_cut_off(listener: ChannelListener, token: bytes) -> None:
    silent = _raw_socket(listener.address)
    try:
        with connect(listener.address, token) as client, listener.accept(WAIT_S) as server:
            client.send_bytes(b"ping")
            assert server.recv_bytes(WAIT_S) == b"ping"
        # The listener sent its challenge and then waits; after handshake_timeout_s it hangs up.
        deadline = time.monotonic() + WAIT_S
        received = b""
        while time.monotonic() < deadline:
            if select.select([silent], [], [], 0.05)[0]:
                chunk = silent.recv(4096)
                if not chunk:
                    break
                received += chunk
        else:
            pytest.fail("the listener never closed a client that sent nothing")
        assert b"#CHALLENGE#" in received
        assert _wait_until(lambda: listener.handshake_failures == 1)
    finally:
        silent.close()


def test_client_handshake_times_out_on_a_silent_listener(tmp_path: Path, token: bytes) -> None:
    path = str(tmp_path / "mute.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mute:
        mute.bind(path)
        mute.listen(1)
        started = time.monotonic()
        with pytest.raises(ChannelTimeout, match="handshake_timeout_s"):
            connect(ChannelAddress(family="unix", path=path), token, handshake_timeout_s=0.2)
        assert time.monotonic() - started < WAIT_S


def test_oversized_messages_are_refused_on_both_sides(token: bytes) -> None:
    with ChannelListener(token, max_message_bytes=1000) as small:
        with connect(small.address, token, max_message_bytes=10_000) as client, small.accept(WAIT_S) as server:
            with pytest.raises(MessageTooLarge, match="max_message_bytes=1000"):
                server.send_bytes(b"x" * 1001)
            client.send_bytes(b"y" * 1000)
            assert server.recv_bytes(WAIT_S) == b"y" * 1000  # the bound is inclusive
            client.send_bytes(b"z" * 1001)
            with pytest.raises(MessageTooLarge, match="max_message_bytes=1000"):
                server.recv_bytes(WAIT_S)
            assert server.closed  # the stream cannot be resynchronised
            with pytest.raises(ChannelClosed):
                client.recv_bytes(WAIT_S)


def test_unix_socket_directory_is_private_and_removed_at_close(token: bytes) -> None:
    listening = ChannelListener(token)
    assert listening.address.path is not None
    directory = os.path.dirname(listening.address.path)
    mode = os.stat(directory).st_mode
    assert stat.S_IMODE(mode) == 0o700
    assert os.stat(directory).st_uid == os.getuid()
    assert stat.S_ISSOCK(os.stat(listening.address.path).st_mode)
    with connect(listening.address, token), listening.accept(WAIT_S):
        pass
    listening.close()
    assert not os.path.exists(directory)
    with pytest.raises(ChannelClosed):
        listening.accept(timeout_s=0.1)
    with pytest.raises(Exception, match="cannot connect"):
        connect(listening.address, token)


def test_tcp_binds_loopback_only_unless_loudly_told(token: bytes) -> None:
    with ChannelListener(token, family="tcp") as listening:
        assert listening.address.host == "127.0.0.1"
        assert _listening_ipv4_addresses(listening.address.port) == {"127.0.0.1"}
        assert ChannelAddress.parse(str(listening.address)) == listening.address
    for host in ("0.0.0.0", "::", "10.1.2.3"):
        with pytest.raises(ValueError, match="expose_to_network_unencrypted"):
            ChannelListener(token, family="tcp", host=host)
    with ChannelListener(token, family="tcp", host="0.0.0.0", expose_to_network_unencrypted=True) as exposed:
        assert _listening_ipv4_addresses(exposed.address.port) == {"0.0.0.0"}


def test_accept_serves_many_concurrent_clients(listener: ChannelListener, token: bytes) -> None:
    clients_count = 8
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            with connect(listener.address, token) as channel:
                channel.send_obj(index)
                assert channel.recv_obj(WAIT_S) == index * 2
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients_count)]
    for thread in threads:
        thread.start()
    servers = [listener.accept(WAIT_S) for _ in range(clients_count)]
    for server in servers:
        server.send_obj(server.recv_obj(WAIT_S) * 2)
    for thread in threads:
        thread.join(WAIT_S)
    for server in servers:
        server.close()
    assert errors == []


# --- helpers ----------------------------------------------------------------------------------


def _raw_socket(address: ChannelAddress) -> socket.socket:
    if address.family == "unix":
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(address.path)
    else:
        sock = socket.create_connection((address.host, address.port))
    return sock


def _raw_connection(address: ChannelAddress) -> mpc.Connection:
    return mpc.Connection(_raw_socket(address).detach())


def _listening_ipv4_addresses(port: int | None) -> set[str]:
    """Local addresses in LISTEN state on ``port``, from /proc/net/tcp (what `ss -ltn` shows)."""
    found = set()
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, state = fields[1], fields[3]
            hex_ip, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(socket.inet_ntoa(bytes.fromhex(hex_ip)[::-1]))
    return found

