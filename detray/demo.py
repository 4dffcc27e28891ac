"""``detray demo``: a story told by the core alone, with no simulator and no server.

Owns: a scripted run of the pure state machines through the instant driver:
a three-node cluster runs a small map-reduce, loses the node that holds the
map outputs, and answers a ``get`` by rebuilding them from lineage. It prints
each decision the core took, so a newcomer sees the architecture at work.
"""

from __future__ import annotations

from collections.abc import Callable

from detray.core import commands as C
from detray.core import events as E
from detray.core import ids
from detray.core.instant import InstantDriver
from detray.core.invariants import check_all
from detray.core.resources import units_of
from detray.core.specs import TaskSpec

MAPS = 4


def _describe(command: C.Command) -> str | None:
    if isinstance(command, C.StartTask):
        gpus = f" gpus={list(command.gpu_ids)}" if command.gpu_ids else ""
        return f"start {command.spec.name} (attempt {command.attempt}) on {command.worker}{gpus}"
    if isinstance(command, C.ForwardTask):
        return f"forward {command.spec.name} {command.from_node} -> {command.to_node}"
    if isinstance(command, C.PullObject):
        return f"pull {command.obj} {command.source} -> {command.node} ({command.size_bytes} B)"
    if isinstance(command, C.WakeWaiter):
        failed = f", failed {[f.kind.value for _, f in command.failed]}" if command.failed else ""
        return f"wake {command.waiter}: ready {list(command.ready)}{failed}"
    if isinstance(command, C.StartWorker):
        return f"start worker {command.worker}"
    if isinstance(command, C.Warn):
        return f"warn {command.code}: {command.message}"
    return None


def run(echo: Callable[[str], None] = print) -> int:
    """Run the story; return 0 when the rebuilt result equals the original."""
    driver = InstantDriver()
    seen = 0

    def show(title: str) -> None:
        nonlocal seen
        echo(f"-- {title}")
        for command in driver.commands[seen:]:
            line = _describe(command)
            if line:
                echo(f"   {line}")
        seen = len(driver.commands)
        check_all(driver.router)

    nodes = [ids.node_id(i) for i in range(3)]
    for node in nodes:
        driver.feed(E.NodeJoined(now=0.0, stimulus_id=driver.stimulus("join"), node=node, incarnation=1,
                                 resources=units_of({"CPU": 2}), object_store_bytes=1 << 30))
    show("three nodes joined, 2 CPUs each")

    job = ids.job_id(1)
    parent = ids.driver_task_id(job)
    owner = ids.WorkerID(f"{nodes[0]}/driver")
    big = 1 << 20
    driver.return_size_bytes = lambda spec, obj: big if spec.name == "map" else 8

    def submit(counter: int, name: str, args: tuple[ids.ObjectID, ...]) -> ids.ObjectID:
        task = ids.task_id(job, parent, counter)
        ret = ids.return_object_id(task, 1)
        spec = TaskSpec(task_id=task, job_id=job, owner=owner, name=name, args=args,
                        return_ids=(ret,), resources=units_of({"CPU": 1}))
        driver.feed(E.RefsAdded(now=driver.now, stimulus_id=driver.stimulus("ref"), owner=owner, objects=(ret,)))
        driver.feed(E.TaskSubmitted(now=driver.now, stimulus_id=driver.stimulus("submit"), spec=spec, node=nodes[0]))
        return ret

    maps = [submit(i, "map", ()) for i in range(MAPS)]
    show(f"{MAPS} map tasks submitted from the driver on {nodes[0]} (2 run here, the rest spill over)")
    while driver.running:
        driver.finish(*sorted(driver.running)[0])
    show("maps finished: each output (1 MiB) stays in the store of the node that made it")
    reduce_ref = submit(MAPS, "reduce", tuple(maps))
    while driver.running:
        driver.finish(*sorted(driver.running)[0])
    show("reduce ran where most of its argument bytes were, pulling the rest")
    original = driver.values[reduce_ref]

    holder = driver.router.directory.primary(reduce_ref)
    assert holder is not None
    driver.feed(E.CopiesEvicted(now=driver.now, stimulus_id=driver.stimulus("evict"), node=holder,
                                objects=(reduce_ref, *maps)))
    victim = nodes[1]
    driver.kill_node(victim)
    show(f"{holder}'s store evicted the reduce output and its map copies, and {victim} died with the "
         "map output it held (nothing is rebuilt yet: reconstruction is lazy)")
    driver.feed(E.ObjectsRequested(now=driver.now, stimulus_id=driver.stimulus("get"), waiter="get:reduce",
                                   node=nodes[0], objects=(reduce_ref,), num_required=1))
    show("get(reduce) finds no copy: its creating task is resubmitted with the same ids, "
         "and so are the lost maps it needs")
    while driver.running:
        driver.finish(*sorted(driver.running)[0])
        show("an attempt finished")
    woken = driver.woken.get("get:reduce")
    ok = woken is not None and reduce_ref in woken.ready and driver.values[reduce_ref] == original
    echo(f"result rebuilt from lineage and equal to the original: {ok}")
    stats = driver.router.tasks.stats
    echo(f"stale events dropped: {sum(v for k, v in stats.items() if k.startswith('stale'))}; "
         f"attempts started: {len(driver.started)}")
    return 0 if ok else 1
