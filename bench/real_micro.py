"""Microbenchmarks of the real runtime beside multiprocessing.Pool and Ray, in one run (issue 6).

Usage (from the repository root):

    python bench/real_micro.py --ray-python /path/to/venv-with-ray/bin/python
    python bench/real_micro.py --only detray,pool        # no Ray
    python bench/real_micro.py --quick --json /tmp/micro.json

Owns: measuring, printing and saving the figures below. Must not: import
detray in the parent process, share an interpreter between two systems, or
leave a process behind. The parent makes itself a child subreaper (Linux
``prctl``), so whatever a child's cluster orphans or daemonizes is reparented
to it rather than to pid 1: counted in the child's memory, and, when it
outlives its child (after a grace of ``LEFTOVER_WAIT_S``), reported and killed
by pid. A child that overruns ``--timeout-s`` is killed with its whole tree.

Theory of operation. The parent runs each system (``detray``: ``detray.init()``
with no address, the real runtime's private local cluster; ``pool``:
``multiprocessing.Pool`` with the interpreter's default start method; ``ray``:
``ray.init()`` starting a local cluster) in fresh interpreters, one after the
other, each started as ``python bench/real_micro.py --child SYSTEM --phase
PHASE``. A child prints one line ``REAL_MICRO_RESULT <json>`` that the parent
collects. Two children per system:

- ``cold``: imports numpy and the system, defines the remote function (as a
  user's module would), then the timer starts right before ``init()``
  (``Pool()`` for the Pool) and stops when the first no-op task's result is
  back: *init to first result*. After ``--idle-s`` seconds of idling, the PSS
  of the driver and all its descendants (recursively, from
  ``/proc/<pid>/smaps_rollup``) is summed: *idle memory*. Then ``shutdown()``
  is timed. (With the subreaper parent, "descendants" includes processes
  that daemonized or were orphaned.)
- ``steady``: after ``init`` and a warm-up, measures *sync latency*
  (``get(f.remote())`` one at a time), *async tasks* (``--tasks`` submitted,
  then gathered with one ``get``), *async actor calls* (same, on one actor),
  *put* and *get* of a 100 MB numpy array (a fresh ``put`` each repeat, then
  ``get`` of it; the value is not touched) and *100 MB to a worker and back*
  (``get(echo.remote(array))``, the one figure Pool can give too).

Ray and detray run the same code (``run_ray_api`` with ``rt`` bound to the
module: ``import detray as ray`` style). Pool's analogues are stated in the
table's notes. Ratios are detray/Ray measured in the same run; the goals are
issue 6's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULT_MARKER = "REAL_MICRO_RESULT "
SYSTEMS = ("detray", "pool", "ray")
LABELS = {"detray": "detray", "pool": "multiprocessing.Pool", "ray": "Ray"}
PHASES = ("cold", "steady")
MB = 1000 * 1000
MiB = 1 << 20
LEFTOVER_WAIT_S = 5.0
SUBREAPER_ENV = "REAL_MICRO_SUBREAPER_PID"
PR_SET_CHILD_SUBREAPER = 36


# --- process tree and memory (used by children and by the parent) ------------------------------


def _stat_fields(pid: int) -> tuple[int, int, str] | None:
    """(ppid, starttime in clock ticks, comm) of a live process, None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1 : raw.rindex(")")]
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is the state (field 3), so field N is rest[N - 3]
    if rest[0] == "Z":
        return None
    return int(rest[1]), int(rest[19]), comm


