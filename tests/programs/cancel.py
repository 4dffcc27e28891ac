"""cancel of a running, a queued, a force-cancelled and a finished task; recursive cancel.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import time
from detray.exceptions import TaskCancelledError

ray.init(num_cpus=4)

@ray.remote
def blocking_operation():
    time.sleep(10e6)

t0 = time.time()
obj_ref = blocking_operation.remote()
time.sleep(0.5)
ray.cancel(obj_ref)
try:
    ray.get(obj_ref)
    raise AssertionError
except TaskCancelledError:
    print("cancelled running task in", round(time.time() - t0, 2))

# cancel queued tasks (only 4 CPUs, queue 8)
refs = [blocking_operation.remote() for _ in range(8)]
time.sleep(0.5)
for r in refs:
    ray.cancel(r)
for r in refs:
    try:
        ray.get(r, timeout=30)
        raise AssertionError
    except TaskCancelledError:
        pass

# force=True
r = blocking_operation.remote()
time.sleep(0.5)
ray.cancel(r, force=True)
try:
    ray.get(r, timeout=30)
    raise AssertionError
except (TaskCancelledError, ray.exceptions.WorkerCrashedError) as e:
    print("force:", type(e).__name__)

# recursive: parent spawning children
@ray.remote
def parent():
    kids = [blocking_operation.remote() for _ in range(2)]
    ray.get(kids)
p = parent.remote()
time.sleep(1.0)
ray.cancel(p)
try:
    ray.get(p, timeout=30)
except TaskCancelledError:
    pass
# after cancels, all CPUs back
time.sleep(1.0)
av = ray.available_resources()
print("avail after cancels", av)
assert av.get("CPU") == 4.0, av

# cancelling a finished task is a no-op
@ray.remote
def quick():
    return 5
q = quick.remote()
assert ray.get(q) == 5
ray.cancel(q)
assert ray.get(q) == 5
ray.shutdown()
print("OK")
