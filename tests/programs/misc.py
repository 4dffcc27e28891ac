"""A signal actor, a remote function as an argument, nodes(), a ref as a dict key, init after shutdown.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import time

# tips for first-time users: ray.init context; auto-init; remote functions as args
ray.init(num_cpus=4)
assert ray.is_initialized()
res = ray.cluster_resources()
assert res["CPU"] == 4.0

@ray.remote
def f(x):
    return x * 2

@ray.remote
def apply(fn, x):
    return ray.get(fn.remote(x))

assert ray.get(apply.remote(f, 21)) == 42

# ray.get on an ObjectRef list in a dict (not allowed: should raise)
try:
    ray.get({"a": f.remote(1)})
    raise AssertionError
except (TypeError, ValueError) as e:
    print("get(dict):", type(e).__name__, e)

# an actor that synchronizes tasks (signal pattern)
@ray.remote(num_cpus=0)
class Signal:
    def __init__(self):
        import asyncio
        self.ev = asyncio.Event()
    def send(self):
        self.ev.set()
    async def wait(self):
        await self.ev.wait()

sig = Signal.remote()
@ray.remote
def waiter(s, i):
    ray.get(s.wait.remote())
    return i
ws = [waiter.remote(sig, i) for i in range(3)]
ready, _ = ray.wait(ws, timeout=0.5)
assert ready == []
ray.get(sig.send.remote())
assert ray.get(ws, timeout=30) == [0, 1, 2]

# ray.nodes()
ns = ray.nodes()
assert len(ns) == 1 and ns[0]["Alive"]
print("node keys:", sorted(ns[0].keys()))
# ObjectRef hex / equality / dict
r = f.remote(1)
d = {r: 1}
assert d[r] == 1
assert isinstance(r.hex(), str)
# ray.get of get (nested ref in object)
outer = ray.put([r])
inner = ray.get(outer)[0]
assert ray.get(inner) == 2
ray.shutdown()
assert not ray.is_initialized()
# re-init works
ray.init(num_cpus=2)
assert ray.get(f.remote(5)) == 10
ray.shutdown()
print("OK")