def process_tree(root_pid: int) -> list[tuple[int, int, str]]:
    """(pid, starttime, comm) of ``root_pid`` and all its live descendants, recursively."""
    children: dict[int, list[int]] = {}
    facts: dict[int, tuple[int, int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            facts[int(entry)] = fields
            children.setdefault(fields[0], []).append(int(entry))
    tree: list[tuple[int, int, str]] = []
    work = [root_pid]
    while work and len(tree) < 10_000:
        pid = work.pop()
        if pid in facts:
            tree.append((pid, facts[pid][1], facts[pid][2]))
        work.extend(children.get(pid, ()))
    return tree


def pss_kib(pid: int) -> int | None:
    """Proportional set size of one process in KiB (shared pages divided among their users)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return None


def process_label(pid: int, comm: str) -> str:
    """A short name for the memory breakdown: ``driver``, a Python script's name, or the command."""
    if pid == os.getpid():
        return "driver"
    if not comm.startswith("python"):
        return comm
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return comm
    for arg in argv[1:3]:
        text = arg.decode(errors="replace")
        if text and not text.startswith("-"):
            return f"python {Path(text).name}"
        if text == "-m" and len(argv) > 2:
            return f"python -m {argv[2].decode(errors='replace')}"
    return comm


def cluster_processes() -> list[tuple[int, int, str]]:
    """This driver and every process it started, also those that left its tree.

    The bench's parent is a child subreaper and runs one child at a time, so
    its descendants other than itself are exactly this driver's tree plus any
    process that daemonized or was orphaned (reparented to the parent, not to
    pid 1). Without a subreaper parent: this driver's tree.
    """
    if os.environ.get(SUBREAPER_ENV) == str(os.getppid()):
        return [entry for entry in process_tree(os.getppid()) if entry[0] != os.getppid()]
    return process_tree(os.getpid())


def tree_pss() -> dict[str, Any]:
    """PSS summed over ``cluster_processes()``, with a per-process-kind breakdown."""
    by_comm: dict[str, float] = {}
    total_kib = 0
    counted = 0
    for pid, _start, comm in cluster_processes():
        kib = pss_kib(pid)
        if kib is None:
            continue
        counted += 1
        total_kib += kib
        label = process_label(pid, comm)
        by_comm[label] = by_comm.get(label, 0.0) + kib / 1024
    return {
        "pss_mib": total_kib / 1024,
        "processes": counted,
        "by_command_mib": {name: round(mib, 1) for name, mib in sorted(by_comm.items(), key=lambda kv: -kv[1])},
    }


def still_alive(processes: Iterable[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The given processes that still run (same pid and same start time, so not a reused pid)."""
    alive = []
    for pid, start, comm in processes:
        fields = _stat_fields(pid)
        if fields is not None and fields[1] == start:
            alive.append((pid, start, comm))
    return alive


def kill_processes(processes: Iterable[tuple[int, int, str]]) -> None:
    """SIGKILL each given process by pid (only if it is still the same process)."""
    for pid, _start, _comm in still_alive(processes):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def become_subreaper() -> bool:
    """Make orphans of this process's descendants our children (Linux ``prctl``), not pid 1's."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def reap_children() -> None:
    """Collect the exit status of every child that ended (orphans adopted as subreaper)."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def my_descendants() -> list[tuple[int, int, str]]:
    return [entry for entry in process_tree(os.getpid()) if entry[0] != os.getpid()]


# --- child side: the workload -------------------------------------------------------------------


def _noop() -> None:
    return None


def _echo(value: Any) -> Any:
    return value


_POOL_ACTOR_STATE: dict[str, int] = {"calls": 0}


def _pool_actor_noop() -> None:
    # the "actor method" of Pool's analogue: mutates state living in the one worker process
    _POOL_ACTOR_STATE["calls"] += 1
    return None


def _median_p90_ms(samples_s: list[float]) -> tuple[float, float]:
    ordered = sorted(samples_s)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return statistics.median(ordered) * 1000, p90 * 1000


class Measurements:
    """Figures and per-figure errors of one child; a failing measurement does not stop the others."""

    def __init__(self) -> None:
        self.metrics: dict[str, Any] = {}
        self.errors: dict[str, str] = {}

    def attempt(self, names: str, action: Callable[[], dict[str, Any]]) -> None:
        try:
            self.metrics.update(action())
        except Exception as error:  # noqa: BLE001 - reported in the table, the run goes on
            self.errors[names] = f"{type(error).__name__}: {error}"[:500]


def run_ray_api(rt: Any, phase: str, config: dict[str, Any], out: Measurements) -> dict[str, Any]:
    """The workload written against Ray's public API; ``rt`` is ``ray`` or ``detray``."""
    import numpy as np

    timeout_s = config["timeout_s"]

    @rt.remote
    def noop() -> None:
        return None

    @rt.remote
    def echo(value: Any) -> Any:
        return value

    @rt.remote
    class Actor:
        def noop(self) -> None:
            return None

    if phase == "cold":
        start = time.perf_counter()
        rt.init(num_cpus=config["num_cpus"])
        rt.get(noop.remote(), timeout=timeout_s)
        out.metrics["init_to_first_result_s"] = time.perf_counter() - start
        time.sleep(config["idle_s"])
        idle = tree_pss()
        out.metrics.update({"idle_pss_mib": idle["pss_mib"], "idle_processes": idle["processes"]})
        return {"idle_by_command_mib": idle["by_command_mib"]}

    rt.init(num_cpus=config["num_cpus"])
    tasks = config["tasks"]
    rt.get([noop.remote() for _ in range(config["warmup"])], timeout=timeout_s)

    def sync_latency() -> dict[str, Any]:
        samples = []
        for _ in range(config["sync_calls"]):
            begin = time.perf_counter()
            rt.get(noop.remote(), timeout=timeout_s)
            samples.append(time.perf_counter() - begin)
        median_ms, p90_ms = _median_p90_ms(samples)
        return {"sync_median_ms": median_ms, "sync_p90_ms": p90_ms, "sync_calls_per_s": len(samples) / sum(samples)}

    def async_tasks() -> dict[str, Any]:
        begin = time.perf_counter()
        refs = [noop.remote() for _ in range(tasks)]
        submitted = time.perf_counter()
        rt.get(refs, timeout=timeout_s)
        end = time.perf_counter()
        return {"tasks_per_s": tasks / max(end - begin, 1e-9),
                "tasks_submit_per_s": tasks / max(submitted - begin, 1e-9)}

    def actor_calls() -> dict[str, Any]:
        actor = Actor.remote()
        rt.get([actor.noop.remote() for _ in range(config["warmup"])], timeout=timeout_s)
        begin = time.perf_counter()
        refs = [actor.noop.remote() for _ in range(tasks)]
        rt.get(refs, timeout=timeout_s)
        rate = tasks / (time.perf_counter() - begin)
        del refs
        rt.kill(actor)
        return {"actor_calls_per_s": rate}

    array = np.arange(config["array_bytes"] // 8, dtype=np.int64)

    def put_get() -> dict[str, Any]:
        put_s, get_s = [], []
        for _ in range(config["array_repeats"]):
            begin = time.perf_counter()
            ref = rt.put(array)
            middle = time.perf_counter()
            value = rt.get(ref, timeout=timeout_s)
            end = time.perf_counter()
            if value.nbytes != array.nbytes or value[-1] != array[-1]:
                raise AssertionError("get returned a different array than was put")
            put_s.append(middle - begin)
            get_s.append(end - middle)
            del value, ref
        return {"put_array_ms": statistics.median(put_s) * 1000, "get_array_ms": statistics.median(get_s) * 1000}

    def round_trip() -> dict[str, Any]:
        samples = []
        for _ in range(config["array_repeats"]):
            begin = time.perf_counter()
            value = rt.get(echo.remote(array), timeout=timeout_s)
            samples.append(time.perf_counter() - begin)
            if value.nbytes != array.nbytes or value[-1] != array[-1]:
                raise AssertionError("echo returned a different array")
            del value
        return {"array_round_trip_ms": statistics.median(samples) * 1000}

    out.attempt("sync_median_ms sync_p90_ms sync_calls_per_s", sync_latency)
    out.attempt("tasks_per_s tasks_submit_per_s", async_tasks)
    out.attempt("actor_calls_per_s", actor_calls)
    out.attempt("put_array_ms get_array_ms", put_get)
    out.attempt("array_round_trip_ms", round_trip)
    return {}


def run_pool(phase: str, config: dict[str, Any], out: Measurements) -> dict[str, Any]:
    """The Pool analogues: apply / apply_async of module-level functions."""
    import multiprocessing

    import numpy as np

    timeout_s = config["timeout_s"]
    if phase == "cold":
        start = time.perf_counter()
        pool = multiprocessing.Pool(processes=config["num_cpus"])
        pool.apply_async(_noop).get(timeout_s)
        out.metrics["init_to_first_result_s"] = time.perf_counter() - start
        time.sleep(config["idle_s"])
        idle = tree_pss()
        out.metrics.update({"idle_pss_mib": idle["pss_mib"], "idle_processes": idle["processes"]})
        config["_pool"] = pool
        return {"idle_by_command_mib": idle["by_command_mib"]}

    pool = multiprocessing.Pool(processes=config["num_cpus"])
    config["_pool"] = pool
    tasks = config["tasks"]
    for result in [pool.apply_async(_noop) for _ in range(config["warmup"])]:
        result.get(timeout_s)

    def sync_latency() -> dict[str, Any]:
        samples = []
        for _ in range(config["sync_calls"]):
            begin = time.perf_counter()
            pool.apply_async(_noop).get(timeout_s)
            samples.append(time.perf_counter() - begin)
        median_ms, p90_ms = _median_p90_ms(samples)
        return {"sync_median_ms": median_ms, "sync_p90_ms": p90_ms, "sync_calls_per_s": len(samples) / sum(samples)}

    def async_tasks() -> dict[str, Any]:
        begin = time.perf_counter()
        results = [pool.apply_async(_noop) for _ in range(tasks)]
        submitted = time.perf_counter()
        for result in results:
            result.get(timeout_s)
        end = time.perf_counter()
        return {"tasks_per_s": tasks / max(end - begin, 1e-9),
                "tasks_submit_per_s": tasks / max(submitted - begin, 1e-9)}

    def actor_calls() -> dict[str, Any]:
        # analogue: a one-process Pool whose worker holds the state, called with apply_async
        with multiprocessing.Pool(processes=1) as single:
            for result in [single.apply_async(_pool_actor_noop) for _ in range(config["warmup"])]:
                result.get(timeout_s)
            begin = time.perf_counter()
            results = [single.apply_async(_pool_actor_noop) for _ in range(tasks)]
            for result in results:
                result.get(timeout_s)
            rate = tasks / (time.perf_counter() - begin)
        return {"actor_calls_per_s": rate}

    array = np.arange(config["array_bytes"] // 8, dtype=np.int64)

    def round_trip() -> dict[str, Any]:
        samples = []
        for _ in range(config["array_repeats"]):
            begin = time.perf_counter()
            value = pool.apply_async(_echo, (array,)).get(timeout_s)
            samples.append(time.perf_counter() - begin)
            if value.nbytes != array.nbytes or value[-1] != array[-1]:
                raise AssertionError("echo returned a different array")
            del value
        return {"array_round_trip_ms": statistics.median(samples) * 1000}

    out.attempt("sync_median_ms sync_p90_ms sync_calls_per_s", sync_latency)
    out.attempt("tasks_per_s tasks_submit_per_s", async_tasks)
    out.attempt("actor_calls_per_s", actor_calls)
    out.attempt("array_round_trip_ms", round_trip)
    return {}


def child_main(system: str, phase: str, config: dict[str, Any]) -> None:
    """One system, one phase, in this fresh interpreter; prints the result line."""
    import numpy  # noqa: F401 - imported before the timers, as a user's program would

    out = Measurements()
    result: dict[str, Any] = {"system": system, "phase": phase, "python": sys.version.split()[0]}
    import_start = time.perf_counter()
    rt: Any = None
    if system == "pool":
        import multiprocessing

        result["version"] = f"start method {multiprocessing.get_start_method()}"
    else:
        if system == "detray" and str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        rt = importlib.import_module(system)  # `import ray` / `import detray`
        result["version"] = f"{system} {rt.__version__}"
    out.metrics["import_s"] = time.perf_counter() - import_start
    try:
        if system == "pool":
            result["extra"] = run_pool(phase, config, out)
        else:
            result["extra"] = run_ray_api(rt, phase, config, out)
    except Exception as error:  # noqa: BLE001 - init or the first task failed: reported, then exit 1
        out.errors["init"] = f"{type(error).__name__}: {error}"[:500]
    # what the parent checks after this interpreter exits: did shutdown leave anything behind?
    result["tree"] = cluster_processes()
    shutdown_start = time.perf_counter()
    initialized = "init" not in out.errors
    try:
        if system == "pool":
            pool = config.get("_pool")
            if pool is not None:
                pool.close()
                pool.join()
        else:
            rt.shutdown()
        if initialized:
            out.metrics["shutdown_s"] = time.perf_counter() - shutdown_start
    except Exception as error:  # noqa: BLE001
        out.errors["shutdown"] = f"{type(error).__name__}: {error}"[:500]
    result["metrics"] = out.metrics
    result["errors"] = out.errors
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result), flush=True)


# --- parent side ----------------------------------------------------------------------------------


def run_child(
    python: str, system: str, phase: str, config: dict[str, Any], timeout_s: float, subreaper: bool
) -> dict[str, Any]:
    """Run one child to completion (or kill its tree at ``timeout_s``); its result or an error."""
    env = dict(os.environ)
    env.pop("DETRAY_MODE", None)  # the real runtime, whatever the caller's shell says
    env.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env.pop(SUBREAPER_ENV, None)
    if subreaper:
        env[SUBREAPER_ENV] = str(os.getpid())
    command = [python, str(Path(__file__).resolve()), "--child", system, "--phase", phase,
               "--child-config", json.dumps(config)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        tree = sorted(set(process_tree(process.pid)) | set(my_descendants()))
        kill_processes(tree)
        stdout, stderr = process.communicate()
        time.sleep(0.2)
        reap_children()
        return {"errors": {"run": f"{system} {phase}: no result after {timeout_s:.0f} s; "
                                  f"killed its {len(tree)} processes"}, "stderr": stderr[-3000:]}
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_MARKER)]
    if not lines:
        tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"errors": {"run": f"{system} {phase}: exited {process.returncode} without a result: {tail}"},
                "stderr": stderr[-3000:]}
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT_MARKER):])
    # leftovers: the tree seen before shutdown, plus (as subreaper) whatever was orphaned to us
    tree = [(int(pid), int(start), str(comm)) for pid, start, comm in result.pop("tree", []) if pid != process.pid]
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while True:
        reap_children()
        leftovers = sorted(set(still_alive(tree)) | set(my_descendants()))
        if not leftovers or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    result["leftover_processes"] = [f"{comm}({pid})" for pid, _start, comm in leftovers]
    kill_processes(leftovers)
    time.sleep(0.1)
    reap_children()
    if result["errors"]:
        result["stderr"] = stderr[-3000:]
    return result


