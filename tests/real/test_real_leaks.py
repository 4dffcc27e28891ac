"""Nothing left behind (issue 6, point 1): after ``shutdown()``, after a SIGKILLed driver; init again; threads.

After ``shutdown()`` no process the cluster started is alive, its object
store's directories (``/dev/shm/detray-obj-*`` and the spill directory) and
its raylet's socket directory are gone, and none of its listening sockets
(Redis's TCP port, the raylet's Unix socket) listens any more. The same must
hold within a few seconds when the driver is killed with SIGKILL and has no
chance to clean up: the children notice their parent died and tear down.
``init`` after ``shutdown`` starts a fresh, working cluster, and the driver
API may be used from several threads at once.

How: ``real_helpers.footprint`` records, while the cluster runs, its
processes (pid and start time: a reused pid is not a survivor), directories,
socket path and listening sockets; the test first checks the footprint is
complete (Redis, raylet, workers, a listening port and socket, a store file),
so a leak check can never pass by having looked at nothing, then checks that
nothing of it is left. The SIGKILL test runs the driver in a child
interpreter that prints its footprint as JSON and sleeps. Whatever happens,
the tests kill and remove what they recorded.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import detray
from detray import runtime as runtime_mod

from .real_helpers import Footprint, Proc, footprint, remove_leftovers, running_cluster, tcp_accepts

WAIT_S = 20.0
ORPHANS_GONE_S = 10.0
"""A SIGKILLed driver's cluster must be gone within this (issue 6: "orphans notice within seconds")."""
LARGE_ELEMENTS = 200_000
"""float64s: 1.6 MB, so the value is a file in the shared-memory store."""


@detray.remote
def add_one(x: int) -> int:
    return x + 1


@detray.remote
def large_array(seed: int) -> Any:
    return np.full(LARGE_ELEMENTS, seed, dtype=np.float64)


@detray.remote
class Holder:
    def __init__(self, value: int) -> None:
        self.value = value

    def get(self) -> int:
        return self.value


def exercise() -> tuple[Any, Any]:
    """Use what creates state: tasks, an actor (its own process), a large object in the store."""
    assert detray.get([add_one.remote(i) for i in range(8)], timeout=WAIT_S) == list(range(1, 9))
    holder = Holder.remote(5)
    assert detray.get(holder.get.remote(), timeout=WAIT_S) == 5
    array_ref = large_array.remote(7)
    assert float(detray.get(array_ref, timeout=WAIT_S)[0]) == 7.0
    return holder, array_ref


def check_complete(print_: Footprint) -> None:
    """The footprint really covers the cluster: a leak check on an empty one would prove nothing."""
    names = " | ".join(p.name for p in print_.processes)
    assert print_.redis in print_.processes and print_.raylet in print_.processes
    assert len(print_.processes) >= 3, f"no worker process found: {names}"
    assert print_.redis_port in print_.listening_ports, (print_.redis_port, print_.listening_ports)
    assert print_.raylet_socket in print_.listening_paths, (print_.raylet_socket, print_.listening_paths)
    memory_dir = print_.store_dirs[0]
    assert os.path.isdir(memory_dir) and any(not n.startswith(".") for n in os.listdir(memory_dir)), memory_dir


def wait_until_nothing_left(print_: Footprint, timeout_s: float) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = print_.what_is_left()
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


@pytest.fixture
def clean_start() -> Iterator[None]:
    if detray.is_initialized():
        detray.shutdown()
    yield
    if detray.is_initialized():
        detray.shutdown()


# --- after shutdown() --------------------------------------------------------------------------------


def test_shutdown_leaves_no_process_no_shared_memory_no_socket(clean_start: None) -> None:
    detray.init(num_cpus=2)
    print_: Footprint | None = None
    try:
        rt = runtime_mod.current()
        kept = exercise()  # the actor and the store file stay until shutdown
        print_ = footprint(rt)
        check_complete(print_)
        del kept
        detray.shutdown()
        # shutdown() returns once the cluster is down: at most a moment for the kernel to reap
        left = wait_until_nothing_left(print_, 2.0)
        assert not left, f"left after shutdown(): {left}"
        assert not tcp_accepts(print_.redis_port)
    finally:
        detray.shutdown()
        remove_leftovers(print_)


def test_init_after_shutdown_works_twice_in_one_process(clean_start: None) -> None:
    cluster_ids = []
    for round_number in range(2):
        with running_cluster(num_cpus=2) as rt:
            kept = exercise()
            print_ = footprint(rt)
            check_complete(print_)
            cluster_ids.append(print_.cluster_id)
            assert detray.get(add_one.remote(round_number), timeout=WAIT_S) == round_number + 1
            del kept
            detray.shutdown()  # checked here: running_cluster's own clean-up would hide a leak
            assert not detray.is_initialized()
            left = wait_until_nothing_left(print_, 2.0)
            assert not left, f"round {round_number}: left after shutdown(): {left}"
    assert cluster_ids[0] != cluster_ids[1]


