"""Faults a user relies on (issue 6, point 5), on real processes: each test starts a private cluster.

A worker SIGKILLed mid-task (retried, then ``WorkerCrashedError``), an actor
process SIGKILLed (restarted up to ``max_restarts``, then ``ActorDiedError``),
an object's file deleted from the shared-memory store (rebuilt from lineage
on ``get``), values that cannot be pickled (a ``TypeError`` naming them), the
Redis server SIGKILLed (a clear error at the next call that needs it, never a
hang), and a task's exception carrying its remote traceback.

How a test finds the process to kill: the task (or actor method) claims a
marker file with ``O_EXCL`` and publishes its pid by an atomic rename; the
claimant is the first attempt and sleeps until killed, a retry finds the
marker taken and returns. Every pid killed is checked to be a descendant of
this test process first. Every wait is bounded (``WAIT_S``): a hang fails
the test, it never stalls the suite. ``running_cluster`` shuts the cluster
down and removes what it left, also when a test fails.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import detray
from detray import runtime as runtime_mod
from detray.controlplane import ControlPlaneUnavailable
from detray.exceptions import (
    ActorDiedError,
    GetTimeoutError,
    RayActorError,
    RayError,
    RayTaskError,
    WorkerCrashedError,
)
from detray.real.shm_files import object_file_name

from .real_helpers import descendants, is_alive, local_cluster, proc, running_cluster, wait_for

WAIT_S = 20.0
"""Bound on every wait: a fault must be handled well within it."""
REDIS_ERROR_S = 10.0
"""After Redis died, a call that needs it must fail within this (a hang fails the test)."""
NUM_CPUS = 2
LARGE_ELEMENTS = 200_000
"""float64s: 1.6 MB, well above the 100 KiB inline threshold, so the value lives in the shared-memory store."""


@pytest.fixture
def cluster() -> Iterator[Any]:
    with running_cluster(num_cpus=NUM_CPUS) as rt:
        yield rt


# --- helpers ---------------------------------------------------------------------------------------


def claim_first_attempt(directory: str) -> bool:
    """In a task: True for the one attempt that claims ``directory``'s marker (it publishes its pid)."""
    try:
        fd = os.open(os.path.join(directory, "claimed"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    temp = os.path.join(directory, f"pid.{os.getpid()}.tmp")
    with open(temp, "w") as pid_file:
        pid_file.write(str(os.getpid()))
    os.rename(temp, os.path.join(directory, "pid"))
    return True


def published_pid(directory: Path) -> int:
    """The pid the first attempt published (bounded wait), checked to be one of this test's processes."""
    pid_file = directory / "pid"
    wait_for(pid_file.exists, WAIT_S, f"no attempt published its pid in {directory}")
    pid = int(pid_file.read_text())
    assert pid in {p.pid for p in descendants(os.getpid())}, f"pid {pid} is not a process of this test's cluster"
    return pid


def sigkill_and_wait(pid: int) -> None:
    process = proc(pid)
    assert process is not None, f"process {pid} is already gone"
    assert pid in {p.pid for p in descendants(os.getpid())}, f"pid {pid} is not a process of this test's cluster"
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not is_alive(process), WAIT_S, f"process {pid} did not die of SIGKILL")


def bounded(call: Callable[[], Any], timeout_s: float = WAIT_S) -> tuple[Any, BaseException | None]:
    """Run ``call`` on a helper thread; (result, exception), failing the test if it has not returned in time."""
    outcome: list[Any] = [None, None]

    def run() -> None:
        try:
            outcome[0] = call()
        except BaseException as exc:  # noqa: BLE001 -- handed to the test
            outcome[1] = exc

    thread = threading.Thread(target=run, name="bounded-call", daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"the call hung: no answer nor error after {timeout_s} s"
    return outcome[0], outcome[1]


@detray.remote
def sleep_on_first_attempt(directory: str, value: int) -> tuple[int, int]:
    if claim_first_attempt(directory):
        time.sleep(120)  # killed by the test long before this ends
    return value * 2, os.getpid()


@detray.remote
def large_array(seed: int, directory: str) -> Any:
    with open(os.path.join(directory, "runs"), "a") as runs:
        runs.write(f"{os.getpid()}\n")
    return np.arange(LARGE_ELEMENTS, dtype=np.float64) * seed


@detray.remote
class Counter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self) -> int:
        self.count += 1
        return self.count

    def add(self, amount: int) -> int:
        self.count += amount
        return self.count

    def pid(self) -> int:
        return os.getpid()

    def reconstructed(self) -> bool:
        return bool(detray.get_runtime_context().was_current_actor_reconstructed)

    def slow(self, directory: str) -> tuple[str, bool]:
        if claim_first_attempt(directory):
            time.sleep(120)
        return "done", bool(detray.get_runtime_context().was_current_actor_reconstructed)


@detray.remote
class Pinger:
    def ping(self) -> str:
        return "pong"


# --- a worker killed mid-task ------------------------------------------------------------------------


def test_worker_killed_mid_task_is_retried_and_the_result_is_right(cluster: Any, tmp_path: Path) -> None:
    ref = sleep_on_first_attempt.options(max_retries=1).remote(str(tmp_path), 21)
    killed = published_pid(tmp_path)
    sigkill_and_wait(killed)
    value, retry_pid = detray.get(ref, timeout=WAIT_S)
    assert value == 42
    assert retry_pid != killed  # a second attempt, in another process


def test_worker_killed_mid_task_without_retries_raises_worker_crashed_at_get(cluster: Any, tmp_path: Path) -> None:
    ref = sleep_on_first_attempt.options(max_retries=0).remote(str(tmp_path), 21)
    sigkill_and_wait(published_pid(tmp_path))
    with pytest.raises(WorkerCrashedError):
        detray.get(ref, timeout=WAIT_S)
    # the cluster goes on: the next task runs
    assert detray.get(sleep_on_first_attempt.remote(str(tmp_path), 5), timeout=WAIT_S)[0] == 10


# --- an actor process killed ----------------------------------------------------------------------


def _restarted_pid(actor: Any, old_pid: int) -> int:
    """The pid of the restarted actor; calls sent before the raylet saw the death may fail (at most once)."""
    failures: list[BaseException] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            pid = detray.get(actor.pid.remote(), timeout=max(0.1, deadline - time.monotonic()))
        except RayActorError as exc:
            failures.append(exc)
            assert len(failures) <= 3, f"the actor does not come back: {failures}"
            continue
        assert pid != old_pid
        return int(pid)
    raise AssertionError(f"the actor was not restarted within {WAIT_S} s ({failures})")


def test_actor_killed_is_restarted_up_to_max_restarts_then_raises_actor_died(cluster: Any) -> None:
    actor = Counter.options(max_restarts=2).remote()
    assert detray.get([actor.inc.remote() for _ in range(3)], timeout=WAIT_S) == [1, 2, 3]
    assert detray.get(actor.reconstructed.remote(), timeout=WAIT_S) is False
    pid = detray.get(actor.pid.remote(), timeout=WAIT_S)
    for _restart in range(2):
        sigkill_and_wait(pid)
        pid = _restarted_pid(actor, pid)
        assert detray.get(actor.inc.remote(), timeout=WAIT_S) == 1  # state reset: the constructor ran again
        assert detray.get(actor.reconstructed.remote(), timeout=WAIT_S) is True
    sigkill_and_wait(pid)  # the restart budget is spent
    for _call in range(2):  # every call from now on, not just the one in flight
        with pytest.raises(ActorDiedError):
            detray.get(actor.inc.remote(), timeout=WAIT_S)


def test_actor_call_in_flight_is_retried_after_restart_with_max_task_retries(cluster: Any, tmp_path: Path) -> None:
    actor = Counter.options(max_restarts=1, max_task_retries=1).remote()
    ref = actor.slow.remote(str(tmp_path))
    sigkill_and_wait(published_pid(tmp_path))
    assert detray.get(ref, timeout=WAIT_S) == ("done", True)


def test_actor_call_in_flight_fails_with_actor_error_by_default(cluster: Any, tmp_path: Path) -> None:
    """At-most-once by default (max_task_retries=0): the call in flight fails, the actor comes back."""
    actor = Counter.options(max_restarts=1).remote()
    ref = actor.slow.remote(str(tmp_path))
    pid = published_pid(tmp_path)
    sigkill_and_wait(pid)
    with pytest.raises(RayActorError):
        detray.get(ref, timeout=WAIT_S)
    _restarted_pid(actor, pid)
    assert detray.get(actor.inc.remote(), timeout=WAIT_S) == 1


# --- an object lost ---------------------------------------------------------------------------------


def test_object_whose_store_file_is_deleted_is_rebuilt_from_lineage_on_get(cluster: Any, tmp_path: Path) -> None:
    ref = large_array.remote(3, str(tmp_path))
    expected = np.arange(LARGE_ELEMENTS, dtype=np.float64) * 3
    first = detray.get(ref, timeout=WAIT_S)
    np.testing.assert_array_equal(first, expected)
    del first  # our read-only view pins the mapping, not the name: drop it so only the rebuilt copy is read
    path = Path(cluster.store.location.memory_path(ref.id))
    assert path.name == object_file_name(ref.id) and path.exists(), f"{ref.id} is not in the store at {path}"
    path.unlink()
    rebuilt = detray.get(ref, timeout=WAIT_S)
    np.testing.assert_array_equal(rebuilt, expected)
    assert len((tmp_path / "runs").read_text().split()) == 2  # rebuilt by running the task again


@detray.remote
def total(array: Any) -> float:
    return float(array.sum())


def test_object_whose_store_file_is_deleted_is_rebuilt_when_a_task_needs_it(cluster: Any, tmp_path: Path) -> None:
    ref = large_array.remote(2, str(tmp_path))
    ready, _ = detray.wait([ref], timeout=WAIT_S)
    assert ready == [ref]
    path = Path(cluster.store.location.memory_path(ref.id))
    wait_for(path.exists, WAIT_S, f"{ref.id} never reached the store at {path}")
    path.unlink()
    expected = float((np.arange(LARGE_ELEMENTS, dtype=np.float64) * 2).sum())
    assert detray.get(total.remote(ref), timeout=WAIT_S) == expected
    assert len((tmp_path / "runs").read_text().split()) == 2


# --- values that cannot be pickled --------------------------------------------------------------------

@detray.remote
def identity(value: Any) -> Any:
    return value


def submit_closure_over_a_lock() -> Any:
    """A function defined here is pickled by value with what it captures (a module-level one by reference)."""
    guard = threading.Lock()

    @detray.remote
    def uses_captured_lock() -> int:
        with guard:
            return 1

    return uses_captured_lock.remote()


@detray.remote
def returns_a_lock() -> Any:
    return threading.Lock()


@pytest.mark.parametrize(
    ("submit", "culprit"),
    [
        (lambda: identity.remote(threading.Lock()), "argument 1 of identity"),
        (lambda: identity.remote(value=threading.Lock()), "keyword argument 'value' of identity"),
        (lambda: Counter.remote().add.remote(threading.Lock()), "argument 1 of Counter.add"),
        (submit_closure_over_a_lock, "guard"),
    ],
    ids=["argument", "keyword-argument", "actor-method-argument", "closure"],
)
def test_unpicklable_argument_or_closure_raises_type_error_at_submission(
    cluster: Any, submit: Callable[[], Any], culprit: str
) -> None:
    with pytest.raises(TypeError) as raised:
        submit()
    text = str(raised.value)
    assert culprit in text, text
    assert "_thread.lock" in text, text
    assert detray.get(identity.remote(1), timeout=WAIT_S) == 1  # nothing broken by the refusal


def test_unpicklable_return_value_raises_type_error_naming_it_at_get(cluster: Any) -> None:
    ref = returns_a_lock.remote()
    with pytest.raises(TypeError) as raised:
        detray.get(ref, timeout=WAIT_S)
    assert isinstance(raised.value, RayTaskError)
    text = str(raised.value)
    assert "return value of returns_a_lock" in text, text
    assert "_thread.lock" in text, text


# --- a task's exception carries its remote traceback ---------------------------------------------------


@detray.remote
def raises_value_error(x: int) -> int:
    if x > 0:
        raise ValueError(f"bad input {x}")  # RAISE-LINE
    return x


def test_task_exception_carries_the_remote_traceback_with_file_and_line(cluster: Any) -> None:
    raise_line = next(
        number for number, line in enumerate(Path(__file__).read_text().splitlines(), 1) if line.endswith("# RAISE-LINE")
    )
    with pytest.raises(ValueError) as raised:
        detray.get(raises_value_error.remote(7), timeout=WAIT_S)
    error = raised.value
    assert isinstance(error, RayTaskError)
    text = str(error)
    assert f'File "{__file__}", line {raise_line}, in raises_value_error' in text, text
    assert "ValueError: bad input 7" in text, text


# --- the Redis server dying ------------------------------------------------------------------------


def _kill_redis(rt: Any) -> None:
    redis = local_cluster(rt).redis
    sigkill_and_wait(redis.pid)


def test_redis_death_submitting_a_new_function_raises_a_clear_error(cluster: Any) -> None:
    assert detray.get(identity.remote(1), timeout=WAIT_S) == 1
    _kill_redis(cluster)

    @detray.remote
    def never_registered(x: int) -> int:
        return x

    _, error = bounded(lambda: never_registered.remote(1), REDIS_ERROR_S)
    assert isinstance(error, ControlPlaneUnavailable), repr(error)
    assert str(local_cluster(cluster).redis.port) in str(error)
    assert runtime_mod.current() is cluster and cluster.is_initialized()


def test_redis_death_get_actor_raises_a_clear_error_and_the_cluster_lives_on(cluster: Any) -> None:
    named = Pinger.options(name="pinger").remote()
    assert detray.get(named.ping.remote(), timeout=WAIT_S) == "pong"
    _kill_redis(cluster)
    _, error = bounded(lambda: detray.get_actor("pinger"), REDIS_ERROR_S)
    assert error is not None, "get_actor answered without its name table"
    text = f"{type(error).__name__}: {error}"
    assert isinstance(error, ControlPlaneUnavailable) or "control plane" in text, text
    # a call that needs no Redis still works, on the same cluster (not a new one auto-started)
    value, error = bounded(lambda: detray.get(named.ping.remote(), timeout=WAIT_S))
    assert error is None, repr(error)
    assert value == "pong"
    assert runtime_mod.current() is cluster and cluster.is_initialized()


def test_redis_death_work_that_needs_a_new_worker_fails_clearly_instead_of_hanging(cluster: Any) -> None:
    """New actors need new worker processes, and a fresh worker loads its class from the function table."""
    assert detray.get(Pinger.remote().ping.remote(), timeout=WAIT_S) == "pong"  # Pinger is registered
    _kill_redis(cluster)
    for number in range(1, 4):  # more than the warm pool holds: a worker process must start
        actor = Pinger.remote()
        _, error = bounded(lambda: detray.get(actor.ping.remote(), timeout=REDIS_ERROR_S), REDIS_ERROR_S + 5)
        assert not isinstance(error, GetTimeoutError), f"new actor {number} hung: {error}"
        assert isinstance(error, RayError), f"new actor {number}: {error!r}"
        assert "control plane" in str(error), f"new actor {number}: {error}"