def ray_interpreter(given: str | None) -> str | None:
    if given:
        return given
    if importlib.util.find_spec("ray") is not None:
        return sys.executable
    return None


def run_system(
    system: str, python: str, config: dict[str, Any], timeout_s: float, subreaper: bool
) -> dict[str, Any]:
    merged: dict[str, Any] = {"metrics": {}, "errors": {}, "leftover_processes": [], "python_path": python}
    for phase in PHASES:
        started = time.perf_counter()
        result = run_child(python, system, phase, config, timeout_s, subreaper)
        print(f"  {LABELS[system]} {phase}: {time.perf_counter() - started:.1f} s"
              + (f"  errors: {result['errors']}" if result.get("errors") else ""), flush=True)
        for key, value in result.get("metrics", {}).items():
            merged["metrics"].setdefault(key, value)  # import_s, shutdown_s: from the cold child
        merged["errors"].update({f"{phase}:{key}": value for key, value in result.get("errors", {}).items()})
        merged["leftover_processes"] += result.get("leftover_processes", [])
        for key in ("version", "python", "stderr"):
            if key in result:
                merged.setdefault(key, result[key])
        if phase == "cold" and "extra" in result:
            merged["idle_by_command_mib"] = result["extra"].get("idle_by_command_mib")
    return merged


