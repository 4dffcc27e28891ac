"""Catching a task's own exception type, .cause, propagation, retry_exceptions, a failing actor constructor.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
from detray.exceptions import RayTaskError, RayActorError, ActorDiedError

ray.init(num_cpus=4)

class MyError(Exception):
    def __init__(self, code):
        super().__init__(f"code {code}")
        self.code = code

@ray.remote
def boom(x):
    raise MyError(x)

try:
    ray.get(boom.remote(7))
    raise AssertionError
except MyError as e:
    assert isinstance(e, RayTaskError)
    assert e.code == 7, vars(e)
    print("str:", str(e).splitlines()[0])

try:
    ray.get(boom.remote(1))
except RayTaskError as e:
    assert isinstance(e.cause, MyError) and e.cause.code == 1

# ValueError builtin
@ray.remote
def zero():
    return 1 / 0
try:
    ray.get(zero.remote())
except ZeroDivisionError:
    pass

# error propagates through a dependent task
@ray.remote
def plus1(x):
    return x + 1
try:
    ray.get(plus1.remote(boom.remote(3)))
    raise AssertionError
except MyError as e:
    assert e.code == 3

# retries with retry_exceptions: counter actor tracks attempts
@ray.remote
class Attempts:
    def __init__(self): self.n = 0
    def hit(self):
        self.n += 1
        return self.n

@ray.remote(max_retries=3, retry_exceptions=True)
def flaky(counter):
    n = ray.get(counter.hit.remote())
    if n < 3:
        raise RuntimeError(f"attempt {n}")
    return n
c = Attempts.remote()
assert ray.get(flaky.remote(c)) == 3

@ray.remote(max_retries=2, retry_exceptions=[KeyError])
def keyerr(counter):
    ray.get(counter.hit.remote())
    raise ValueError("not retried")
c2 = Attempts.remote()
try:
    ray.get(keyerr.remote(c2))
except ValueError:
    pass
assert ray.get(c2.hit.remote()) == 2  # only 1 attempt

# default: application errors not retried
@ray.remote
def once(counter):
    ray.get(counter.hit.remote())
    raise RuntimeError("x")
c3 = Attempts.remote()
try:
    ray.get(once.remote(c3))
except RuntimeError:
    pass
assert ray.get(c3.hit.remote()) == 2

# actor method raising: actor stays alive
@ray.remote
class Fragile:
    def __init__(self): self.n = 0
    def fail(self): raise KeyError("k")
    def ok(self):
        self.n += 1
        return self.n
f = Fragile.remote()
try:
    ray.get(f.fail.remote())
except KeyError:
    pass
assert ray.get(f.ok.remote()) == 1

# actor constructor failure -> method calls raise RayActorError
@ray.remote
class BadInit:
    def __init__(self): raise ValueError("bad init")
    def m(self): return 1
b = BadInit.remote()
try:
    ray.get(b.m.remote())
    raise AssertionError
except RayActorError as e:
    print("bad init ->", type(e).__name__, str(e).splitlines()[:3])
ray.shutdown()
print("OK")
