"""A 150 MB task return and 5 x 60 MB puts into a 200 MB store (spilling).

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import numpy as np, time

ray.init(num_cpus=4, object_store_memory=200 * 1024 * 1024)

@ray.remote
def produce(mb, v):
    return np.full(mb * 1024 * 1024 // 8, v, dtype=np.float64)

@ray.remote
def consume(a):
    return float(a[0]), a.nbytes

t0 = time.time()
big = produce.remote(150, 1.0)
assert ray.get(consume.remote(big)) == (1.0, 150 * 1024 * 1024)
arr = ray.get(big)
assert arr.nbytes == 150 * 1024 * 1024 and arr[-1] == 1.0
print("150MB task return:", round(time.time() - t0, 2), "s")
del arr, big

# more than the store holds in total: Ray spills to disk, everything stays readable
t0 = time.time()
refs = [ray.put(np.full(60 * 1024 * 1024 // 8, i, dtype=np.float64)) for i in range(5)]
vals = [ray.get(consume.remote(r))[0] for r in refs]
assert vals == [0.0, 1.0, 2.0, 3.0, 4.0], vals
for i, r in enumerate(refs):
    a = ray.get(r)
    assert a[0] == i and a[-1] == i
    del a
print("5x60MB puts in a 200MB store:", round(time.time() - t0, 2), "s")
ray.shutdown()
print("OK")