# (key, label, unit, better, goal) ; better: "higher" or "lower" ; goal: (kind, value, text)
ROWS: list[tuple[str, str, str, str, tuple[str, float, str] | None]] = [
    ("tasks_per_s", "async no-op tasks/s ({tasks:,} submitted, then gathered)", "/s", "higher",
     ("ratio_min", 5.0, ">= 5x Ray")),
    ("tasks_submit_per_s", "  of which submission alone, calls/s", "/s", "higher", None),
    ("sync_median_ms", "sync no-op round trip, median", "ms", "lower", ("ratio_max", 0.2, "<= 1/5 Ray")),
    ("sync_p90_ms", "sync no-op round trip, p90", "ms", "lower", None),
    ("sync_calls_per_s", "sync no-op calls/s (1 / mean)", "/s", "higher", None),
    ("actor_calls_per_s", "async actor calls/s ({tasks:,} submitted, then gathered)", "/s", "higher",
     ("ratio_min", 5.0, ">= 5x Ray")),
    ("put_array_ms", "put of a {array_mb:g} MB numpy array, median", "ms", "lower", None),
    ("get_array_ms", "get of a {array_mb:g} MB numpy array, median", "ms", "lower", ("abs_max", 1.0, "< 1 ms")),
    ("array_round_trip_ms", "{array_mb:g} MB array to a worker and back, median", "ms", "lower", None),
    ("init_to_first_result_s", "init() to first task result", "s", "lower", ("abs_max", 0.5, "< 0.5 s")),
    ("import_s", "  import of the package (before the timer)", "s", "lower", None),
    ("idle_pss_mib", "idle memory, PSS of the process tree", "MiB", "lower", ("ratio_max", 0.25, "<= 1/4 Ray")),
    ("idle_processes", "  processes in the tree", "", "lower", None),
    ("shutdown_s", "shutdown() (Pool: close + join)", "s", "lower", None),
]


