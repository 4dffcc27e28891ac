"""No init(): the first call starts a local cluster; no shutdown() at the end.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import os

# no ray.init(): Ray 2.x starts a local cluster on first use
@ray.remote
def f(x):
    return x + 1

assert ray.get(f.remote(1)) == 2
assert ray.is_initialized()
assert ray.cluster_resources()["CPU"] >= 1  # sim: 8 by design (config.DEFAULT_NODE_CPUS), real: os.cpu_count()

@ray.remote
class A:
    def pid(self):
        return os.getpid()
a = A.remote()
print("actor pid", ray.get(a.pid.remote()))
# no shutdown: the cluster must be torn down at interpreter exit
print("OK")