# --- the driver API from several threads -------------------------------------------------------------


def test_driver_api_is_usable_from_several_threads_at_once(clean_start: None) -> None:
    threads_n, tasks_per_thread = 4, 50
    with running_cluster(num_cpus=2):
        holder = Holder.remote(100)
        start = threading.Barrier(threads_n)
        results: dict[int, Any] = {}

        def drive(thread_number: int) -> None:
            try:
                start.wait(WAIT_S)
                base = thread_number * 1000
                refs = [add_one.remote(base + i) for i in range(tasks_per_thread)]
                put_ref = detray.put({"thread": thread_number})
                calls = [holder.get.remote() for _ in range(5)]
                ready, _ = detray.wait(refs, num_returns=len(refs), timeout=WAIT_S)
                results[thread_number] = (
                    detray.get(refs, timeout=WAIT_S),
                    detray.get(put_ref, timeout=WAIT_S),
                    detray.get(calls, timeout=WAIT_S),
                    len(ready),
                )
            except BaseException as exc:  # noqa: BLE001 -- reported by the test below
                results[thread_number] = exc

        threads = [threading.Thread(target=drive, args=(n,), name=f"driver-{n}") for n in range(threads_n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(WAIT_S * 2)
        assert not any(thread.is_alive() for thread in threads), "a driver thread hung"
        for n in range(threads_n):
            outcome = results[n]
            assert not isinstance(outcome, BaseException), f"thread {n}: {outcome!r}"
            values, put_value, calls, ready_n = outcome
            assert values == [n * 1000 + i + 1 for i in range(tasks_per_thread)], f"thread {n}"
            assert put_value == {"thread": n}
            assert calls == [100] * 5
            assert ready_n == tasks_per_thread


# --- after the driver is killed with SIGKILL ---------------------------------------------------------

DRIVER_SCRIPT = r"""
import json, os, sys, time
sys.path[:0] = [{tests_dir!r}]
import detray
from detray import runtime as runtime_mod
from real.real_helpers import footprint
from real.test_real_leaks import exercise
detray.init(num_cpus=2)
keep = exercise()
print_ = footprint(runtime_mod.current())
print(json.dumps({{
    "processes": [[p.pid, p.start_ticks, p.name] for p in print_.processes],
    "redis": print_.redis.pid, "raylet": print_.raylet.pid, "cluster_id": print_.cluster_id,
    "store_dirs": print_.store_dirs, "raylet_socket": print_.raylet_socket, "redis_port": print_.redis_port,
    "listening_ports": sorted(print_.listening_ports), "listening_paths": sorted(print_.listening_paths),
}}), flush=True)
time.sleep(300)
"""


def _footprint_from_json(text: str) -> Footprint:
    data = json.loads(text)
    processes = {Proc(pid, ticks, name) for pid, ticks, name in data["processes"]}
    by_pid = {p.pid: p for p in processes}
    return Footprint(
        cluster_id=data["cluster_id"],
        processes=processes,
        redis=by_pid[data["redis"]],
        raylet=by_pid[data["raylet"]],
        store_dirs=data["store_dirs"],
        raylet_socket=data["raylet_socket"],
        redis_port=data["redis_port"],
        listening_ports=set(data["listening_ports"]),
        listening_paths=set(data["listening_paths"]),
    )


def test_driver_killed_with_sigkill_leaves_nothing_within_seconds(tmp_path: Path) -> None:
    tests_dir = str(Path(__file__).resolve().parents[1])
    script = DRIVER_SCRIPT.format(tests_dir=tests_dir)
    driver = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    print_: Footprint | None = None
    try:
        line = _read_line(driver, WAIT_S * 2)
        print_ = _footprint_from_json(line)
        check_complete(print_)
        driver.send_signal(signal.SIGKILL)
        driver.wait(WAIT_S)
        left = wait_until_nothing_left(print_, ORPHANS_GONE_S)
        assert not left, f"{ORPHANS_GONE_S} s after the driver was SIGKILLed, still there: {left}"
        assert not tcp_accepts(print_.redis_port)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(WAIT_S)
        if driver.stdout is not None:
            driver.stdout.close()
        if driver.stderr is not None:
            driver.stderr.close()
        remove_leftovers(print_)


def _read_line(driver: subprocess.Popen[str], timeout_s: float) -> str:
    """The driver's first stdout line, bounded (its stderr in the failure when it has none)."""
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(driver.stdout.readline() if driver.stdout else ""), daemon=True)
    reader.start()
    reader.join(timeout_s)
    if not line or not line[0].strip():
        driver.kill()
        _, err = driver.communicate(timeout=WAIT_S)
        raise AssertionError(f"the driver printed no footprint within {timeout_s} s; its stderr:\n{err[-3000:]}")
    return line[0]
