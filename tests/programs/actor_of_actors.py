"""A supervisor actor holding worker-actor handles; handles returned from and passed to tasks.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray

ray.init(num_cpus=4)

@ray.remote
class Worker:
    def __init__(self, idx):
        self.idx = idx
        self.n = 0
    def work(self, x):
        self.n += 1
        return x * 10 + self.idx
    def count(self):
        return self.n

@ray.remote
class Supervisor:
    def __init__(self, n):
        self.workers = [Worker.remote(i) for i in range(n)]
    def run(self, items):
        refs = [self.workers[i % len(self.workers)].work.remote(x) for i, x in enumerate(items)]
        return ray.get(refs)
    def counts(self):
        return ray.get([w.count.remote() for w in self.workers])
    def handles(self):
        return self.workers

sup = Supervisor.remote(3)
out = ray.get(sup.run.remote(list(range(9))))
assert out == [x * 10 + (i % 3) for i, x in enumerate(range(9))], out
assert ray.get(sup.counts.remote()) == [3, 3, 3]
# handles returned to the driver are usable
hs = ray.get(sup.handles.remote())
assert ray.get(hs[1].work.remote(5)) == 51
assert ray.get(sup.counts.remote()) == [3, 4, 3]

# passing an actor handle into a task
@ray.remote
def use(h, x):
    return ray.get(h.work.remote(x))
assert ray.get([use.remote(hs[2], k) for k in range(3)]) == [2, 12, 22]
ray.shutdown()
print("OK")
