"""Dataclass arguments, refs in kwargs, inheritance, static methods, num_cpus=0.5.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
from dataclasses import dataclass

ray.init(num_cpus=4)

@dataclass
class Point:
    x: int
    y: int

@ray.remote
def norm1(p, scale=1, *, offset=0):
    return (abs(p.x) + abs(p.y)) * scale + offset

pref = ray.put(Point(3, -4))
assert ray.get(norm1.remote(pref, scale=ray.put(2), offset=ray.put(1))) == 15  # kwargs refs resolved
r = norm1.remote(Point(1, 1))
assert ray.get([r, r]) == [2, 2]  # the same ref twice

class Base:
    def __init__(self, start):
        self.v = start
    def inc(self, by=1):
        self.v += by
        return self.v
    @staticmethod
    def helper(x):
        return x * 3

@ray.remote
class Derived(Base):
    def __init__(self, start, *, mult=2):
        super().__init__(start * mult)
    def triple(self):
        return self.helper(self.v)
    def echo(self, *args, **kwargs):
        return args, kwargs

d = Derived.options(num_cpus=0.5).remote(5, mult=3)
assert ray.get(d.inc.remote()) == 16
assert ray.get(d.inc.remote(by=4)) == 20
assert ray.get(d.triple.remote()) == 60
assert ray.get(d.echo.remote(1, ray.put(2), k=ray.put(3))) == ((1, 2), {"k": 3})
assert Derived.helper(2) == 6   # static method through the actor class
try:
    d.inc.remote(1, 2, 3)
    ray.get(d.inc.remote(1, 2, 3))
    raise AssertionError("bad arity accepted")
except TypeError as e:
    print("bad arity ->", type(e).__name__, str(e)[:150])
ray.shutdown()
print("OK")
