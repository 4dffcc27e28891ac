"""An async actor: await on refs, asyncio.gather, concurrent calls, max_concurrency.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import asyncio, time

ray.init(num_cpus=4)

@ray.remote
def produce(x):
    time.sleep(0.2)
    return x + 1

@ray.remote
class AsyncActor:
    def __init__(self):
        self.active = 0
        self.peak = 0
    async def run(self, x):
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.3)
        v = await produce.remote(x)
        self.active -= 1
        return v
    async def gather(self, xs):
        refs = [produce.remote(x) for x in xs]
        return await asyncio.gather(*refs)
    async def wait_refs(self, refs):
        # refs passed inside a list stay refs; await them
        return [await r for r in refs]
    async def peak_concurrency(self):
        return self.peak

a = AsyncActor.remote()
t0 = time.time()
out = ray.get([a.run.remote(i) for i in range(8)])
el = time.time() - t0
assert out == [i + 1 for i in range(8)]
peak = ray.get(a.peak_concurrency.remote())
assert peak > 1, peak
assert ray.get(a.gather.remote([1, 2, 3])) == [2, 3, 4]
assert ray.get(a.wait_refs.remote([produce.remote(10), produce.remote(20)])) == [11, 21]
print("elapsed", round(el, 2), "peak", peak)

# asyncio in the driver: await refs
async def main():
    return await asyncio.gather(produce.remote(1), produce.remote(2))
assert asyncio.run(main()) == [2, 3]

# max_concurrency for async actor
@ray.remote(max_concurrency=2)
class Limited:
    def __init__(self):
        self.active = 0; self.peak = 0
    async def f(self):
        self.active += 1; self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.1)
        self.active -= 1
    async def get_peak(self):
        return self.peak
l = Limited.remote()
ray.get([l.f.remote() for _ in range(6)])
assert ray.get(l.get_peak.remote()) == 2
ray.shutdown()
print("OK")
