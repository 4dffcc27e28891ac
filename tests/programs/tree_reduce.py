"""Tree reduction with nested tasks, a pairwise reduce and a recursive quicksort.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import random

ray.init(num_cpus=4)

@ray.remote
def add(a, b):
    return a + b

@ray.remote
def tree_sum(xs):
    # nested tasks: split and recurse, reduce pairwise
    if len(xs) <= 4:
        return sum(xs)
    mid = len(xs) // 2
    left = tree_sum.remote(xs[:mid])
    right = tree_sum.remote(xs[mid:])
    return ray.get(add.remote(left, right))

@ray.remote
def quick_sort(xs):
    if len(xs) <= 8:
        return sorted(xs)
    pivot = xs[0]
    lo = [x for x in xs[1:] if x < pivot]
    hi = [x for x in xs[1:] if x >= pivot]
    return ray.get(quick_sort.remote(lo)) + [pivot] + ray.get(quick_sort.remote(hi))

data = list(range(100))
assert ray.get(tree_sum.remote(data)) == 4950

# reduction of refs from the driver, pairwise tree
refs = [ray.put(i) for i in range(1, 17)]
while len(refs) > 1:
    refs = [add.remote(refs[i], refs[i + 1]) for i in range(0, len(refs) - 1, 2)] + (refs[-1:] if len(refs) % 2 else [])
assert ray.get(refs[0]) == 136

rng = random.Random(1)
xs = [rng.randint(0, 1000) for _ in range(60)]
assert ray.get(quick_sort.remote(xs)) == sorted(xs)
ray.shutdown()
print("OK")
