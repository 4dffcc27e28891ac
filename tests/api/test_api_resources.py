"""Resources: cluster totals, what tasks hold, GPU ids, custom resources."""

from __future__ import annotations

import time

import detray as ray


def test_cluster_resources_report_the_node(driver):
    driver.init(num_cpus=3, num_gpus=2, resources={"disk": 5})
    total = ray.cluster_resources()
    assert total["CPU"] == 3.0 and total["GPU"] == 2.0 and total["disk"] == 5.0
    assert ray.available_resources()["CPU"] == 3.0
    assert len([n for n in ray.nodes() if n["Alive"]]) == 1


def test_a_running_task_holds_its_cpus(driver):
    driver.init(num_cpus=4)

    @ray.remote(num_cpus=3)
    def hold(seconds):
        time.sleep(seconds)
        return 1

    ref = hold.remote(0.5)
    time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0.0) == 1.0
    assert ray.get(ref) == 1


def test_concurrent_gpu_tasks_get_distinct_gpu_ids(driver):
    driver.init(num_cpus=4, num_gpus=2)

    @ray.remote(num_gpus=1)
    def gpu(seconds):
        time.sleep(seconds)
        return ray.get_gpu_ids()

    ids = ray.get([gpu.remote(0.2), gpu.remote(0.2)])
    assert sorted(i for pair in ids for i in pair) == [0, 1]


def test_fractional_gpus_share_one_gpu(driver):
    driver.init(num_cpus=4, num_gpus=1)

    @ray.remote(num_gpus=0.5)
    def half(seconds):
        time.sleep(seconds)
        return ray.get_gpu_ids()

    assert ray.get([half.remote(0.2), half.remote(0.2)]) == [[0], [0]]


def test_an_actor_keeps_its_gpu_for_its_methods(driver):
    driver.init(num_cpus=2, num_gpus=2)

    @ray.remote(num_gpus=1)
    class Model:
        def devices(self):
            return ray.get_gpu_ids()

    model = Model.remote()
    assert len(ray.get(model.devices.remote())) == 1
    assert ray.get(model.devices.remote()) == ray.get(model.devices.remote())


def test_the_driver_has_no_gpus(driver):
    driver.init(num_cpus=1, num_gpus=1)
    assert ray.get_gpu_ids() == []


def test_custom_resources_limit_concurrency(driver):
    driver.init(num_cpus=8, resources={"slot": 2})

    @ray.remote(resources={"slot": 1})
    def use_slot(seconds):
        start = time.monotonic()
        time.sleep(seconds)
        return start

    starts = sorted(ray.get([use_slot.remote(0.3) for _ in range(4)]))
    assert starts[2] - starts[0] >= 0.25  # the third waited for a slot
