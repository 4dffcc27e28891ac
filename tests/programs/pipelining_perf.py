"""The pipelining pattern (a work-queue actor) and plain task and actor-call throughput.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import time
import numpy as np

ray.init(num_cpus=4)

# Ray pattern "Using pipelining to increase throughput": a work queue actor and a
# worker actor that prefetches its next item while processing the current one.
@ray.remote
class WorkQueue:
    def __init__(self):
        self.queue = list(range(20))
    def get_work_item(self):
        if self.queue:
            return self.queue.pop(0)
        return None

@ray.remote
class WorkerWithPipelining:
    def __init__(self, work_queue):
        self.work_queue = work_queue
        self.done = []
    def process(self, item):
        self.done.append(item * item)
    def run(self):
        next_ref = self.work_queue.get_work_item.remote()
        while True:
            item = ray.get(next_ref)
            if item is None:
                break
            next_ref = self.work_queue.get_work_item.remote()
            self.process(item)
        return self.done

q = WorkQueue.remote()
w = WorkerWithPipelining.remote(q)
assert ray.get(w.run.remote()) == [i * i for i in range(20)]

# throughput of many small tasks
@ray.remote
def tiny(i):
    return i
t0 = time.time()
assert ray.get([tiny.remote(i) for i in range(1000)]) == list(range(1000))
t_tasks = time.time() - t0

# many small actor calls
@ray.remote
class Acc:
    def __init__(self): self.s = 0
    def add(self, x):
        self.s += x
        return self.s
a = Acc.remote()
t0 = time.time()
refs = [a.add.remote(1) for _ in range(1000)]
assert ray.get(refs[-1]) == 1000
t_calls = time.time() - t0

# ray.get in a loop (anti-pattern, but common): 200 sequential round trips
t0 = time.time()
for i in range(200):
    assert ray.get(tiny.remote(i)) == i
t_seq = time.time() - t0

# 1 MB arrays to an actor, 100 times
@ray.remote
class Sink:
    def take(self, arr):
        return arr.nbytes
s = Sink.remote()
arr = np.zeros(1 << 17)  # 1 MB
t0 = time.time()
assert sum(ray.get([s.take.remote(arr) for _ in range(100)])) == 100 * arr.nbytes
t_arr = time.time() - t0
print(f"1000 tiny tasks {t_tasks:.2f}s; 1000 actor calls {t_calls:.2f}s; 200 sequential get {t_seq:.2f}s; 100x1MB to actor {t_arr:.2f}s")
ray.shutdown()
print("OK")
