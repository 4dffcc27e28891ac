"""Python children: the driver's cwd and sys.path, the token off the command line, death with the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from detray.real.channel import ChannelListener, new_token
from detray.real.processes import BOOTSTRAP_BYTES_MAX, ProcessError, spawn_python_child

WAIT_S = 10.0
ORPHAN_DEATH_S = 5.0

USER_MODULE = '''
import os, signal, sys, time
from detray.real.channel import connect

def report(ctx):
    """Send what this child sees to the parent, then wait for its go-ahead to exit."""
    with connect(ctx.payload["address"], ctx.token) as channel:
        channel.send_obj({"cwd": os.getcwd(), "sys_path": list(sys.path), "token": ctx.token,
                          "parent_pid": ctx.parent_pid, "ppid": os.getppid(), "name": ctx.name})
        channel.recv_bytes(10)

def sleep_forever(ctx):
    print("ready", flush=True)
    time.sleep(120)

def ignore_sigterm(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    print("ready", flush=True)
    time.sleep(120)

def fail(ctx):
    raise RuntimeError("user code failed")
'''


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A user's module in its own directory on sys.path; the driver runs from another directory."""
    modules = tmp_path / "modules"
    workdir = tmp_path / "workdir"
    modules.mkdir()
    workdir.mkdir()
    (modules / "detray_user_mod.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(modules))
    monkeypatch.chdir(workdir)
    yield workdir


def _alive(pid: int) -> bool:
    """Running (a zombie counts as dead: it only waits to be reaped by whoever inherited it)."""
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            state = stat_file.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_child_gets_cwd_sys_path_and_the_token_never_on_its_command_line(user_module: Path) -> None:
    token = new_token()
    with ChannelListener(token) as listener:
        child = spawn_python_child(
            "detray_user_mod:report", token=token, payload={"address": str(listener.address)}, name="reporter"
        )
        try:
            with listener.accept(WAIT_S) as channel:
                seen = channel.recv_obj(WAIT_S)
                cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes()
                environ = Path(f"/proc/{child.pid}/environ").read_bytes()
                channel.send_bytes(b"exit")
            assert child.wait(WAIT_S) == 0
        finally:
            child.stop()
    assert seen["cwd"] == str(user_module)
    assert seen["sys_path"] == sys.path
    assert seen["token"] == token
    assert seen["parent_pid"] == seen["ppid"] == os.getpid()
    assert seen["name"] == "reporter"
    assert b"detray-child\0reporter" in cmdline  # ps shows what the child runs
    for secret in (token, token.hex().encode(), token.hex().upper().encode()):
        assert secret not in cmdline
        assert secret not in environ


def test_stop_terminates_then_kills_and_reaps(user_module: Path) -> None:
    polite = spawn_python_child("detray_user_mod:sleep_forever", stdout=subprocess.PIPE)
    stubborn = spawn_python_child("detray_user_mod:ignore_sigterm", stdout=subprocess.PIPE)
    for child in (polite, stubborn):
        assert child.popen.stdout is not None
        assert child.popen.stdout.readline() == b"ready\n"
    assert polite.stop(timeout_s=WAIT_S) == -signal.SIGTERM
    assert stubborn.stop(timeout_s=0.3) == -signal.SIGKILL
    for child in (polite, stubborn):
        assert not child.running
        with pytest.raises(ChildProcessError):  # already reaped: no zombie left
            os.waitpid(child.pid, os.WNOHANG)


def test_failing_target_exits_nonzero_with_its_traceback(user_module: Path) -> None:
    child = spawn_python_child("detray_user_mod:fail", stderr=subprocess.PIPE)
    try:
        assert child.wait(WAIT_S) == 1
        assert child.popen.stderr is not None
        assert b"RuntimeError: user code failed" in child.popen.stderr.read()
    finally:
        child.stop()


def test_bad_target_and_oversized_payload_are_refused_before_starting(user_module: Path) -> None:
    with pytest.raises(ValueError, match="package.module:function"):
        spawn_python_child("detray_user_mod.report")
    with pytest.raises(ProcessError, match="BOOTSTRAP_BYTES_MAX"):
        spawn_python_child("detray_user_mod:report", payload={"blob": "x" * BOOTSTRAP_BYTES_MAX})
    with pytest.raises(TypeError, match="JSON"):
        spawn_python_child("detray_user_mod:report", payload={"not json": object()})


MIDDLE_PARENT = """
import sys, threading, time
from detray.real.processes import spawn_python_child
sys.path.insert(0, sys.argv[1])
children = [spawn_python_child("detray_user_mod:sleep_forever")]
spawner = threading.Thread(target=lambda: children.append(spawn_python_child("detray_user_mod:sleep_forever")))
spawner.start(); spawner.join()  # that thread is gone now: the fork thread must still be alive
print(" ".join(str(child.pid) for child in children), flush=True)
time.sleep(120)
"""


def test_children_die_when_their_parent_is_sigkilled(user_module: Path) -> None:
    modules = str(user_module.parent / "modules")
    middle = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(MIDDLE_PARENT), modules], stdout=subprocess.PIPE
    )
    child_pids: list[int] = []
    try:
        assert middle.stdout is not None
        child_pids = [int(pid) for pid in middle.stdout.readline().split()]
        assert len(child_pids) == 2
        time.sleep(0.3)  # the children are past their start (else they exit on their own parent check)
        assert all(_alive(pid) for pid in child_pids)
        middle.send_signal(signal.SIGKILL)
        middle.wait(WAIT_S)
        deadline = time.monotonic() + ORPHAN_DEATH_S
        while any(_alive(pid) for pid in child_pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not [pid for pid in child_pids if _alive(pid)], "orphans outlived their SIGKILLed parent"
    finally:
        middle.kill()
        middle.wait(WAIT_S)
        if middle.stdout is not None:
            middle.stdout.close()
        for pid in child_pids:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