def fmt(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if unit == "/s":
        return f"{value:,.0f} /s"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:,.1f} ms"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB":
        return f"{value:,.1f} MiB"
    return f"{value:g}"


def goal_status(goal: tuple[str, float, str] | None, detray: Any, ratio: float | None) -> str:
    if goal is None:
        return ""
    kind, bound, text = goal
    if kind == "abs_max":
        met = None if not isinstance(detray, (int, float)) else detray < bound
    elif ratio is None:
        met = None
    else:
        met = ratio >= bound if kind == "ratio_min" else ratio <= bound
    return f"{text}: " + {True: "met", False: "NOT met", None: "?"}[met]


def build_table(results: dict[str, dict[str, Any]], config: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for key, label, unit, _better, goal in ROWS:
        cells: dict[str, Any] = {}
        for system in SYSTEMS:
            result = results.get(system)
            if result is None:
                cells[system] = "not run"
                continue
            value = result["metrics"].get(key)
            if value is None:
                failed = [message for name, message in result["errors"].items()
                          if key in name.split(":", 1)[-1].split() or name.endswith(("run", "init"))]
                if failed:
                    value = "ERROR"
                elif system == "pool" and key in ("put_array_ms", "get_array_ms"):
                    value = "n/a"
            cells[system] = value
        detray, ray = cells["detray"], cells["ray"]
        ratio = detray / ray if isinstance(detray, (int, float)) and isinstance(ray, (int, float)) and ray else None
        rows.append({
            "key": key, "label": label.format(tasks=config["tasks"], array_mb=config["array_bytes"] / MB),
            "unit": unit, **cells, "detray_over_ray": ratio, "goal": goal_status(goal, detray, ratio),
        })
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ["metric", LABELS["detray"], LABELS["pool"], LABELS["ray"], "detray/Ray", "issue 6 goal"]
    body = [[row["label"], fmt(row["detray"], row["unit"]), fmt(row["pool"], row["unit"]),
             fmt(row["ray"], row["unit"]),
             "-" if row["detray_over_ray"] is None else f"{row['detray_over_ray']:.3g}", row["goal"]]
            for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    def line(cells: list[str]) -> str:
        return " | ".join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) if i < 5 else cell
                          for i, cell in enumerate(cells)).rstrip()
    print(line(header))
    print("-+-".join("-" * width for width in widths))
    for cells in body:
        print(line(cells))


