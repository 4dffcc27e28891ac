"""The parameter-server pattern, synchronous and asynchronous.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray
import numpy as np

ray.init(num_cpus=4)

DIM = 10

@ray.remote
class ParameterServer:
    def __init__(self):
        self.params = np.zeros(DIM)
    def get_params(self):
        return self.params
    def apply_gradients(self, *grads):
        self.params = self.params - 0.1 * np.sum(grads, axis=0)
        return self.params

@ray.remote
def compute_gradient(params, seed):
    rng = np.random.default_rng(seed)
    return params * 0.0 + rng.normal(size=DIM)

ps = ParameterServer.remote()
n_workers = 3
expected = np.zeros(DIM)
params_ref = ps.get_params.remote()
for it in range(5):
    grads = [compute_gradient.remote(params_ref, it * 100 + w) for w in range(n_workers)]
    params_ref = ps.apply_gradients.remote(*grads)
    eg = [np.random.default_rng(it * 100 + w).normal(size=DIM) for w in range(n_workers)]
    expected = expected - 0.1 * np.sum(eg, axis=0)
final = ray.get(params_ref)
assert np.allclose(final, expected), (final, expected)

# async-parameter-server style: workers hold the ps handle
@ray.remote
def worker_loop(ps, seed, steps):
    for s in range(steps):
        p = ray.get(ps.get_params.remote())
        g = np.full(DIM, 1.0)
        ray.get(ps.apply_gradients.remote(g))
    return seed

ps2 = ParameterServer.remote()
assert sorted(ray.get([worker_loop.remote(ps2, i, 4) for i in range(3)])) == [0, 1, 2]
assert np.allclose(ray.get(ps2.get_params.remote()), np.full(DIM, -0.1 * 12))
ray.shutdown()
print("OK")
