"""Lineage, tasks, directory and schedulers together, through the router, under faults.

A Hypothesis state machine drives a three-node cluster with the instant
driver: it submits task DAGs and puts, finishes and fails attempts, kills
workers and nodes, brings nodes back, evicts copies, cancels, drops
references and calls ``get``. After every step the cross-machine invariants
run. At the end the cluster is healed and drained, and the properties a user
relies on are checked against a plain sequential model:

- no task is lost: each ends finished, failed or cancelled;
- every ``get`` is answered; a value equals the sequential run's value, a
  failure is one the injected faults explain;
- an object with live lineage and retries left is never reported lost;
- no task has two attempts running at once, and none starts before its
  arguments are local;
- the same events give the same commands.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

from detray.core import commands as C
from detray.core import events as E
from detray.core import ids
from detray.core.errors import ErrorKind
from detray.core.instant import InstantDriver
from detray.core.invariants import check_all
from detray.core.resources import units_of
from detray.core.router import Router
from detray.core.specs import TaskSpec
from detray.core.tasks import TaskState

NODES = 3
STORE_BYTES = 1_000
JOB = ids.job_id(1)
DRIVER_TASK = ids.driver_task_id(JOB)
HEAD = ids.node_id(0)
OWNER = ids.WorkerID(f"{HEAD}/driver")
APP_ERROR = ("builtins.ValueError", "builtins.Exception")


class ClusterMachine(RuleBasedStateMachine):
    refs = Bundle("refs")

    def __init__(self) -> None:
        super().__init__()
        self.driver = InstantDriver(return_size_bytes=lambda spec, obj: 300)
        self.driver.start_checks.append(self._arguments_are_local)
        self.counter = 0
        self.puts = 0
        self.gets = 0
        self.specs: dict[ids.TaskID, TaskSpec] = {}
        self.expected: dict[ids.ObjectID, object] = {}
        self.get_waiters: dict[str, ids.ObjectID] = {}
        self.faults: set[str] = set()
        self.failed_apps: set[ids.TaskID] = set()
        self.cancelled: set[ids.TaskID] = set()
        self.incarnation = {ids.node_id(i): 1 for i in range(NODES)}
        for i in range(NODES):
            self._join(ids.node_id(i))

    # -- helpers ----------------------------------------------------------------

    def _join(self, node: ids.NodeID) -> None:
        self.driver.feed(
            E.NodeJoined(
                now=self.driver.now,
                stimulus_id=self.driver.stimulus("join"),
                node=node,
                incarnation=self.incarnation[node],
                resources=units_of({"CPU": 2}),
                object_store_bytes=STORE_BYTES,
            )
        )

    def _arguments_are_local(self, start: C.StartTask) -> None:
        for arg in start.spec.args:
            assert start.node in self.driver.router.directory.locations(arg), (
                f"{start.spec.task_id} started on {start.node} without its argument {arg}"
            )
        running_same_task = [key for key in self.driver.running if key[0] == start.spec.task_id]
        assert not running_same_task, f"{start.spec.task_id} has two attempts running: {running_same_task}"

    def _running(self, index: int) -> tuple[ids.TaskID, int] | None:
        keys = sorted(self.driver.running)
        return keys[index % len(keys)] if keys else None

    # -- rules ------------------------------------------------------------------------

    @rule(target=refs, args=st.lists(refs, max_size=2, unique=True), max_retries=st.sampled_from([0, 1, 3]), retry_errors=st.booleans())
    def submit(self, args: list[ids.ObjectID], max_retries: int, retry_errors: bool) -> ids.ObjectID:
        task = ids.task_id(JOB, DRIVER_TASK, self.counter)
        self.counter += 1
        ret = ids.return_object_id(task, 1)
        spec = TaskSpec(
            task_id=task,
            job_id=JOB,
            owner=OWNER,
            name=f"f{self.counter % 3}",
            args=tuple(args),
            return_ids=(ret,),
            resources=units_of({"CPU": 1}),
            max_retries=max_retries,
            retry_exceptions=retry_errors,
        )
        self.specs[task] = spec
        self.expected[ret] = (spec.name, tuple(self.expected[a] for a in args))
        self.driver.feed(E.RefsAdded(now=self.driver.now, stimulus_id=self.driver.stimulus("ref"), owner=OWNER, objects=(ret,)))
        self.driver.feed(E.TaskSubmitted(now=self.driver.now, stimulus_id=self.driver.stimulus("submit"), spec=spec, node=HEAD))
        return ret

    @rule(target=refs)
    def put(self) -> ids.ObjectID:
        self.puts += 1
        obj = ids.put_object_id(DRIVER_TASK, self.puts)
        self.expected[obj] = ("put", self.puts)
        self.driver.values[obj] = ("put", self.puts)
        self.driver.feed(E.RefsAdded(now=self.driver.now, stimulus_id=self.driver.stimulus("ref"), owner=OWNER, objects=(obj,)))
        self.driver.feed(E.ObjectPut(now=self.driver.now, stimulus_id=self.driver.stimulus("put"), obj=obj, node=HEAD, size_bytes=200, owner=OWNER))
        return obj

    @precondition(lambda self: self.driver.running)
    @rule(index=st.integers(0, 50))
    def finish(self, index: int) -> None:
        key = self._running(index)
        assert key is not None
        spec = self.specs[key[0]]
        if not self._lineage_failed(spec.return_ids[0]):
            assert self.driver.value_of(spec) == self.expected[spec.return_ids[0]], "a task ran on wrong argument values"
        self.driver.finish(*key)

    @precondition(lambda self: self.driver.running)
    @rule(index=st.integers(0, 50))
    def fail(self, index: int) -> None:
        key = self._running(index)
        assert key is not None
        self.failed_apps.add(key[0])
        self.driver.fail(*key, error_types=APP_ERROR)

    @precondition(lambda self: self.driver.running)
    @rule(index=st.integers(0, 50))
    def kill_worker(self, index: int) -> None:
        key = self._running(index)
        assert key is not None
        run = self.driver.running[key]
        self.faults.add("worker")
        self.driver.kill_worker(run.worker, run.node)

    @rule(i=st.integers(1, NODES - 1))
    def kill_or_restart_node(self, i: int) -> None:
        node = ids.node_id(i)
        if self.driver.router.is_live(node):
            self.faults.add("node")
            self.driver.kill_node(node)
        else:
            self.incarnation[node] += 1
            self._join(node)

    @rule(i=st.integers(0, NODES - 1), ref=refs)
    def evict(self, i: int, ref: ids.ObjectID) -> None:
        node = ids.node_id(i)
        if not self.driver.router.is_live(node) or node not in self.driver.router.directory.locations(ref):
            return
        self.faults.add("evict")
        self.driver.feed(E.CopiesEvicted(now=self.driver.now, stimulus_id=self.driver.stimulus("evict"), node=node, objects=(ref,)))

    @rule(ref=refs)
    def get(self, ref: ids.ObjectID) -> None:
        self.gets += 1
        waiter = f"get:{self.gets}"
        self.get_waiters[waiter] = ref
        self.driver.feed(
            E.ObjectsRequested(now=self.driver.now, stimulus_id=self.driver.stimulus("get"), waiter=waiter, node=HEAD, objects=(ref,), num_required=1)
        )

    @rule(ref=refs)
    def cancel(self, ref: ids.ObjectID) -> None:
        if ids.is_put(ref):
            return
        task = ids.creating_task(ref)
        if self.driver.router.tasks.state(task) in (TaskState.WAITING_FOR_ARGS, TaskState.SCHEDULED, TaskState.RUNNING):
            self.cancelled.add(task)
        self.driver.feed(E.CancelRequested(now=self.driver.now, stimulus_id=self.driver.stimulus("cancel"), task=task))

    @rule(ref=consumes(refs))
    def drop_ref(self, ref: ids.ObjectID) -> None:
        # A ref still waited on by a get stays referenced (a real get holds the ref).
        if ref in self.get_waiters.values():
            return
        self.driver.feed(E.RefsRemoved(now=self.driver.now, stimulus_id=self.driver.stimulus("unref"), owner=OWNER, objects=(ref,)))

    @rule()
    def time_passes(self) -> None:
        self.driver.advance(2.0)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def machines_agree(self) -> None:
        check_all(self.driver.router)

    # -- the end: heal, drain, and check what a user relies on ----------------------------

    def teardown(self) -> None:
        driver = self.driver
        for i in range(1, NODES):
            node = ids.node_id(i)
            if not driver.router.is_live(node):
                self.incarnation[node] += 1
                self._join(node)
        for _ in range(10_000):
            if driver.running:
                driver.finish(*sorted(driver.running)[0])
            elif driver.timers:
                driver.advance(5.0)
            else:
                break
            check_all(driver.router)
        assert not driver.running and not driver.timers, "the cluster did not drain"
        self._no_task_lost()
        self._every_get_answered()
        self._same_events_same_commands()

    def _no_task_lost(self) -> None:
        tasks = self.driver.router.tasks
        for task in self.specs:
            state = tasks.state(task)
            assert state in (TaskState.FINISHED, TaskState.FAILED, TaskState.CANCELLED, None), (
                f"task {task} is still {state} after draining: {tasks.pending_reason(task)}\n" + "\n".join(tasks.story(task))
            )

    def _every_get_answered(self) -> None:
        tasks = self.driver.router.tasks
        for waiter, ref in self.get_waiters.items():
            assert waiter in self.driver.woken, f"{waiter} for {ref} was never answered"
            wake = self.driver.woken[waiter]
            if ref in wake.ready:
                if self.driver.values.get(ref) == self.expected[ref]:
                    continue
                # An error value stands in the object: a failure of its lineage explains it.
                assert self._lineage_failed(ref), f"{waiter}: {ref} = {self.driver.values.get(ref)}, expected {self.expected[ref]}"
                continue
            (failed_obj, failure), = wake.failed
            kind = failure.kind
            if kind is ErrorKind.OBJECT_LOST and failure.detail("reason") != "freed":
                assert self.faults & {"node", "evict", "worker"}, f"{ref} lost without a fault"
                if not ids.is_put(ref):
                    creator = ids.creating_task(ref)
                    spec = self.specs[creator]
                    attempts = tasks.attempt(creator) or 0
                    assert attempts > spec.max_retries or self._lineage_failed(ref) or self._ancestor_lost(ref), (
                        f"{ref} reported lost with retries left ({attempts} attempts, max_retries {spec.max_retries})"
                    )
            elif kind in (ErrorKind.WORKER_CRASHED, ErrorKind.NODE_DIED):
                assert self.faults & {"node", "worker"}, f"{ref} failed with {kind} without a crash"
            elif kind is ErrorKind.TASK_CANCELLED:
                assert self.cancelled, f"{ref} cancelled without a cancel"

    def _lineage_failed(self, ref: ids.ObjectID) -> bool:
        """True when ``ref``'s task or an ancestor failed or was cancelled (errors propagate)."""
        work = [ref]
        while work:
            obj = work.pop()
            if ids.is_put(obj):
                continue
            task = ids.creating_task(obj)
            if task in self.failed_apps or task in self.cancelled:
                return True
            if task == ids.creating_task(ref) and task not in self.specs:
                continue
            work.extend(self.specs[task].args)
        return False

    def _ancestor_lost(self, ref: ids.ObjectID) -> bool:
        """True when an argument (transitively) of ``ref``'s task is lost for good:
        a put (no lineage) or a task output whose retries are spent."""
        tasks = self.driver.router.tasks
        work = list(self.specs[ids.creating_task(ref)].args)
        while work:
            obj = work.pop()
            if ids.is_put(obj):
                if self.faults & {"node", "evict"}:
                    return True
                continue
            spec = self.specs[ids.creating_task(obj)]
            if (tasks.attempt(spec.task_id) or 0) > spec.max_retries:
                return True
            work.extend(spec.args)
        return False

    def _same_events_same_commands(self) -> None:
        fresh = Router()
        replayed: list[C.Command] = []
        for event in self.driver.log:
            replayed.extend(fresh.handle(event))
        assert replayed == self.driver.commands, "the same events gave different commands"


ClusterMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("DETRAY_LONG_EXAMPLES", 100)),
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCluster = ClusterMachine.TestCase
