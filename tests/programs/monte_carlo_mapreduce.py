"""Ray's Monte Carlo pi example with a progress actor, and a MapReduce word count.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import math, random, time
from collections import Counter

ray.init(num_cpus=4)

# Ray Core example "Monte Carlo Estimation of pi" with a progress actor
@ray.remote
class ProgressActor:
    def __init__(self, total):
        self.total = total
        self.done = {}
    def report_progress(self, task_id, n):
        self.done[task_id] = n
    def get_progress(self):
        return sum(self.done.values()) / self.total

@ray.remote
def sampling_task(num_samples, task_id, progress_actor):
    rng = random.Random(task_id)
    inside = 0
    for i in range(num_samples):
        x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
        if math.hypot(x, y) <= 1:
            inside += 1
        if (i + 1) % 5_000 == 0:
            progress_actor.report_progress.remote(task_id, i + 1)
    progress_actor.report_progress.remote(task_id, num_samples)
    return inside

NUM_TASKS, N = 8, 20_000
progress = ProgressActor.remote(NUM_TASKS * N)
refs = [sampling_task.remote(N, i, progress) for i in range(NUM_TASKS)]
polls = 0
while True:
    p = ray.get(progress.get_progress.remote())
    polls += 1
    if p >= 1:
        break
    time.sleep(0.1)
inside = sum(ray.get(refs))
expected_inside = 0
for t in range(NUM_TASKS):
    rng = random.Random(t)
    expected_inside += sum(1 for _ in range(N) if math.hypot(rng.uniform(-1, 1), rng.uniform(-1, 1)) <= 1)
assert inside == expected_inside
pi = 4 * inside / (NUM_TASKS * N)
assert abs(pi - math.pi) < 0.05, pi

# MapReduce word count (Ray Core example style)
corpus = ("the quick brown fox jumps over the lazy dog " * 50 + "ray is fast and ray is simple " * 30).split()
chunks = [corpus[i::4] for i in range(4)]

@ray.remote
def map_fn(words, num_partitions):
    parts = [[] for _ in range(num_partitions)]
    for w in words:
        parts[sum(map(ord, w)) % num_partitions].append((w, 1))  # stable hash
    return parts

@ray.remote
def reduce_fn(*parts):
    c = Counter()
    for part in parts:
        for w, n in part:
            c[w] += n
    return dict(c)

P = 3
map_out = [map_fn.options(num_returns=P).remote(chunk, P) for chunk in chunks]
reduced = ray.get([reduce_fn.remote(*[m[j] for m in map_out]) for j in range(P)])
merged = {}
for d in reduced:
    merged.update(d)
assert merged == dict(Counter(corpus))
ray.shutdown()
print("OK polls", polls)
