"""Named actors, get_if_exists, a duplicate name, a detached actor in a namespace, kill freeing the name.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray

ray.init(num_cpus=4, namespace="audit")

@ray.remote
class Counter:
    def __init__(self, start=0):
        self.v = start
    def incr(self, by=1):
        self.v += by
        return self.v

c = Counter.options(name="counter").remote(10)
h = ray.get_actor("counter")
assert h == c
assert ray.get(h.incr.remote()) == 11
assert ray.get(c.incr.remote(2)) == 13

# get_actor from inside a task
@ray.remote
def bump():
    return ray.get(ray.get_actor("counter").incr.remote(100))
assert ray.get(bump.remote()) == 113

# get_if_exists returns the same actor
c2 = Counter.options(name="counter", get_if_exists=True).remote(0)
assert ray.get(c2.incr.remote()) == 114

# duplicate name without get_if_exists is a ValueError
try:
    Counter.options(name="counter").remote()
    raise AssertionError("expected ValueError for duplicate name")
except ValueError as e:
    print("dup name:", e)

# detached actor in an explicit namespace
d = Counter.options(name="det", lifetime="detached", namespace="other").remote(5)
assert ray.get(d.incr.remote()) == 6
del d
import gc; gc.collect()
d2 = ray.get_actor("det", namespace="other")
assert ray.get(d2.incr.remote()) == 7
try:
    ray.get_actor("det")  # wrong namespace
    raise AssertionError("expected ValueError")
except ValueError:
    pass

# a non-detached named actor dies when the handle goes out of scope? (Ray: named actors
# still are garbage collected when all handles go away, unless detached)
ray.kill(d2)
import time
for _ in range(50):
    try:
        ray.get_actor("det", namespace="other")
        time.sleep(0.1)
    except ValueError:
        break
else:
    raise AssertionError("killed detached actor still resolvable by name")
ray.shutdown()
print("OK")
