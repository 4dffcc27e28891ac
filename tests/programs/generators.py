"""Generator tasks: num_returns='dynamic'/'streaming' and plain generators refused clearly, num_returns=N working.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray

ray.init(num_cpus=4)

results = {}
try:
    @ray.remote(num_returns="dynamic")
    def dyn(n):
        for i in range(n):
            yield i
    g = dyn.remote(3)
    results["dynamic"] = [ray.get(r) for r in ray.get(g)]
except NotImplementedError as e:
    results["dynamic"] = f"refused: {e}"

try:
    @ray.remote
    def gen_fn(n):   # Ray 2.x: a generator function is a streaming generator task
        for i in range(n):
            yield i
    g = gen_fn.remote(3)
    results["streaming"] = [ray.get(r) for r in g]
except NotImplementedError as e:
    results["streaming"] = f"refused: {e}"
except Exception as e:
    results["streaming"] = f"UNCLEAR {type(e).__name__}: {e}"

try:
    @ray.remote(num_returns="streaming")
    def gen_fn2(n):
        yield from range(n)
    results["streaming-explicit"] = [ray.get(r) for r in gen_fn2.remote(2)]
except NotImplementedError as e:
    results["streaming-explicit"] = f"refused: {e}"

try:
    @ray.remote
    class G:
        def gen(self, n):
            for i in range(n):
                yield i
    a = G.remote()
    g = a.gen.remote(3)
    results["actor-gen"] = [ray.get(r) for r in g]
except NotImplementedError as e:
    results["actor-gen"] = f"refused: {e}"
except Exception as e:
    results["actor-gen"] = f"UNCLEAR {type(e).__name__}: {e}"
for k, v in results.items():
    print(k, "->", v)
assert all(isinstance(v, str) and v.startswith("refused") for v in results.values()), results
ray.shutdown()
print("OK")
