"""get(timeout=) raising GetTimeoutError (a TimeoutError), then the same get succeeding.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import time
from detray.exceptions import GetTimeoutError

ray.init(num_cpus=4)

@ray.remote
def long_running():
    time.sleep(5)
    return "done"

ref = long_running.remote()
t0 = time.time()
try:
    ray.get(ref, timeout=0.5)
    raise AssertionError("expected timeout")
except GetTimeoutError as e:
    assert isinstance(e, TimeoutError)
    print("timeout message:", e)
# the task keeps running; a later get succeeds
assert ray.get(ref, timeout=30) == "done"
# timeout=0 on a ready object returns it
assert ray.get(ref, timeout=0) == "done"
# timeout on a list
refs = [long_running.remote() for _ in range(2)]
try:
    ray.get(refs, timeout=0.2)
    raise AssertionError("expected timeout")
except ray.exceptions.GetTimeoutError:
    pass
ray.cancel(refs[0]); ray.cancel(refs[1])
ray.shutdown()
print("OK")
