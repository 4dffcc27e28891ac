"""A threaded actor (max_concurrency=3) with a lock, options() overriding it, call ordering.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import threading, time

ray.init(num_cpus=4)

@ray.remote(max_concurrency=3)
class Threaded:
    def __init__(self):
        self.lock = threading.Lock()
        self.active = 0
        self.peak = 0
        self.threads = set()
    def work(self, x):
        with self.lock:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.threads.add(threading.get_ident())
        time.sleep(0.3)
        with self.lock:
            self.active -= 1
        return x
    def stats(self):
        return self.peak, len(self.threads)

t = Threaded.remote()
t0 = time.time()
assert ray.get([t.work.remote(i) for i in range(9)]) == list(range(9))
el = time.time() - t0
peak, nthreads = ray.get(t.stats.remote())
assert peak == 3, peak
assert nthreads >= 2
print("elapsed", round(el, 2))

# options() override of max_concurrency
t1 = Threaded.options(max_concurrency=1).remote()
ray.get([t1.work.remote(i) for i in range(3)])
assert ray.get(t1.stats.remote())[0] == 1

# sync actor blocks in get of another task while other calls wait (ordering preserved)
@ray.remote
class Ordered:
    def __init__(self):
        self.log = []
    def add(self, x):
        self.log.append(x)
        return len(self.log)
    def get_log(self):
        return self.log
o = Ordered.remote()
for i in range(50):
    o.add.remote(i)
assert ray.get(o.get_log.remote()) == list(range(50))
ray.shutdown()
print("OK")
