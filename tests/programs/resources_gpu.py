"""Fractional GPUs, custom resources, get_gpu_ids and available_resources during a run.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import time

ray.init(num_cpus=4, num_gpus=2, resources={"special": 2})
assert ray.cluster_resources()["GPU"] == 2.0
assert ray.cluster_resources()["special"] == 2.0

@ray.remote(num_gpus=0.5)
def half():
    import os
    return ray.get_gpu_ids(), os.environ.get("CUDA_VISIBLE_DEVICES")

@ray.remote(num_gpus=1)
def one():
    return ray.get_gpu_ids()

@ray.remote(resources={"special": 1})
def special(x):
    time.sleep(0.5)
    return x

@ray.remote(num_gpus=1)
class GPUActor:
    def ids(self):
        return ray.get_gpu_ids()

ids = ray.get([one.remote(), one.remote()])
print("one:", ids)
assert all(len(i) == 1 for i in ids)
halves = ray.get([half.remote() for _ in range(4)])
print("half:", halves)
assert all(len(g) == 1 for g, _ in halves)
a = GPUActor.remote()
aid = ray.get(a.ids.remote())
assert len(aid) == 1
assert ray.get_gpu_ids() == []  # driver

# custom resources limit concurrency: 4 tasks of 0.5s with 2 units -> ~1s
t0 = time.time()
assert ray.get([special.remote(i) for i in range(4)]) == [0, 1, 2, 3]
el = time.time() - t0
assert el >= 0.9, el
# options override resources
@ray.remote
def plain():
    return ray.get_runtime_context().get_assigned_resources()
r = ray.get(plain.options(num_cpus=0.5, resources={"special": 0.25}).remote())
print("assigned:", r)
assert r.get("special") == 0.25 and r.get("CPU") == 0.5
# available resources during run
@ray.remote(num_cpus=2)
def hold():
    time.sleep(1.5)
    return 1
h = hold.remote()
time.sleep(0.7)
avail = ray.available_resources()
print("avail during:", avail)
cpu_during = avail.get("CPU", 0)
ray.get(h)
del a
for _ in range(30):
    time.sleep(0.1)
    avail2 = ray.available_resources()
    if avail2["GPU"] == 2.0:
        break
print("avail after:", avail2)
assert cpu_during == 1.0, cpu_during  # 4 - 2 held by hold - 1 held by GPUActor (Ray: an actor naming a resource holds 1 CPU)
assert avail2["CPU"] == 4.0 and avail2["GPU"] == 2.0
ray.shutdown()
print("OK")
