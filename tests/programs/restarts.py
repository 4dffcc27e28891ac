"""max_restarts, max_task_retries and a task retried after its worker crashed (os._exit).

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import os, time
from detray.exceptions import RayActorError

ray.init(num_cpus=4)

@ray.remote(max_restarts=2, max_task_retries=-1)
class Phoenix:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n
    def pid(self):
        return os.getpid()
    def die(self):
        os._exit(1)

p = Phoenix.remote()
assert ray.get(p.incr.remote()) == 1
pid1 = ray.get(p.pid.remote())
try:
    ray.get(p.die.remote())  # retried with max_task_retries=-1 ... dies each time
except RayActorError:
    pass
# after restarts exhausted the actor is dead
try:
    ray.get(p.incr.remote())
    print("NOTE: actor alive after die-loop")
except RayActorError as e:
    print("dead:", str(e).splitlines()[0])

@ray.remote(max_restarts=1)
class Once:
    def __init__(self):
        self.n = 0
    def incr(self):
        self.n += 1
        return self.n
    def die(self):
        os._exit(1)
o = Once.remote()
assert ray.get(o.incr.remote()) == 1
try:
    ray.get(o.die.remote())
except RayActorError:
    pass
# restarted, state reset
assert ray.get(o.incr.remote()) == 1
try:
    ray.get(o.die.remote())
except RayActorError:
    pass
try:
    ray.get(o.incr.remote())
    raise AssertionError("actor should be dead after 1 restart")
except RayActorError:
    pass

# tasks: worker crash retried by default (max_retries=3)
@ray.remote
class Flag:
    def __init__(self): self.n = 0
    def hit(self):
        self.n += 1
        return self.n
@ray.remote(max_retries=2)
def crash_once(flag):
    if ray.get(flag.hit.remote()) == 1:
        os._exit(1)
    return "recovered"
assert ray.get(crash_once.remote(Flag.remote())) == "recovered"

@ray.remote(max_retries=0)
def crash(flag):
    os._exit(1)
try:
    ray.get(crash.remote(None))
    raise AssertionError
except ray.exceptions.WorkerCrashedError as e:
    print("crash:", type(e).__name__)
ray.shutdown()
print("OK")
