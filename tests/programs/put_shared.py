"""One put shared by 200 tasks, a 100 MB put, a closure capturing a ref.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import numpy as np
import time

ray.init(num_cpus=4)

big = np.random.default_rng(0).random((1000, 1000))  # 8 MB
expected_rows = big.sum(axis=1)
big_ref = ray.put(big)

@ray.remote
def row_sum(mat, i):
    return float(mat[i].sum())

t0 = time.time()
refs = [row_sum.remote(big_ref, i) for i in range(200)]
out = ray.get(refs)
el = time.time() - t0
assert np.allclose(out, expected_rows[:200])
print("200 tasks sharing 8MB ref:", round(el, 2), "s")

# anti-pattern: passing by value repeatedly (still must be correct)
t0 = time.time()
out2 = ray.get([row_sum.remote(big, i) for i in range(20)])
print("20 tasks by value:", round(time.time() - t0, 2), "s")
assert np.allclose(out2, expected_rows[:20])

# a put of a 100MB object
huge = np.ones(100 * 1024 * 1024 // 8)
t0 = time.time()
h = ray.put(huge)
@ray.remote
def length(a):
    return a.size
assert ray.get([length.remote(h) for _ in range(4)]) == [huge.size] * 4
print("100MB put + 4 tasks:", round(time.time() - t0, 2), "s")
del h
# closure capturing a ref
@ray.remote
def closure_user():
    return ray.get(big_ref).shape
assert ray.get(closure_user.remote()) == (1000, 1000)
# objects in a dict
d = {"a": ray.put(np.arange(3)), "b": 4}
@ray.remote
def dict_user(d):
    return int(ray.get(d["a"]).sum()) + d["b"]
assert ray.get(dict_user.remote(d)) == 7
ray.shutdown()
print("OK")
