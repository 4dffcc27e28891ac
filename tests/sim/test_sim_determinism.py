"""Determinism: same program, cluster and seed give the same trace, here and in a fresh
process with another PYTHONHASHSEED; the check names the first line that differs."""

from __future__ import annotations

import random
import textwrap
import time

import numpy as np

import detray as ray
import detray.sim
from detray.sim import faults

CLUSTER = {"nodes": [{"count": 3, "resources": {"CPU": 2}}], "failure_detector_timeout_s": 0.5}

PROGRAM = textwrap.dedent(
    """
    import random
    import time

    import numpy as np

    import detray as ray
    from detray.sim import faults

    ray.init(mode="sim", durations={"work": {"dist": "exponential", "mean": 0.2}})

    @ray.remote
    def work(i):
        time.sleep(random.random())
        return i, random.random(), float(np.random.rand())

    @ray.remote
    class Acc:
        def __init__(self):
            self.seen = []

        def add(self, x):
            self.seen.append(x)
            return len(self.seen)

    faults.schedule(faults.KillNode(node=2, at_s=0.7), faults.RestartNode(node=2, at_s=3.0))
    acc = Acc.remote()
    refs = [work.remote(i) for i in range(12)]
    for ref in refs:
        acc.add.remote(ref)
    print(sorted(ray.get(refs))[:3], ray.get(acc.add.remote(None)))
    ray.shutdown()
    """
)


def workload(seed: int) -> tuple[str, list[tuple[int, float, float]]]:
    ray.init(mode="sim", seed=seed, cluster=CLUSTER, durations={"work": {"dist": "uniform", "low": 0.1, "high": 0.5}})

    @ray.remote
    def work(i):
        time.sleep(random.random())
        return i, random.random(), float(np.random.rand())

    faults.schedule(faults.KillNode(node=1, at_s=0.3), faults.EvictCopies(node=0, fraction=0.5, at_s=2.0))
    values = ray.get([work.remote(i) for i in range(10)])
    time.sleep(3.0)
    values = ray.get([work.remote(i) for i in range(10)]) + values
    digest = detray.sim.current_cluster().trace.digest()
    ray.shutdown()
    return digest, values


def test_the_same_seed_gives_the_same_trace_and_values():
    assert workload(3) == workload(3)


def test_another_seed_gives_another_run():
    assert workload(3)[0] != workload(4)[0]


def test_a_tasks_random_numbers_do_not_depend_on_where_or_when_it_ran():
    def values(cluster: dict) -> list[float]:
        ray.init(mode="sim", seed=9, cluster=cluster)

        @ray.remote
        def draw(i):
            return random.random(), float(np.random.rand())

        out = ray.get([draw.remote(i) for i in range(6)])
        ray.shutdown()
        return out

    one_node = values({"nodes": [{"resources": {"CPU": 1}}]})
    many_nodes = values({"nodes": [{"count": 3, "resources": {"CPU": 4}}]})
    assert one_node == many_nodes
    assert len(set(one_node)) == 6


def test_check_determinism_runs_a_script_in_a_fresh_process(tmp_path):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    report = detray.sim.check_determinism(str(script), cluster=CLUSTER, seed=5, workdir=str(tmp_path / "out"))
    assert report, str(report)
    assert report.lines[0] == report.lines[1] > 20
    assert report.digests[0] == report.digests[1]


def test_check_determinism_reports_the_first_differing_line(tmp_path):
    script = tmp_path / "uses_uuid.py"
    script.write_text(
        textwrap.dedent(
            """
            import uuid
            import detray as ray

            ray.init(mode="sim")

            @ray.remote
            def name():
                print("my id is", uuid.uuid4())
                return 1

            ray.get(name.remote())
            """
        )
    )
    report = detray.sim.check_determinism(str(script), seed=0, workdir=str(tmp_path / "out"))
    assert not report
    index, here, fresh = report.difference
    assert "my id is" in here and "my id is" in fresh and here != fresh
    text = str(report)
    assert "NOT deterministic" in text and here in text and fresh in text


def program_in_a_module() -> None:
    """A driver program as a function: check_determinism imports and calls it."""

    @ray.remote
    def square(i):
        time.sleep(random.random())
        return i * i

    assert ray.get([square.remote(i) for i in range(8)]) == [i * i for i in range(8)]


def test_check_determinism_runs_a_function_of_an_importable_module(tmp_path):
    report = detray.sim.check_determinism(program_in_a_module, cluster=CLUSTER, seed=2, workdir=str(tmp_path))
    assert report, str(report)
    assert report.lines[0] > 10