NOTES = """\
How each figure maps between systems:
- Tasks: detray and Ray run identical code: `@remote def noop()`, `[noop.remote() for _ in range(N)]`,
  then one `get(refs)`. Pool: `apply_async(noop)` N times, then `.get()` on each result (submit all,
  then gather). Sync: `get(noop.remote())` / `apply_async(noop).get()`, one at a time, after a warm-up.
- Actor calls: one actor with a no-op method, N calls submitted then gathered. Pool has no actors; its
  figure is an analogue: a one-process Pool whose worker holds the state, N apply_async then .get().
- put/get: a fresh `put` of the array each repeat, then `get` of that ref in the driver (the result is
  checked but its pages are not read). Pool has no object store: n/a. "To a worker and back" is
  `get(echo.remote(array))` for detray/Ray (the argument is stored, the worker returns it) and
  `apply_async(echo, (array,)).get()` for Pool (pickled through its pipes both ways).
- init to first result: fresh interpreter; numpy and the package already imported (import time shown
  apart), remote function already defined; the timer starts right before `init(num_cpus=N)` (Pool:
  `Pool(processes=N)`, default start method) and stops when the first no-op result is back.
- Idle memory: {idle_s:g} s after that first result, PSS (/proc/PID/smaps_rollup) summed over the driver
  and all its descendants: for Ray the GCS, raylet, dashboard, log monitor and worker processes it
  started; for detray its Redis, raylet and workers; for Pool its workers (daemonized or orphaned processes
  included: this bench adopts them as a child subreaper). Shared pages count once in total.
- Each system runs in its own fresh interpreters (one for init+memory, one for the rest), one system
  after the other; Ray with its defaults (dashboard included, as `ray.init()` starts it)."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-python", default=None, help="an interpreter that can import ray (default: this one, if it can)")
    parser.add_argument("--only", default=None, help="comma-separated systems among detray,pool,ray (default: all available)")
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks and actor calls per async burst")
    parser.add_argument("--sync-calls", type=int, default=1_000, help="sequential calls timed for the sync latency")
    parser.add_argument("--array-mb", type=float, default=100.0, help="size of the put/get array in MB (10^6 bytes)")
    parser.add_argument("--array-repeats", type=int, default=5)
    parser.add_argument("--num-cpus", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--idle-s", type=float, default=2.0, help="idle time before memory is read")
    parser.add_argument("--timeout-s", type=float, default=300.0, help="limit on one child interpreter")
    parser.add_argument("--quick", action="store_true", help="small counts for a smoke test")
    parser.add_argument("--json", default=None, help="write every figure to this file")
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--child-config", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child_main(args.child, args.phase, json.loads(args.child_config))
        return 0

    if args.quick:
        args.tasks, args.sync_calls, args.array_mb, args.array_repeats, args.idle_s = 300, 50, 10.0, 2, 0.5
        args.timeout_s = min(args.timeout_s, 120.0)
    for name in ("tasks", "sync_calls", "array_repeats", "num_cpus"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    config = {
        "tasks": args.tasks, "sync_calls": args.sync_calls, "array_bytes": int(args.array_mb * MB),
        "array_repeats": args.array_repeats, "num_cpus": args.num_cpus, "idle_s": args.idle_s,
        "warmup": min(200, args.tasks), "timeout_s": max(1.0, args.timeout_s - 30),
    }
    chosen = SYSTEMS if args.only is None else tuple(name.strip() for name in args.only.split(","))
    unknown = [name for name in chosen if name not in SYSTEMS]
    if unknown:
        parser.error(f"--only: unknown system(s) {unknown}; choose among {list(SYSTEMS)}")

    subreaper = become_subreaper()
    results: dict[str, dict[str, Any]] = {}
    failed = False
    for system in SYSTEMS:
        if system not in chosen:
            continue
        python = sys.executable if system != "ray" else ray_interpreter(args.ray_python)
        if python is None:
            if args.only is not None:
                results[system] = {"metrics": {}, "errors": {"run": "Ray not found: give --ray-python"}}
                failed = True
            print("Ray: not run (`import ray` fails in this interpreter; give --ray-python)", flush=True)
            continue  # not installed and not asked for: its column says "not run", not a failure
        print(f"running {LABELS[system]} ({python}) ...", flush=True)
        results[system] = run_system(system, python, config, args.timeout_s, subreaper)
        failed = failed or bool(results[system]["errors"])

    rows = build_table(results, config)
    print()
    print(f"issue 6 microbenchmarks: num_cpus={args.num_cpus}, {os.cpu_count()} cores, "
          + ", ".join(f"{LABELS[s]}: {r.get('version', '?')}" for s, r in results.items()))
    print_table(rows)
    print()
    print(NOTES.format(idle_s=args.idle_s))
    for system, result in results.items():
        if result.get("idle_by_command_mib"):
            top = list(result["idle_by_command_mib"].items())[:10]
            print(f"idle PSS of {LABELS[system]} by command (MiB): " + ", ".join(f"{n} {m:g}" for n, m in top))
        if result.get("leftover_processes"):
            print(f"WARNING: {LABELS[system]} left {len(result['leftover_processes'])} processes running after its "
                  f"interpreter exited (killed now): {', '.join(result['leftover_processes'][:10])}")
        for name, message in result["errors"].items():
            print(f"ERROR {LABELS[system]} {name}: {message}")
        if result["errors"] and result.get("stderr"):
            print(f"--- {LABELS[system]} stderr (tail) ---\n{result['stderr'][-1500:]}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": config, "systems": results, "rows": rows}, indent=2))
        print(f"figures written to {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
