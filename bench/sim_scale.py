"""Simulated tasks per wall second, against a bare SimPy loop, as the cluster grows.

Usage (from the repository root):

    python bench/sim_scale.py                      # 100,000 tasks on 10, 100, 1000, 10000 nodes
    python bench/sim_scale.py --tasks 20000 --nodes 10 100
    python bench/sim_scale.py --quick              # 10,000 tasks on 10 and 100 nodes
    python bench/sim_scale.py --quick --split      # also: where the time went (slower)

For each cluster size the driver submits N no-op tasks (``@remote def
noop(): pass``) and gathers them with one ``get``; invariants off, the trace
on (``events`` level) and buffered to a file. Printed per size: the wall time
to bring the cluster up (not counted), the wall time of submit + get, tasks
per wall second, microseconds per task, and the ratio to the baseline.

``--split`` wraps ``Router.handle`` and ``Trace.write`` with timers and
watches the collector, then prints the time per task in the core, the trace
writer, garbage collection and the rest (the simulator around the core); a
collection that starts inside the core counts in both, and the wrappers add
about a microsecond per call, so the total is higher than without them.

The baseline, measured in the same run: a bare SimPy loop with one process
and one timeout per task (the least a SimPy simulation of N tasks can do).
The target (issue 3) is a ratio >= 0.25, flat from 100 to 10,000 nodes.

A second reference, also measured in the run: the same loop with each task's
body run as simulated user code (`user_code_floor`). Nothing in the simulator
can make a task cheaper than that, so its ratio to bare SimPy bounds every
ratio above, and "ratio to the floor" says how much of a task's cost is
everything else (the core, the network and object store models, the trace).

A third, on the smallest cluster only (skip it with ``--no-direct``): the same
number of no-op calls spread round-robin over one actor per CPU
(`direct_calls`). An actor call is pushed straight to its actor's worker: no
placement, no forward, no spill, four core events instead of six. That is the
path Ray's lease reuse gives an ordinary task (the owner keeps a granted
worker and pushes its next task of the same shape to it), so its ratio is what
adopting that model would reach at best, before any further trimming.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
from pathlib import Path
from time import perf_counter  # bound before the simulator patches time: real time

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import simpy  # noqa: E402

import detray  # noqa: E402
import detray.sim  # noqa: E402
from detray.sim.cluster import GC_YOUNG_THRESHOLD  # noqa: E402

TASK_DURATION_S = 0.001
CPUS_PER_NODE = 4


def bare_simpy(tasks: int) -> float:
    """Wall seconds for N SimPy processes of one timeout each."""
    env = simpy.Environment()

    def task(env: simpy.Environment) -> simpy.events.Event:
        yield env.timeout(TASK_DURATION_S)

    start = perf_counter()
    for _ in range(tasks):
        env.process(task(env))
    env.run()
    return perf_counter() - start


def user_code_floor(tasks: int) -> float:
    """Wall seconds for the bare SimPy loop plus running each task's body as
    simulated user code: one `Runner.start` of a no-op unit per task (a pooled
    greenlet switched in and out, the unit's own seeded ``random`` and
    ``numpy.random`` states swapped in and out, the outcome built). What any
    simulator that runs unmodified task bodies with per-task random states must
    pay at least, before scheduling, the network, the object store or the trace."""
    from detray.sim.usercode import Runner, UserCode

    env = simpy.Environment()

    def body() -> None:
        return None

    with Runner(clock=lambda: env.now, seed=0) as runner:
        start_unit = runner.start

        def task(env: simpy.Environment, index: int) -> simpy.events.Event:
            yield env.timeout(TASK_DURATION_S)
            start_unit(UserCode(body, key=("floor", index)))

        start = perf_counter()
        for index in range(tasks):
            env.process(task(env, index))
        env.run()
        return perf_counter() - start


@detray.remote
def noop() -> None:
    return None


def core_only(tasks: int, nodes: int) -> float:
    """Wall seconds for the core alone (the router driven directly, every task run on
    the spot: no SimPy, no user code, no trace): the floor under the simulator. The
    collector runs as in a simulation (young generation every 50,000 allocations)."""
    from collections import deque

    from detray.core import commands as C
    from detray.core import events as E
    from detray.core import ids
    from detray.core.resources import units_of
    from detray.core.router import Router
    from detray.core.specs import TaskSpec

    router = Router()
    for index in range(nodes):
        router.handle(
            E.NodeJoined(
                now=0.0,
                stimulus_id="join",
                node=ids.node_id(index),
                incarnation=1,
                resources=units_of({"CPU": CPUS_PER_NODE}),
                object_store_bytes=1 << 30,
            )
        )
    job = ids.job_id(1)
    driver = ids.driver_task_id(job)
    head = ids.node_id(0)
    owner = ids.WorkerID(f"{head}/driver")
    cpu = units_of({"CPU": 1})
    thresholds = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *thresholds[1:])
    start = perf_counter()
    pending: deque[C.Command] = deque()
    returns = []
    for counter in range(tasks):
        task = ids.task_id(job, driver, counter)
        ret = ids.return_object_id(task, 1)
        returns.append(ret)
        spec = TaskSpec(task_id=task, job_id=job, owner=owner, name="noop", return_ids=(ret,), resources=cpu)
        pending.extend(router.handle(E.TaskSubmitted(now=0.0, stimulus_id=task, spec=spec, node=head)))
    router.handle(E.RefsAdded(now=0.0, stimulus_id="refs", owner=owner, objects=tuple(returns)))
    while pending:
        command = pending.popleft()
        if isinstance(command, C.StartWorker):
            pending.extend(router.handle(E.WorkerStarted(now=0.0, stimulus_id="w", worker=command.worker, node=command.node)))
        elif isinstance(command, C.ForwardTask):
            pending.extend(router.handle(router.arrival(command, now=0.0)))
        elif isinstance(command, C.StartTask):
            task = command.spec.task_id
            common = {"now": 0.0, "stimulus_id": task, "task": task, "attempt": command.attempt, "node": command.node, "worker": command.worker}
            pending.extend(router.handle(E.TaskStarted(**common)))
            sizes = tuple((obj, 16) for obj in command.spec.return_ids)
            pending.extend(router.handle(E.TaskFinished(**common, return_sizes=sizes)))
    elapsed = perf_counter() - start
    gc.set_threshold(*thresholds)
    return elapsed


class Split:
    """Wall time inside the core, the trace writer and the collector while installed."""

    def __init__(self) -> None:
        from detray.core.router import Router
        from detray.sim.trace import Trace

        self.seconds = {"core": 0.0, "trace": 0.0, "gc": 0.0}
        self._patched = [(Router, "handle"), (Trace, "write")]  # Trace.emit calls write too
        self._originals = [getattr(cls, name) for cls, name in self._patched]
        self._gc_started = 0.0
        for (cls, name), key in zip(self._patched, ("core", "trace")):
            setattr(cls, name, self._timed(getattr(cls, name), key))
        gc.callbacks.append(self._on_gc)

    def _timed(self, fn, key: str):  # type: ignore[no-untyped-def]
        seconds = self.seconds

        def timed(*args, **kwargs):  # type: ignore[no-untyped-def]
            start = perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[key] += perf_counter() - start

        return timed

    def _on_gc(self, phase: str, info: dict) -> None:  # type: ignore[type-arg]
        if phase == "start":
            self._gc_started = perf_counter()
        else:
            self.seconds["gc"] += perf_counter() - self._gc_started

    def remove(self) -> None:
        for (cls, name), original in zip(self._patched, self._originals):
            setattr(cls, name, original)
        gc.callbacks.remove(self._on_gc)


def simulated(
    tasks: int, nodes: int, trace_dir: str, split: bool = False
) -> tuple[float, float, float, int, dict[str, float] | None]:
    """(bring-up wall s, submit+get wall s, virtual s, trace lines, split seconds or None)."""
    start = perf_counter()
    detray.init(
        mode="sim",
        seed=0,
        cluster={"nodes": [{"count": nodes, "resources": {"CPU": CPUS_PER_NODE}}]},
        check_invariants=False,
        trace_path=f"{trace_dir}/trace-{nodes}.jsonl",
        trace_level="events",
    )
    up = perf_counter() - start
    cluster = detray.sim.current_cluster()
    gc.collect()
    timers = Split() if split else None
    start = perf_counter()
    refs = [noop.remote() for _ in range(tasks)]
    values = detray.get(refs)
    elapsed = perf_counter() - start
    if timers is not None:
        timers.remove()
    assert len(values) == tasks and values[0] is None
    virtual_s = cluster.now()
    lines = len(cluster.trace)
    del refs, values
    detray.shutdown()
    return up, elapsed, virtual_s, lines, None if timers is None else timers.seconds


@detray.remote
class NoopActor:
    def noop(self) -> None:
        return None


def direct_calls(tasks: int, nodes: int, trace_dir: str) -> float:
    """Wall seconds for N no-op actor calls, round-robin over one actor per CPU
    (actors created and warmed up first, not counted); same settings as `simulated`."""
    detray.init(
        mode="sim",
        seed=0,
        cluster={"nodes": [{"count": nodes, "resources": {"CPU": CPUS_PER_NODE}}]},
        check_invariants=False,
        trace_path=f"{trace_dir}/direct-{nodes}.jsonl",
        trace_level="events",
    )
    actors = [NoopActor.remote() for _ in range(nodes * CPUS_PER_NODE)]
    detray.get([actor.noop.remote() for actor in actors])
    gc.collect()
    count = len(actors)
    start = perf_counter()
    refs = [actors[index % count].noop.remote() for index in range(tasks)]
    values = detray.get(refs)
    elapsed = perf_counter() - start
    assert len(values) == tasks and values[-1] is None
    del refs, values, actors
    detray.shutdown()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, nargs="*", default=[10, 100, 1000, 10000])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--split", action="store_true", help="also print where the time went (adds overhead)")
    parser.add_argument("--no-direct", action="store_true", help="skip the actor-call (direct path) reference")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.nodes = 10_000, [10, 100]
    baseline_s = min(bare_simpy(args.tasks) for _ in range(3))
    baseline_rate = args.tasks / baseline_s
    print(f"bare SimPy: {args.tasks} tasks in {baseline_s:.3f} s = {baseline_rate:,.0f} tasks/s "
          f"({1e6 * baseline_s / args.tasks:.2f} us/task)")
    floor_s = min(user_code_floor(args.tasks) for _ in range(3))
    floor_rate = args.tasks / floor_s
    print(f"bare SimPy + each body run as user code (the floor): {1e6 * floor_s / args.tasks:.2f} us/task, "
          f"ratio to bare SimPy {floor_rate / baseline_rate:.3f}")
    with tempfile.TemporaryDirectory() as trace_dir:
        for nodes in args.nodes:
            core_s = core_only(args.tasks, nodes)
            print(f"{nodes:>6} nodes: core alone (router driven directly) {1e6 * core_s / args.tasks:6.1f} us/task", flush=True)
            up, elapsed, virtual_s, lines, split = simulated(args.tasks, nodes, trace_dir, args.split)
            rate = args.tasks / elapsed
            print(
                f"{nodes:>6} nodes: bring-up {up:7.2f} s | {args.tasks} tasks in {elapsed:7.2f} s = "
                f"{rate:>9,.0f} tasks/s ({1e6 * elapsed / args.tasks:6.1f} us/task), "
                f"ratio to bare SimPy {rate / baseline_rate:.3f}, to the floor {rate / floor_rate:.3f} | virtual {virtual_s:.3f} s, "
                f"{lines} trace lines",
                flush=True,
            )
            if split is not None:
                per_task = {key: 1e6 * value / args.tasks for key, value in split.items()}
                rest = 1e6 * elapsed / args.tasks - sum(per_task.values())
                print(
                    f"{nodes:>6} nodes: split (us/task): core {per_task['core']:.1f} | trace {per_task['trace']:.1f} | "
                    f"gc {per_task['gc']:.1f} | simulator and the rest {rest:.1f}",
                    flush=True,
                )
        if not args.no_direct:
            nodes = min(args.nodes)
            direct_s = direct_calls(args.tasks, nodes, trace_dir)
            rate = args.tasks / direct_s
            print(
                f"{nodes:>6} nodes: {args.tasks} direct calls (no-op actor calls, one actor per CPU: the path lease "
                f"reuse would give each task) {1e6 * direct_s / args.tasks:6.1f} us/call, "
                f"ratio to bare SimPy {rate / baseline_rate:.3f}, to the floor {rate / floor_rate:.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
