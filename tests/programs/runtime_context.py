"""get_runtime_context(): ids, actor name, assigned resources, the reconstructed flag.

An unmodified Ray program (``import detray as ray``); tests/programs/test_ray_programs.py
runs it on both drivers and checks that it prints OK."""
import detray as ray

ray.init(num_cpus=4)
ctx = ray.get_runtime_context()
job = ctx.get_job_id()
node = ctx.get_node_id()
assert isinstance(job, str) and job
assert isinstance(node, str) and node
assert ctx.get_actor_id() is None
print("driver task id:", ctx.get_task_id())
assert ctx.namespace  # anonymous namespace string

@ray.remote
def info():
    c = ray.get_runtime_context()
    return c.get_job_id(), c.get_node_id(), c.get_task_id(), c.get_actor_id(), c.get_worker_id()

@ray.remote
class A:
    def info(self):
        c = ray.get_runtime_context()
        return c.get_actor_id(), c.get_task_id(), c.get_job_id()
    def name(self):
        return ray.get_runtime_context().get_actor_name()

j, n, t, a, w = ray.get(info.remote())
assert j == job and n == node and a is None and t and w
t2 = ray.get(info.remote())[2]
assert t2 != t
act = A.options(name="ctxactor").remote()
aid, atid, ajob = ray.get(act.info.remote())
assert aid == act._actor_id.hex() if hasattr(act._actor_id, "hex") else aid
assert ajob == job
assert ray.get(act.name.remote()) == "ctxactor"
print("actor id", aid, "vs handle", act._actor_id)
# commonly used: get_assigned_resources
@ray.remote(num_cpus=2)
def res():
    return ray.get_runtime_context().get_assigned_resources()
r = ray.get(res.remote())
assert r.get("CPU") == 2.0, r
# was_current_actor_reconstructed
@ray.remote
class B:
    def recon(self):
        return ray.get_runtime_context().was_current_actor_reconstructed
assert ray.get(B.remote().recon.remote()) is False
ray.shutdown()
print("OK")
