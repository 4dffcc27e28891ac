"""Edge cases: a blocking get in an async actor, current_actor, kill(no_restart=False), ref.future().

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import asyncio, time, threading
import concurrent.futures

ray.init(num_cpus=4)
problems = []

@ray.remote
def sq(x):
    return x * x

# 1. blocking ray.get inside an async actor method (Ray allows, warns)
@ray.remote
class AsyncGetter:
    async def f(self, x):
        return ray.get(sq.remote(x))
    async def g(self, xs):
        refs = [sq.remote(x) for x in xs]
        ready, _ = ray.wait(refs, num_returns=len(refs))
        return sorted(await asyncio.gather(*refs))
    async def timeout(self):
        try:
            await asyncio.wait_for(slow.remote(), timeout=0.2)
            return "no timeout"
        except asyncio.TimeoutError:
            return "timeout"

@ray.remote
def slow():
    time.sleep(3)
    return 1

ag = AsyncGetter.remote()
assert ray.get(ag.f.remote(3), timeout=30) == 9
assert ray.get(ag.g.remote([1, 2, 3]), timeout=30) == [1, 4, 9]
assert ray.get(ag.timeout.remote(), timeout=30) == "timeout"

# 2. threaded actor calling ray.get
@ray.remote(max_concurrency=2)
class ThreadedGetter:
    def f(self, x):
        return ray.get(sq.remote(x))
tg = ThreadedGetter.remote()
assert ray.get([tg.f.remote(i) for i in range(6)], timeout=30) == [i * i for i in range(6)]

# 3. current_actor (self handle) and calling self asynchronously
@ray.remote
class SelfRef:
    def __init__(self): self.n = 0
    def me(self):
        return ray.get_runtime_context().current_actor
    def schedule(self):
        ray.get_runtime_context().current_actor.bump.remote()
        return True
    def bump(self):
        self.n += 1
    def value(self):
        return self.n
s = SelfRef.remote()
assert ray.get(s.me.remote()) == s
assert ray.get(s.schedule.remote())
time.sleep(0.3)
assert ray.get(s.value.remote()) == 1

# 4. kill(no_restart=False) restarts an actor with max_restarts
@ray.remote(max_restarts=1)
class R:
    def __init__(self): self.n = 0
    def incr(self):
        self.n += 1
        return self.n
    def restarted(self):
        return ray.get_runtime_context().was_current_actor_reconstructed
r = R.remote()
assert ray.get(r.incr.remote()) == 1
ray.kill(r, no_restart=False)
val = None
for _ in range(50):
    try:
        val = ray.get(r.incr.remote(), timeout=10)
        break
    except ray.exceptions.RayActorError:
        time.sleep(0.1)
assert val == 1, val
assert ray.get(r.restarted.remote()) is True

# 5. remote function defined inside a task
@ray.remote
def outer(n):
    @ray.remote
    def inner(i):
        return i + 100
    return ray.get([inner.remote(i) for i in range(n)])
assert ray.get(outer.remote(3)) == [100, 101, 102]

# 6. exception whose constructor needs two args (not re-creatable from args)
class TwoArgError(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")
        self.a, self.b = a, b
@ray.remote
def raise_two():
    raise TwoArgError(1, 2)
try:
    ray.get(raise_two.remote())
    raise AssertionError
except TwoArgError as e:
    assert (e.a, e.b) == (1, 2)
except ray.exceptions.RayTaskError as e:
    # Ray too replaces a cause that does not survive pickling by a RayError (same message)
    assert "isn't serializable" in str(e.cause), e.cause

# 7. unpicklable exception
class LockError(Exception):
    def __init__(self):
        super().__init__("has a lock")
        self.lock = threading.Lock()
@ray.remote
def raise_lock():
    raise LockError()
try:
    ray.get(raise_lock.remote())
except ray.exceptions.RayTaskError as e:
    print("unpicklable exception ->", type(e).__name__, str(e).splitlines()[-1][:200])

# 8. ref.future() and concurrent.futures
futs = [sq.remote(i).future() for i in range(4)]
done, _ = concurrent.futures.wait(futs, timeout=10)
if sorted(f.result() for f in done) != [0, 1, 4, 9]:
    problems.append(f"ref.future(): only {len(done)} of 4 futures done after 10 s")

# 9. init twice
try:
    ray.init()
    problems.append("second init did not raise")
except RuntimeError:
    pass
assert ray.init(ignore_reinit_error=True) is not None

# 10. get on the ref of a killed actor's call
@ray.remote
class Sleeper:
    def nap(self):
        time.sleep(10)
sl = Sleeper.remote()
ref = sl.nap.remote()
time.sleep(0.3)
ray.kill(sl)
try:
    ray.get(ref, timeout=30)
    problems.append("call on killed actor returned")
except ray.exceptions.RayActorError:
    pass

# 11. unpicklable argument -> clear error at .remote()
try:
    sq.remote(threading.Lock())
    problems.append("unpicklable arg accepted")
except TypeError as e:
    print("unpicklable arg ->", str(e)[:200])

print("problems:", problems)
assert not problems
ray.shutdown()
print("OK")
