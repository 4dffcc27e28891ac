"""The simulated cluster as a program sees it: init forms, nodes, virtual time, durations,
shutdown and restart, and the limits that stop runaway runs."""

from __future__ import annotations

import asyncio
import time

import pytest

import detray as ray
import detray.sim
from detray.sim.errors import SimulationLimitError

THREE_NODES = {"nodes": [{"count": 3, "resources": {"CPU": 4, "GPU": 2}, "object_store_mb": 512, "name": "head"}]}


@ray.remote
def node_of():
    time.sleep(0.5)
    return ray.get_runtime_context().get_node_id()


def test_init_with_a_cluster_description_builds_numbered_nodes():
    ray.init(mode="sim", seed=1, cluster={**THREE_NODES, "network": {"latency_ms": 0.2, "bandwidth_mb_per_s": 1250}})
    nodes = ray.nodes()
    assert [n["NodeID"] for n in nodes] == ["node-00000", "node-00001", "node-00002"]
    assert all(n["Alive"] for n in nodes)
    assert ray.cluster_resources() == {"CPU": 12.0, "GPU": 6.0}
    assert ray.get_runtime_context().get_node_id() == "node-00000"  # the driver runs on the head


def test_tasks_spread_over_the_nodes_when_the_head_is_busy():
    ray.init(mode="sim", seed=1, cluster={"nodes": [{"count": 3, "resources": {"CPU": 1}}]})
    assert set(ray.get([node_of.remote() for _ in range(3)])) == {"node-00000", "node-00001", "node-00002"}


def test_init_keywords_shape_a_one_node_cluster():
    ray.init(mode="sim", num_cpus=4, num_gpus=2, resources={"tpu": 1})
    assert ray.cluster_resources() == {"CPU": 4.0, "GPU": 2.0, "tpu": 1.0}
    assert len(ray.nodes()) == 1


def test_detray_mode_and_seed_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("DETRAY_MODE", "sim")
    monkeypatch.setenv("DETRAY_SEED", "7")
    context = ray.init(num_cpus=2)
    assert context["mode"] == "sim" and context["seed"] == 7


def test_cluster_and_one_node_keywords_cannot_be_mixed():
    with pytest.raises(ValueError, match="num_cpus"):
        ray.init(mode="sim", num_cpus=2, cluster=THREE_NODES)


@pytest.mark.parametrize(
    "cluster, message",
    [
        ({"nodes": []}, "non-empty"),
        ({"nodes": [{"cpus": 1}]}, "unknown keys"),
        ({"nodes": [{"count": 0}]}, "count"),
        ({"nodes": [{}], "network": {"latency": 1}}, "unknown keys"),
        ({"nodes": [{"resources": {"GPU": 1.5}}]}, "GPU"),
    ],
)
def test_a_bad_cluster_description_names_the_problem(cluster, message):
    with pytest.raises(ValueError, match=message):
        ray.init(mode="sim", cluster=cluster)


def test_unknown_init_keywords_are_refused_and_ray_knobs_ignored():
    with pytest.raises(TypeError, match="bogus"):
        ray.init(mode="sim", bogus=1)
    ray.init(mode="sim", include_dashboard=False, logging_level="info")


def test_shutdown_ends_the_simulation_and_init_starts_afresh():
    ray.init(mode="sim", seed=3)
    runner = detray.sim.current_cluster().runner
    assert ray.get(node_of.remote()) == "node-00000"
    ray.shutdown()
    assert not ray.is_initialized()
    assert runner.suspended == []
    before = time.monotonic()
    assert before > 1000 or before >= 0  # real time again outside the simulation
    ray.init(mode="sim", seed=3)
    assert time.monotonic() == 0.0
    assert ray.get(node_of.remote()) == "node-00000"


def test_time_is_virtual_for_the_driver_and_tasks():
    ray.init(mode="sim", seed=0)

    @ray.remote
    def nap():
        start = time.monotonic()
        time.sleep(100.0)
        return time.monotonic() - start

    wall = time.perf_counter()
    assert ray.get(nap.remote()) == pytest.approx(100.0)
    time.sleep(3600)
    assert time.monotonic() == pytest.approx(3600 + 100.0, abs=0.1)
    assert time.time() == pytest.approx(detray.sim.virtual_env.EPOCH_S + time.monotonic())
    assert time.perf_counter() - wall > 3000  # virtual seconds, not wall seconds


def test_durations_set_how_long_tasks_take():
    ray.init(mode="sim", seed=0, durations={"default": 0.5, "slow": 2.0})

    @ray.remote
    def fast():
        return time.monotonic()

    @ray.remote
    def slow():
        return time.monotonic()

    start = time.monotonic()
    ray.get(fast.remote())
    assert time.monotonic() - start == pytest.approx(0.5)
    start = time.monotonic()
    ray.get(slow.remote())
    assert time.monotonic() - start == pytest.approx(2.0)
    detray.sim.set_durations({"slow": 1.0})
    start = time.monotonic()
    ray.get(slow.remote())
    assert time.monotonic() - start == pytest.approx(1.0)


def test_random_durations_are_drawn_per_attempt_and_reproducible():
    def run() -> list[float]:
        ray.init(mode="sim", seed=5, durations={"jitter": {"dist": "normal", "mean": 1.0, "std": 0.3}})

        @ray.remote(num_cpus=0)
        def jitter(i):
            return i

        ends = []
        for i in range(5):
            start = time.monotonic()
            ray.get(jitter.remote(i))
            ends.append(round(time.monotonic() - start, 9))
        ray.shutdown()
        return ends

    first, second = run(), run()
    assert first == second
    assert len(set(first)) == 5


