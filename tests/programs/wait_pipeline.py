"""Processing results in completion order with wait(num_returns=1), a cap on tasks in flight, wait with a timeout.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import time, random

ray.init(num_cpus=4)

@ray.remote
def work(i):
    time.sleep(random.Random(i).random() * 0.2)
    return i * i

# process in completion order
refs = [work.remote(i) for i in range(20)]
unfinished = refs
total = 0
seen = []
while unfinished:
    finished, unfinished = ray.wait(unfinished, num_returns=1)
    assert len(finished) == 1
    v = ray.get(finished[0])
    seen.append(v)
    total += v
assert total == sum(i * i for i in range(20))
assert sorted(seen) == sorted(i * i for i in range(20))

# backpressure: limit in-flight tasks
MAX_IN_FLIGHT = 3
result_refs = []
results = []
for i in range(15):
    if len(result_refs) > MAX_IN_FLIGHT:
        num_ready = i - MAX_IN_FLIGHT
        ready, result_refs = ray.wait(result_refs, num_returns=1)
        results += ray.get(ready)
    result_refs.append(work.remote(i))
results += ray.get(result_refs)
assert sorted(results) == [i * i for i in range(15)]

# wait with timeout returns partial
@ray.remote
def slow():
    time.sleep(3)
    return 1
s = slow.remote()
f = work.remote(1)
ready, not_ready = ray.wait([s, f], num_returns=2, timeout=1.0)
assert ready == [f] and not_ready == [s], (ready, not_ready)
# wait with num_returns=len and timeout=0
ready, not_ready = ray.wait([s], timeout=0)
assert ready == [] and not_ready == [s]
ray.shutdown()
print("OK")
