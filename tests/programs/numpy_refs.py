"""Large numpy arrays by value and by ref, refs inside containers staying refs, read-only zero-copy results.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import numpy as np

ray.init(num_cpus=4)

@ray.remote
def total(arr):
    return float(arr.sum())

@ray.remote
def sum_nested(container):
    # refs inside a container are NOT resolved: the task gets refs
    refs = container["parts"]
    assert all(isinstance(r, ray.ObjectRef) for r in refs), [type(r) for r in refs]
    return float(sum(a.sum() for a in ray.get(refs)))

@ray.remote
def make(n):
    return np.ones(n, dtype=np.float64)

big = np.arange(2_000_000, dtype=np.float64)   # 16 MB
expected = float(big.sum())
assert ray.get(total.remote(big)) == expected      # by value
ref = ray.put(big)
assert ray.get(total.remote(ref)) == expected      # by ref, resolved at top level

back = ray.get(ref)
assert isinstance(back, np.ndarray) and back.shape == big.shape and np.array_equal(back, big)
# zero copy result is read-only in Ray
try:
    back[0] = 1.0
    print("NOTE: array from get is writable")
except ValueError:
    pass

parts = [make.remote(1000 * (i + 1)) for i in range(4)]
assert ray.get(sum_nested.remote({"parts": parts})) == float(sum(1000 * (i + 1) for i in range(4)))
assert ray.get(sum_nested.remote({"parts": [ray.put(np.ones(10))]})) == 10.0

# a list of refs from get
arrs = ray.get(parts)
assert [a.shape[0] for a in arrs] == [1000, 2000, 3000, 4000]
ray.shutdown()
print("OK")
