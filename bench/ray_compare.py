"""One node-kill-and-reconstruct test: detray's simulator against Ray's multi-node test cluster.

Usage (from the repository root):

    python bench/ray_compare.py --ray-python /path/to/venv-with-ray/bin/python
    python bench/ray_compare.py               # detray only, when no Ray is installed

The test, the same on both (the way Ray's own tests check reconstruction):
a head node and two worker nodes; a task pinned to worker node 1 produces an
array; node 1 is removed; ``get`` of the array must rebuild it from lineage
and return the right value. Timed from cluster start to shutdown, best of
``--repeat`` runs each. Ray runs in the given interpreter (a subprocess:
Ray and detray both want to own ``import ray``-style global state); detray
runs in this one. Issue 5's goal: detray at least 100x faster.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from time import perf_counter  # bound before the simulator patches time: real time

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RAY_TEST = r'''
import json, time
start = time.perf_counter()
import numpy as np
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

cluster = Cluster()
cluster.add_node(num_cpus=1)
ray.init(address=cluster.address)
victim = cluster.add_node(num_cpus=1, resources={"victim": 1})
cluster.add_node(num_cpus=1)
cluster.wait_for_nodes()

@ray.remote(max_retries=3)
def produce():
    return np.arange(100_000)

ref = produce.options(resources={"victim": 0.1}).remote()
ray.wait([ref], fetch_local=False)
cluster.remove_node(victim, allow_graceful=False)
cluster.add_node(num_cpus=1, resources={"victim": 1})
value = ray.get(ref, timeout=120)
assert int(value.sum()) == sum(range(100_000))
ray.shutdown()
cluster.shutdown()
print(json.dumps({"wall_s": time.perf_counter() - start}))
'''


def detray_once() -> float:
    import numpy as np

    import detray
    from detray.sim import faults

    start = perf_counter()
    detray.init(
        mode="sim", seed=0,
        cluster={"nodes": [{"count": 1, "resources": {"CPU": 1}}, {"count": 2, "resources": {"CPU": 1}}]},
        faults=[faults.KillNode(at_s=0.01, node=1), faults.RestartNode(at_s=0.5, node=1)],
    )

    @detray.remote(max_retries=3)
    def produce() -> np.ndarray:
        return np.arange(100_000)

    from detray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    ref = produce.options(scheduling_strategy=NodeAffinitySchedulingStrategy("node-00001", soft=True)).remote()
    detray.wait([ref], fetch_local=False)
    import time

    time.sleep(0.05)  # virtual: node 1 dies meanwhile (the fault at 0.01 s), as Ray's test removes it here
    value = detray.get(ref, timeout=120)
    assert int(value.sum()) == sum(range(100_000))
    rebuilt = detray.sim.current_cluster().router.tasks.stats.get("reconstructions", 0)
    detray.shutdown()
    assert rebuilt >= 1, "the array was not rebuilt: the test did not test reconstruction"
    return perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ray-python", default=None, help="an interpreter that can import ray")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    detray_s = min(detray_once() for _ in range(args.repeat))
    print(f"detray simulator: {detray_s * 1000:.1f} ms (best of {args.repeat})")
    if args.ray_python is None:
        print("Ray: not measured (give --ray-python)")
        return
    ray_runs = []
    for _ in range(args.repeat):
        done = subprocess.run([args.ray_python, "-c", RAY_TEST], capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            print(f"Ray run failed:\n{done.stderr[-2000:]}")
            return
        ray_runs.append(json.loads(done.stdout.strip().splitlines()[-1])["wall_s"])
    ray_s = min(ray_runs)
    print(f"Ray cluster_utils.Cluster: {ray_s:.2f} s (best of {args.repeat})")
    print(f"detray is {ray_s / detray_s:.0f}x faster (goal: >= 100x)")


if __name__ == "__main__":
    main()
