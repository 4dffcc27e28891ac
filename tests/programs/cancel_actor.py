"""Cancel of actor calls (queued, running regular, running async) and force=True on a task.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import asyncio, time
from detray.exceptions import TaskCancelledError, WorkerCrashedError

ray.init(num_cpus=4)
problems = []

# force=True: Ray documents WorkerCrashedError at get
@ray.remote
def forever():
    time.sleep(1e6)
r = forever.remote()
time.sleep(0.5)
ray.cancel(r, force=True)
try:
    ray.get(r, timeout=30)
except WorkerCrashedError:
    pass
except TaskCancelledError:
    problems.append("force=True: TaskCancelledError (Ray: WorkerCrashedError)")

# non-force cancel raises KeyboardInterrupt inside the task (Ray's doc)
@ray.remote
class Log:
    def __init__(self): self.items = []
    def add(self, x): self.items.append(x)
    def get(self): return self.items
log = Log.remote()
@ray.remote
def cleanup_on_interrupt(log):
    try:
        time.sleep(1e6)
    except KeyboardInterrupt:
        ray.get(log.add.remote("keyboardinterrupt"))
        raise
    except BaseException as e:
        ray.get(log.add.remote(type(e).__name__))
        raise
r = cleanup_on_interrupt.remote(log)
time.sleep(0.5)
ray.cancel(r)
try:
    ray.get(r, timeout=30)
except TaskCancelledError:
    pass
seen = ray.get(log.get.remote())
if seen != ["keyboardinterrupt"]:
    problems.append(f"cancel raised {seen} in the task (Ray: KeyboardInterrupt)")

# actor tasks: queued calls on a sync actor are cancelled; the running one is not interrupted
@ray.remote
class Busy:
    def work(self, t):
        time.sleep(t)
        return t
b = Busy.remote()
running = b.work.remote(1.0)
queued = b.work.remote(0.1)
time.sleep(0.3)
ray.cancel(queued)
ray.cancel(running)
try:
    assert ray.get(running, timeout=30) == 1.0
except TaskCancelledError:
    problems.append("running sync actor task was interrupted by cancel (Ray: not interrupted)")
try:
    ray.get(queued, timeout=30)
    problems.append("queued actor task not cancelled")
except TaskCancelledError:
    pass

# async actor: the running coroutine gets asyncio.CancelledError
@ray.remote
class AsyncBusy:
    def __init__(self): self.cancelled = False
    async def work(self):
        try:
            await asyncio.sleep(100)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
    async def was_cancelled(self):
        return self.cancelled
ab = AsyncBusy.remote()
w = ab.work.remote()
time.sleep(0.5)
ray.cancel(w)
try:
    ray.get(w, timeout=30)
    problems.append("async actor task not cancelled")
except TaskCancelledError:
    pass
if not ray.get(ab.was_cancelled.remote()):
    problems.append("async actor task did not see CancelledError")
print("problems:", problems)
ray.shutdown()
assert not problems
print("OK")