def test_set_durations_before_init_applies_to_the_next_run():
    detray.sim.set_durations({"default": 0.25})
    ray.init(mode="sim")

    @ray.remote
    def f():
        return 1

    start = time.monotonic()
    ray.get(f.remote())
    assert time.monotonic() - start == pytest.approx(0.25)


def test_a_bad_duration_spec_is_refused():
    with pytest.raises(ValueError, match="dist"):
        detray.sim.set_durations({"f": {"dist": "lognormal"}})


def test_asyncio_sleep_in_an_async_actor_is_virtual():
    ray.init(mode="sim")

    @ray.remote
    class Waiter:
        async def wait(self, seconds):
            start = time.monotonic()
            await asyncio.sleep(seconds)
            return time.monotonic() - start

    waiter = Waiter.remote()
    wall = time.perf_counter()
    assert ray.get(waiter.wait.remote(500.0)) == pytest.approx(500.0)
    assert time.perf_counter() - wall >= 500.0  # the driver's perf_counter is virtual too


def test_the_virtual_time_limit_stops_a_runaway_run():
    ray.init(mode="sim", max_virtual_time_s=10.0)

    @ray.remote
    def forever():
        while True:
            time.sleep(1.0)

    with pytest.raises(SimulationLimitError, match="virtual time"):
        ray.get(forever.remote())


def test_the_event_limit_stops_a_runaway_run():
    ray.init(mode="sim", max_events=200)

    @ray.remote
    def forever():
        while True:
            time.sleep(0.001)

    with pytest.raises(SimulationLimitError, match="events"):
        ray.get(forever.remote())


def test_print_in_tasks_is_labelled_and_traced(capsys):
    ray.init(mode="sim", cluster={"nodes": [{"count": 2, "resources": {"CPU": 1}}]})

    @ray.remote
    def hello(i):
        print("hello", i)

    ray.get([hello.remote(i) for i in range(2)])
    out = capsys.readouterr().out.splitlines()
    assert any(line.endswith(") hello 0") and "ip=node-0000" in line for line in out)
    trace = detray.sim.current_cluster().trace.lines
    assert any('"kind":"print"' in line and "hello 1" in line for line in trace)


def test_log_to_driver_false_silences_task_output(capsys):
    ray.init(mode="sim", log_to_driver=False)

    @ray.remote
    def hello():
        print("quiet please")

    ray.get(hello.remote())
    print("driver speaks")
    out = capsys.readouterr().out
    assert "quiet please" not in out and "driver speaks" in out


def test_api_calls_from_a_user_thread_are_refused():
    import threading

    ray.init(mode="sim")
    errors: list[BaseException] = []

    def call() -> None:
        try:
            ray.put(1)
        except BaseException as error:  # noqa: B036
            errors.append(error)

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    assert errors and isinstance(errors[0], ray.exceptions.RaySystemError)


def test_a_crash_of_the_simulator_reaches_the_driver_and_init_works_again(monkeypatch):
    ray.init(mode="sim")
    cluster = detray.sim.current_cluster()

    def broken(command):
        raise AssertionError("a simulated core bug")

    monkeypatch.setitem(cluster._handlers, type_of_start_task(), broken)

    @ray.remote
    def f():
        return 1

    with pytest.raises(AssertionError, match="simulated core bug"):
        ray.get(f.remote())
    assert not ray.is_initialized()
    assert cluster.runner.suspended == []
    ray.shutdown()
    ray.init(mode="sim")
    assert ray.get(f.remote()) == 1


def type_of_start_task() -> type:
    from detray.core.commands import StartTask

    return StartTask


def test_big_objects_take_network_time_between_nodes():
    ray.init(
        mode="sim",
        cluster={"nodes": [{"count": 2, "resources": {"CPU": 1}, "object_store_mb": 2048}], "network": {"latency_ms": 1, "bandwidth_mb_per_s": 100}},
        durations={"default": 0.0},
    )
    from detray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote
    def produce():
        return bytes(100 * 1024 * 1024)

    ref = produce.options(scheduling_strategy=NodeAffinitySchedulingStrategy("node-00001", soft=False)).remote()
    ray.wait([ref], fetch_local=False)
    start = time.monotonic()
    assert len(ray.get(ref)) == 100 * 1024 * 1024
    assert time.monotonic() - start == pytest.approx(1.0 + 0.001, rel=0.01)  # 100 MB at 100 MB/s, plus latency


def test_an_actor_created_in_a_task_lives_on_through_its_returned_handle():
    ray.init(mode="sim")

    @ray.remote
    class Box:
        def __init__(self, v):
            self.v = v

        def get(self):
            return self.v

    @ray.remote
    def build():
        return [Box.remote("inside")]

    (box,) = ray.get(build.remote())
    import gc

    gc.collect()
    time.sleep(0.1)
    assert ray.get(box.get.remote()) == "inside"


def test_the_trace_opens_and_closes_the_run(tmp_path):
    path = tmp_path / "trace.jsonl"
    ray.init(mode="sim", trace_path=str(path))

    @ray.remote
    def f():
        return 1

    ray.get(f.remote())
    ray.shutdown()
    lines = path.read_text().splitlines()
    assert '"kind":"sim.start"' in lines[0] and '"kind":"sim.end"' in lines[-1]
    kinds = [line.split('"kind":"')[1].split('"')[0] for line in lines]
    assert kinds.count("task.started") == 1 and kinds.count("task.finished") == 1
