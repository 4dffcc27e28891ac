"""The simulated cluster: SimPy, the core router, the network, and the loop that runs it all.

Owns: the virtual nodes (physically up or down, incarnations, slowdowns), the
loop greenlet that steps SimPy and carries out the router's external
commands, the waiters of blocked user code, resource reports between nodes,
membership through the control plane (fakeredis: node table, notifications,
resync), the trace, invariant checks, deadlock detection and the run limits.
Must not: decide anything the core decides (placement, retries, copies), read
the wall clock, draw randomness outside ``streams``, or iterate anything
ordered by ``hash()``/``id()``.

Theory of operation
-------------------
``init`` runs in the main greenlet (the user's driver script). ``start``
creates the *loop greenlet*, which owns the SimPy environment and the
``usercode.Runner``; the main greenlet is adopted as the driver's unit. From
then on exactly one of them runs at a time: the driver runs until it blocks
(``get``, ``wait``, ``time.sleep``, ``shutdown``); the loop then advances
virtual time until it can resume the driver, running other units (task
bodies, actor methods) one at a time in a fixed order on the way.

API calls from user code (submit, put, get...) feed the router at once,
within the unit; the external commands the router returns go to the FIFO
``queue``, which only the loop drains. Reference changes recorded by the
hooks are applied at each switch point (``_switch_point``). The loop is::

    drain the queue -> (nothing left) step SimPy once -> drain ...

SimPy callbacks (timers from ``later``, network deliveries) do their work at
once, inside the step: the loop only steps with an empty queue and no
pending reference change, so that is exactly where the queue would have run
it (one append and pop less per timer; with invariant checks on, the loop
checks after the step).

When SimPy has no event left while user code waits, nothing can ever
progress: the driver gets a ``DeadlockError`` naming what it waits for.

Trace kinds (``events`` level unless noted): ``sim.start``/``sim.end``,
``node.joined``/``node.down``/``node.declared_dead``/``node.died``,
``task.started``/``task.finished``/``task.failed``/``task.interrupted``
(``task.submitted``: debug), ``actor.created``/``actor.alive``/
``actor.restarting``/``actor.dead``/``actor.out_of_scope``, ``object.put``,
``object.evicted``, ``object.spilled`` (``object.copied``/``object.deleted``:
debug), ``worker.died``, ``fault``/``fault.scheduled``/``fault.random``,
``plane.*``, ``warn``, ``print`` (every line user code writes),
``sim.deadlock``, ``sim.limit``.
"""

from __future__ import annotations

import gc
import sys
from heapq import heappop, heappush
from collections import deque
from collections.abc import Callable
from typing import Any

import fakeredis
import greenlet  # type: ignore[import-untyped]
import simpy

from detray import controlplane
from detray.core import commands as C
from detray.core import events as E
from detray.core import ids
from detray.core.directory import ObjectStatus
from detray.core.ids import NodeID, ObjectID, WorkerID
from detray.core.invariants import check_all
from detray.core.records import builder
from detray.core.resources import as_floats, units_of
from detray.core.router import Router
from detray.exceptions import RaySystemError
from detray.sim import deadlock
from detray.sim.config import ClusterSpec, SimSettings
from detray.sim.durations import DurationModel
from detray.sim.errors import DeadlockError, SimulationLimitError
from detray.sim.network import Message, Network
from detray.sim.objects import ObjectValues, StoredValue
from detray.sim.records import Exec, SimNode, UnitContext, Waiter
from detray.sim.refs import RefLedger
from detray.sim.timers import NORMAL, Timer, heap_of
from detray.sim.trace import Trace, TraceLevel
from detray.sim.coop import LockWait
from detray.sim.usercode import Blocked, Outcome, ProcessExit, Runner, Sleep, UnitState, UserCode

FORWARD_BYTES = 1024
"""Wire size of a forwarded task spec (arguments inline travel on top)."""
RESTORE_BYTES_PER_S = 1e9
"""Disk read speed for restoring spilled objects."""
FORWARD_RETRY_S = 0.1
GC_YOUNG_THRESHOLD = 50_000
"""Allocations between young-generation collections while a simulation runs (Python: 700)."""
REFRESH_INTERVAL_S = 1.0
"""How often nodes with room repeat their resource report while work waits somewhere."""


class ShutdownRequest:
    """What the driver blocks on in ``shutdown``: the loop ends the simulation."""


class PlaneWait:
    """User code waits for the control plane to come back."""


_INFINITY = float("inf")
_WAKE_WAITER = C.WakeWaiter  # module globals: cheaper than an attribute on the hot path
_DEBUG = TraceLevel.DEBUG
_LEVELS = {"off": TraceLevel.OFF, "events": TraceLevel.EVENTS, "debug": TraceLevel.DEBUG}


_build_copied = builder(E.ObjectCopied, "now", "stimulus_id", "obj", "node")  # positional: half the cost
_build_reported = builder(E.NodeResourcesReported, "now", "stimulus_id", "node", "incarnation", "available")


class SimCluster:
    """One simulated cluster; built and run by ``SimRuntime`` (see the module docstring)."""

    def __init__(self, spec: ClusterSpec, settings: SimSettings, seed: int, *, log_to_driver: bool = True) -> None:
        from detray.sim.workers import Executor  # the executor needs this class's attributes

        self.spec = spec
        self.settings = settings
        self.seed = seed
        self.log_to_driver = log_to_driver
        self.env = simpy.Environment()
        self._events, self._event_ids = heap_of(self.env)
        self._joining: list[controlplane.NodeRecord] | None = None  # node records written at bring-up's end
        self._later_callbacks = (self._later_fired,)
        self._forward_callbacks = (self._forward_delivered, self._forward_dropped, self._forward_delivered)
        self._pull_callbacks = (self._pull_done, self._pull_failed, self._pull_failed)
        self.router = Router()
        head = ids.node_id(0)
        self.head = head
        self.network = Network(
            self.env,
            latency_s=spec.network.latency_s,
            bandwidth_bytes_per_s=spec.network.bandwidth_bytes_per_s,
            partition_mode=spec.network.partition_mode,
            head=head,
        )
        self.trace = Trace(level=_LEVELS[settings.trace_level], path=settings.trace_path)
        self.values = ObjectValues()
        self.ledger = RefLedger()
        self.durations = DurationModel(seed, settings.durations)
        self.plane = controlplane.ControlPlane(
            fakeredis.FakeRedis(server=fakeredis.FakeServer()), cluster_id=f"sim-{seed}"
        )
        self.subscription = self.plane.subscribe(("nodes",))
        self.queue: deque[Any] = deque()
        self.nodes: dict[NodeID, SimNode] = {}
        self.waiters: dict[str, Waiter] = {}
        self.owner_of: dict[ObjectID, WorkerID] = {}
        self.stats: dict[str, int] = {}
        self.warned: dict[tuple[str, str], None] = {}
        self.executor = Executor(self)
        self.runner: Runner | None = None
        self.driver_exec: Exec | None = None
        self.stopping = False
        self.closed = False
        self.steps = 0
        self._waiter_count = 0
        self._stimulus = 0
        self._report_scheduled = False
        self._refresh_scheduled = False
        self._starts_at_refresh = 0
        self._dirty: list[NodeID] = []
        self._plane_down_until: float | None = None
        self._plane_deferred: list[Callable[[], None]] = []
        self._plane_waiters: list[Exec] = []
        self._notification_faults: list[list[Any]] = []
        self._resync_scheduled_at: float | None = None
        self._fault_count = 0
        self._check = settings.check_invariants
        self._check_all = check_all if self._check else None
        self._loop_glet: greenlet.greenlet | None = None
        self._crash: BaseException | None = None
        self._handlers: dict[type, Callable[[Any], None]] = {
            C.StartWorker: self._start_worker,
            C.StartTask: self.executor.start_task,
            C.ForwardTask: self._forward_task,
            C.PullObject: self._pull_object,
            C.DeleteCopy: self._delete_copy,
            C.SpillObject: self._spill_object,
            C.RestoreObject: self._restore_object,
            C.WakeWaiter: self._wake_waiter,
            C.InterruptTask: self.executor.interrupt_task,
            C.KillWorker: self._kill_worker_command,
            C.Warn: self._warn,
            C.SetTimer: self._set_timer,
            C.ReportActorDead: self.executor.report_actor_dead,
        }

    # -- time, ids, trace -------------------------------------------------------------------------

    def now(self) -> float:
        return self.env._now  # SimPy's clock without its property call (a hot path)

    def sid(self, what: str) -> str:
        self._stimulus += 1
        return f"{what}:{self._stimulus}"

    def count(self, stat: str) -> None:
        self.stats[stat] = self.stats.get(stat, 0) + 1

    def emit(self, node: str | None, kind: str, /, *, level: TraceLevel = TraceLevel.EVENTS, **fields: Any) -> None:
        # Positional-only node and kind: CPython then matches each field's name against ``level`` alone.
        trace = self.trace
        if level <= trace.level:  # checked here: a filtered event costs one comparison
            trace.write(self.env._now, node, kind, fields)

    def new_waiter_id(self, kind: str) -> str:
        self._waiter_count += 1
        return f"{kind}:{self._waiter_count}"

    # -- feeding the router ------------------------------------------------------------------------

    def feed(self, event: E.Event) -> None:
        """Deliver ``event`` to the core; its external commands go to the queue.

        Wakes of registered waiters are recorded at once, so a ``get`` whose
        objects are already local never blocks.
        """
        commands = self.router.handle(event)
        if not commands:
            return
        append = self.queue.append
        for command in commands:
            if command.__class__ is _WAKE_WAITER:
                waiter = self.waiters.get(command.waiter)
                if waiter is not None:
                    self._record_wake(waiter, command)
                    continue
            append(command)

    def _record_wake(self, waiter: Waiter, wake: C.WakeWaiter) -> None:
        del self.waiters[waiter.waiter_id]
        waiter.wake = wake
        waiter.done = True
        get_value = self.values.get
        waiter.values = {obj: value for obj in wake.ready if (value := get_value(obj)) is not None}
        if waiter.exec is not None or waiter.future is not None or waiter.actor is not None:
            self.queue.append((self.executor.deliver_wake, waiter))

    # -- the loop -----------------------------------------------------------------------------------

    def start(self, driver_context: UnitContext) -> None:
        """Build the loop greenlet and adopt the calling greenlet as the driver; returns
        in the driver once the cluster is up."""
        main = greenlet.getcurrent()
        self._loop_glet = greenlet.greenlet(self._loop_main, parent=main)
        # A run allocates millions of short-lived records; Python's default collection of the
        # young generation every 700 allocations cost a third of a 1,000-node run. Collect less
        # often while the simulation runs; shutdown puts the process's thresholds back.
        self._gc_thresholds = gc.get_threshold()
        gc.set_threshold(GC_YOUNG_THRESHOLD, *self._gc_thresholds[1:])
        result = self._loop_glet.switch(main, driver_context)
        if isinstance(result, BaseException):
            gc.set_threshold(*self._gc_thresholds)
            raise result

    def _loop_main(self, driver_glet: greenlet.greenlet, driver_context: UnitContext) -> Any:
        try:
            self.runner = Runner(clock=self.now, seed=self.seed, sink=self._sink)
        except BaseException as error:  # noqa: B036 -- handed to the driver
            return error
        crash: BaseException | None = None
        try:
            self._bring_up()
            unit = UserCode(lambda: None, label="", key=("driver",), context=driver_context)
            driver = Exec(unit=unit, context=driver_context, worker=None)
            self.driver_exec = driver
            self.runner.adopt(unit, driver_glet)
            self.run_exec(driver, "resume", None)
            self._run()
        except BaseException as error:  # noqa: B036 -- a crash of the loop reaches the driver
            crash = error
        finally:
            self._close_runner()
        if crash is not None:
            raise crash
        return None

    def _close_runner(self) -> None:
        runner = self.runner
        if runner is None:
            return
        driver = self.driver_exec
        if driver is not None and driver.unit.state is UnitState.BLOCKED:
            runner.release(driver.unit)
        self.ledger.closed = True
        self.emit(None, "sim.end", steps=self.steps, stopping=self.stopping)
        runner.close()
        self.executor.close_loops()
        self.trace.close()
        self.closed = True
        gc.set_threshold(*self._gc_thresholds)

    def _run(self) -> None:
        env = self.env
        events = self._events  # SimPy's heap of (time, priority, insertion id, event)
        queue = self.queue
        max_time = self.settings.max_virtual_time_s
        max_events = self.settings.max_events
        check = self._check
        handlers = self._handlers
        ledger = self.ledger
        ref_changes, actor_changes = ledger.refs, ledger.actors  # ledger.pending() without the call
        while True:
            while queue:
                item = queue.popleft()  # a (fn, *args) tuple or an external command
                if item.__class__ is tuple:
                    item[0](*item[1:])
                else:
                    handlers[item.__class__](item)
                if check:
                    self.check_invariants()
            if self.stopping:
                return
            if ref_changes or actor_changes:
                self._switch_point()
            if queue:
                continue
            when = events[0][0] if events else _INFINITY  # env.peek()
            if when == _INFINITY:
                self._deadlock()
                continue
            if when > max_time:
                self._limit(f"virtual time would pass the limit of {max_time} s (next event at {when} s)")
                continue
            self.steps += 1
            if self.steps > max_events:
                self._limit(f"the run passed its limit of {max_events} events")
                continue
            event = events[0][3]
            if event.__class__ is Timer:  # env.step() inlined: a timer has one callback and never fails
                env._now = heappop(events)[0]
                event.callbacks[0](event)
            else:
                env.step()
            if check:  # what the callbacks did at once (see the module docstring)
                self.check_invariants()

    def later(self, delay_s: float, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` ``delay_s`` from now (a bare SimPy timer, no process; see the module docstring)."""
        if delay_s < 0:
            raise ValueError(f"cannot schedule {getattr(fn, '__name__', fn)} {delay_s!r} s in the past")
        timer = Timer(self._later_callbacks, fn, args)
        heappush(self._events, (self.env._now + delay_s, NORMAL, next(self._event_ids), timer))  # env.schedule

    def _later_fired(self, timer: Timer) -> None:
        timer.target(*timer.token)  # at once: where the queue would run it (module docstring)

    def run_exec(self, ex: Exec, how: str, value: Any) -> None:
        """Switch into a unit (start, resume or throw) and handle what it hands back."""
        runner = self.runner
        assert runner is not None
        ex.token += 1
        if how == "start":
            outcome = runner.start(ex.unit)
        elif how == "resume":
            outcome = runner.resume(ex.unit, value)
        else:
            outcome = runner.throw(ex.unit, value)
        self.on_outcome(ex, outcome)

    def on_outcome(self, ex: Exec, outcome: Outcome | None) -> None:
        if outcome.__class__ is Blocked:
            self._on_blocked(ex, outcome.request)
        elif ex is self.driver_exec:
            raise RuntimeError(f"the driver's unit ended unexpectedly: {outcome!r}")
        elif outcome is not None:
            self.executor.unit_ended(ex, outcome)
        ledger = self.ledger
        if ledger.refs or ledger.actors:  # ledger.pending(), inlined: most units leave no change
            self._switch_point()

    def _on_blocked(self, ex: Exec, request: Any) -> None:
        if request.__class__ is Sleep:
            self.later(request.duration_s, self._wake_sleeper, ex, ex.token)
        elif request.__class__ is Waiter:
            self.executor.blocked_on(ex, request)
        elif request.__class__ is ShutdownRequest:
            self.stopping = True
        elif request.__class__ is PlaneWait:
            self._plane_waiters.append(ex)
        elif request.__class__ is LockWait:
            self.executor.blocked_on_lock(ex, request)
        elif request.__class__ is ProcessExit:
            self.executor.process_exit(ex, request.code)
        else:
            raise TypeError(f"user code blocked on an unknown request {request!r}")

    def _wake_sleeper(self, ex: Exec, token: int) -> None:
        if ex.dead or ex.token != token:
            return
        self.run_exec(ex, "resume", None)

    def _switch_point(self) -> None:
        """Apply recorded reference changes (user code handed control back)."""
        ledger = self.ledger
        if not (ledger.refs or ledger.actors):  # ledger.pending(), inlined
            return
        events, unknown = ledger.take_ref_events(self.owner_of.get, now=self.env._now, stimulus_id="refs")
        if unknown:
            self.stats["refs_unknown_object"] = self.stats.get("refs_unknown_object", 0) + unknown
        for event in events:
            self.feed(event)
        changes = ledger.take_actor_changes()
        if changes:
            self.executor.actor_handles_changed(changes)

    def check_invariants(self) -> None:
        assert self._check_all is not None
        self._check_all(self.router, touched_only=True)
        self.network.check_invariants()

    # -- stopping: deadlock, limits ---------------------------------------------------------------

    def _deadlock(self) -> None:
        driver = self.driver_exec
        assert driver is not None
        message, blocked = deadlock.explain(self)
        self.emit(None, "sim.deadlock", blocked=len(blocked))
        if driver.waiter is not None:
            self.executor.cancel_wait(driver)
        self.run_exec(driver, "throw", DeadlockError(message, blocked))

    def _limit(self, what: str) -> None:
        driver = self.driver_exec
        assert driver is not None
        self.emit(None, "sim.limit", what=what)
        if driver.waiter is not None:
            self.executor.cancel_wait(driver)
        elif driver.unit.state is not UnitState.BLOCKED:
            raise RuntimeError(what)
        self.run_exec(driver, "throw", SimulationLimitError(f"simulation stopped: {what}"))

    # -- bring-up and nodes -------------------------------------------------------------------------

    def _bring_up(self) -> None:
        self.emit(
            None,
            "sim.start",
            seed=self.seed,
            nodes=len(self.spec.nodes),
            python=f"{sys.version_info[0]}.{sys.version_info[1]}",
        )
        for index, node_spec in enumerate(self.spec.nodes):
            node = ids.node_id(index)
            self.nodes[node] = SimNode(node=node, index=index, spec=node_spec)
        # Every node registers in the node table; written together (one round trip per
        # thousand nodes, not one each: 85% of bringing up 10,000 nodes).
        self._joining = []
        for node in self.nodes:
            self.node_up(node)
        joining, self._joining = self._joining, None
        self._plane_write(lambda: self.plane.put_nodes(joining))

    def node_up(self, node: NodeID) -> None:
        """``node`` (re)starts: a new incarnation joins."""
        rec = self.nodes[node]
        if rec.up:
            return
        rec.incarnation += 1
        rec.up = True
        rec.declared_dead = False
        rec.rejoin_when_reachable = False
        rec.last_report = None
        self.network.node_up(node)
        self.emit(node, "node.joined", incarnation=rec.incarnation)
        resources = units_of(rec.spec.resources)
        record = controlplane.NodeRecord(
            node_id=node,
            incarnation=rec.incarnation,
            resources=dict(rec.spec.resources),
            state="ALIVE",
            address=rec.spec.name,
        )
        if self._joining is not None:
            self._joining.append(record)
        else:
            self._plane_write(lambda: self.plane.put_node(record))
        self._notify_membership(
            E.NodeJoined(
                now=self.env.now,
                stimulus_id=self.sid("join"),
                node=node,
                incarnation=rec.incarnation,
                resources=resources,
                object_store_bytes=rec.spec.object_store_bytes,
                spill_enabled=rec.spec.spill_enabled,
            )
        )
        if node != self.head:
            if rec.watch is not None:
                rec.watch.cancel()  # the previous incarnation's: this one gets its own
            rec.watch = self.network.watch(node, self.spec.failure_detector_timeout_s, self._suspected)

    def node_down(self, node: NodeID, why: str) -> None:
        """``node``'s processes die now (the router learns it from the failure detector)."""
        rec = self.nodes[node]
        if not rec.up:
            return
        if node == self.head:
            raise ValueError("the head node (node 0) runs the driver and the control plane: it cannot die")
        rec.up = False
        self.emit(node, "node.down", why=why, incarnation=rec.incarnation)
        self.network.node_down(node)
        self.executor.node_lost(rec)
        for obj in self.values.drop_node(node):
            self._maybe_drop_value(obj)

    def _suspected(self, node: str) -> None:
        rec = self.nodes[NodeID(node)]
        rec.declared_dead = True
        self.emit(node, "node.declared_dead", incarnation=rec.incarnation)
        incarnation = rec.incarnation
        self._plane_write(
            lambda: self.plane.put_node(
                controlplane.NodeRecord(
                    node_id=node,
                    incarnation=incarnation,
                    resources=dict(rec.spec.resources),
                    state="DEAD",
                    address=rec.spec.name,
                )
            )
        )
        self._notify_membership(
            E.NodeDied(now=self.env.now, stimulus_id=self.sid("died"), node=NodeID(node), incarnation=incarnation)
        )
        if rec.up:  # partitioned away: its raylet learns it was declared dead and exits
            self.node_down(NodeID(node), "declared dead while partitioned")
            rec.rejoin_when_reachable = True

    def topology_changed(self) -> None:
        """After a partition or heal: nodes declared dead while cut off rejoin once reachable."""
        for node, rec in self.nodes.items():
            if rec.rejoin_when_reachable and self.network.connected(self.head, node):
                self.node_up(node)
        self._drain_notifications()

    # -- membership notifications through the control plane ---------------------------------------

    def _notify_membership(self, event: E.NodeJoined | E.NodeDied) -> None:
        """A membership change reaches the raylets as a control-plane notification
        (subject to notification faults); bring-up joins are delivered at once."""
        if not self.nodes_ready():
            self.feed(event)
            return
        if self._plane_down_until is not None:
            self.count("notification_lost_plane_down")
            self.emit(event.node, "plane.notification_lost", why="control plane down")
            return
        for fault in self._notification_faults:
            if fault[0] in ("nodes", "*") and fault[2] > 0:
                fault[2] -= 1
                if fault[1] == "lose":
                    self.count("notification_lost")
                    self.emit(event.node, "plane.notification_lost", event=type(event).__name__)
                    self._schedule_resync()
                else:
                    self.emit(event.node, "plane.notification_delayed", delay_s=fault[3])
                    self.later(fault[3], self._deliver_membership, event)
                self._notification_faults = [f for f in self._notification_faults if f[2] > 0]
                return
        self._deliver_membership(event)

    def nodes_ready(self) -> bool:
        return self.driver_exec is not None

    def _deliver_membership(self, event: E.NodeJoined | E.NodeDied) -> None:
        self.feed(_restamp(event, self.env.now))
        if event.__class__ is E.NodeDied:
            self.executor.node_declared_dead(event.node)

    def _drain_notifications(self) -> None:
        # Table changes are also published; the simulator delivers them directly
        # (above) and only keeps the subscription drained, as a raylet would.
        if self._plane_down_until is None:
            self.subscription.drain()

    def add_notification_fault(self, channel: str, action: str, count: int, delay_s: float) -> None:
        self._notification_faults.append([channel, action, count, delay_s])

    def _schedule_resync(self) -> None:
        interval = self.spec.resync_interval_s
        at = (int(self.env.now / interval) + 1) * interval
        if self._resync_scheduled_at is not None and self._resync_scheduled_at <= at:
            return
        self._resync_scheduled_at = at
        self.later(at - self.env.now, self._resync)

    def _resync(self) -> None:
        """Re-read the node table and deliver what the router missed."""
        self._resync_scheduled_at = None
        if self._plane_down_until is not None:
            return
        self.emit(None, "plane.resync")
        for record in self.plane.get_nodes():
            node = NodeID(record.node_id)
            known = self.router.incarnations.get(node)
            if record.state == "DEAD":
                if known == record.incarnation and self.router.is_live(node):
                    self._deliver_membership(
                        E.NodeDied(now=self.env.now, stimulus_id=self.sid("resync"), node=node, incarnation=record.incarnation)
                    )
            elif known is None or record.incarnation > known:
                rec = self.nodes[node]
                self._deliver_membership(
                    E.NodeJoined(
                        now=self.env.now,
                        stimulus_id=self.sid("resync"),
                        node=node,
                        incarnation=record.incarnation,
                        resources=units_of(rec.spec.resources),
                        object_store_bytes=rec.spec.object_store_bytes,
                        spill_enabled=rec.spec.spill_enabled,
                    )
                )
        self._drain_notifications()

    # -- the control plane going down --------------------------------------------------------------

    def _plane_write(self, write: Callable[[], None]) -> None:
        if self._plane_down_until is not None:
            self._plane_deferred.append(write)
            return
        write()
        self._drain_notifications()

    def plane_call(self, read: Callable[[], Any]) -> Any:
        """Run a control-plane call from user code, waiting (in virtual time) while it is down."""
        from detray.sim.usercode import block

        while self._plane_down_until is not None:
            block(PlaneWait())
        return read()

    def plane_down(self, downtime_s: float) -> None:
        if self._plane_down_until is not None:
            return
        self._plane_down_until = self.env.now + downtime_s
        self.emit(self.head, "plane.down", downtime_s=downtime_s)
        self.later(downtime_s, self._plane_up)

    def _plane_up(self) -> None:
        self._plane_down_until = None
        self.emit(self.head, "plane.up")
        self.subscription.close()
        self.subscription = self.plane.subscribe(("nodes",))
        deferred, self._plane_deferred = self._plane_deferred, []
        for write in deferred:
            write()
        self._drain_notifications()
        self._resync()
        waiters, self._plane_waiters = self._plane_waiters, []
        for ex in waiters:
            if not ex.dead:
                self.run_exec(ex, "resume", None)

    # -- faults -----------------------------------------------------------------------------------------

    def schedule(self, *faults: Any) -> None:
        """Schedule faults (``detray.sim.faults``) at their ``at_s``; all are checked first."""
        from detray.sim import faults as fault_kinds

        for fault in faults:
            fault_kinds.validate(self, fault)
        for fault in faults:
            index = self._fault_count
            self._fault_count += 1
            self.emit(None, "fault.scheduled", fault=type(fault).__name__, index=index, at_s=float(fault.at_s))
            self.later(fault.at_s - self.env.now, fault_kinds.apply, self, fault, index)

    # -- commands ---------------------------------------------------------------------------------------

    def _start_worker(self, command: C.StartWorker) -> None:
        rec = self.nodes.get(command.node)
        if rec is None or not rec.up:
            self.count("start_worker_on_down_node")
            return
        self.executor.new_worker(command.worker, command.node)
        delay_s = self.spec.worker_start_s
        if delay_s > 0:
            self.later(delay_s, self._worker_started, command.worker, command.node)
        else:
            self._worker_started(command.worker, command.node)

    def _worker_started(self, worker: WorkerID, node: NodeID) -> None:
        if not self.executor.worker_alive(worker):
            return
        self.feed(E.WorkerStarted(now=self.env.now, stimulus_id=worker, worker=worker, node=node))

    def _forward_task(self, command: C.ForwardTask) -> None:
        size = FORWARD_BYTES + self.executor.inline_bytes(command.spec.task_id)
        # Delivered, dropped, failed (a failed forward is handed over too, see below).
        self.network.send(command.from_node, command.to_node, size, command, *self._forward_callbacks)

    def _forward_delivered(self, message: Message) -> None:
        # A forward to a node that died is still handed to it: the task manager
        # retries what was queued on a dead node once the node is declared dead.
        # Runs at once, inside the network's step (see the module docstring).
        command: C.ForwardTask = message.payload
        self.feed(self.router.arrival(command, now=self.env._now))

    def _forward_dropped(self, message: Message) -> None:
        self.count("forward_dropped")
        self.later(FORWARD_RETRY_S, self._forward_task, message.payload)

    def _pull_object(self, command: C.PullObject) -> None:
        # Delivered, dropped, failed.
        self.network.send(command.source, command.node, command.size_bytes, command, *self._pull_callbacks)

    def _pull_done(self, message: Message) -> None:
        """The pull arrived: at once, inside the network's step (see the module docstring)."""
        command: C.PullObject = message.payload
        node = self.nodes[command.node]
        if not node.up or self.values.get(command.obj) is None:
            self._pull_failed_now(command)
            return
        self.values.add_copy(command.obj, command.node)
        if self.trace.level >= _DEBUG:
            self.emit(command.node, "object.copied", level=TraceLevel.DEBUG, obj=command.obj, source=command.source)
        self.feed(_build_copied(self.env._now, self.sid("copied"), command.obj, command.node))

    def _pull_failed(self, message: Message) -> None:
        self._pull_failed_now(message.payload)  # at once, inside the network's step

    def _pull_failed_now(self, command: C.PullObject) -> None:
        self.count("pull_failed")
        self.feed(
            E.ObjectPullFailed(
                now=self.env.now,
                stimulus_id=self.sid("pullfail"),
                obj=command.obj,
                node=command.node,
                source=command.source,
            )
        )

    def _delete_copy(self, command: C.DeleteCopy) -> None:
        self.values.remove_copy(command.obj, command.node)
        self.emit(command.node, "object.deleted", level=TraceLevel.DEBUG, obj=command.obj, reason=command.reason)
        self._maybe_drop_value(command.obj)
        if command.reason == "freed":
            self.executor.object_freed(command.obj)

    def _maybe_drop_value(self, obj: ObjectID) -> None:
        """Drop the bytes once no copy is left anywhere (freed or lost)."""
        if self.values.has_copies(obj):
            return
        status = self.router.directory.status(obj)
        if status is ObjectStatus.AVAILABLE and self.router.directory.locations(obj):
            return
        dropped = self.values.drop(obj)
        if dropped is not None:
            self.executor.release_contained(dropped)
        if status is None or status is ObjectStatus.FREED:
            self.owner_of.pop(obj, None)

    def _spill_object(self, command: C.SpillObject) -> None:
        self.values.set_spilled(command.obj, command.node, True)
        self.emit(command.node, "object.spilled", obj=command.obj, size=command.size_bytes)

    def _restore_object(self, command: C.RestoreObject) -> None:
        self.later(command.size_bytes / RESTORE_BYTES_PER_S, self._restored, command)

    def _restored(self, command: C.RestoreObject) -> None:
        if not self.nodes[command.node].up:
            return
        self.values.set_spilled(command.obj, command.node, False)
        self.feed(E.ObjectRestored(now=self.env.now, stimulus_id=self.sid("restored"), obj=command.obj, node=command.node))

    def _wake_waiter(self, command: C.WakeWaiter) -> None:
        waiter = self.waiters.get(command.waiter)
        if waiter is None:
            self.count("wake_of_unknown_waiter")
            return
        self._record_wake(waiter, command)

    def _kill_worker_command(self, command: C.KillWorker) -> None:
        self.executor.kill_worker(command.worker, "KillWorker")

    def _warn(self, command: C.Warn) -> None:
        key = (command.code, command.subject)
        if key in self.warned:
            return
        self.warned[key] = None
        self.emit(None, "warn", code=command.code, subject=command.subject)
        print(f"detray (sim) warning: {command.message}", file=sys.stderr)

    def _set_timer(self, command: C.SetTimer) -> None:
        self.later(max(0.0, command.at - self.env.now), self._timer_fired, command.timer)

    def _timer_fired(self, timer: str) -> None:
        self.feed(E.TimerFired(now=self.env.now, stimulus_id=self.sid("timer"), timer=timer))

    # -- resource reports between nodes ------------------------------------------------------------------

    def mark_dirty(self, node: NodeID) -> None:
        """``node``'s availability may have changed: it reports at the next tick (Ray's
        resource broadcast: periodic, only when changed)."""
        rec = self.nodes.get(node)
        if rec is None or rec.report_dirty or len(self.nodes) < 2:
            return
        rec.report_dirty = True
        self._dirty.append(node)
        if not self._report_scheduled:
            self._report_scheduled = True
            self.later(self._next_tick(self.spec.resource_report_interval_s), self._report)

    def _next_tick(self, interval_s: float) -> float:
        """Delay to the next multiple of ``interval_s`` strictly after now."""
        return (int(self.env.now / interval_s) + 1) * interval_s - self.env.now

    def _report(self) -> None:
        self._report_scheduled = False
        dirty, self._dirty = self._dirty, []
        dirty.sort()
        for node in dirty:
            self.nodes[node].report_dirty = False
            self._send_report(node, force=False)
        self._arm_refresh()

    def _send_report(self, node: NodeID, *, force: bool) -> bool:
        rec = self.nodes[node]
        scheduler = self.router.schedulers.get(node)
        if scheduler is None or not rec.up:
            return False
        available = scheduler.available()
        # No "unchanged since my last report" shortcut: other schedulers may have
        # reserved room here since, and only a report puts their view right.
        rec.last_report = available
        self.feed(_build_reported(self.env._now, self.sid("report"), node, scheduler.incarnation, available))
        return True

    def _arm_refresh(self) -> None:
        if not self._refresh_scheduled:
            self._refresh_scheduled = True
            self.later(self._next_tick(REFRESH_INTERVAL_S), self._refresh)

    def _refresh(self) -> None:
        """Re-send the reports of nodes with room while work waits in a queue somewhere.

        Changes alone do not reach a node that queued work on a view that went stale
        (it was forwarded a task, then every other node stayed idle and silent); Ray
        broadcasts periodically. A round (one report per node with room, to every node:
        quadratic in nodes) only runs once no task has started anywhere for a whole
        interval: while work progresses, the reports of changing nodes move queued work.
        Rounds go on only while they move work, so a run that is stuck for good still
        ends in a deadlock error.
        """
        self._refresh_scheduled = False
        starts = self.executor.starts
        if starts != self._starts_at_refresh:
            self._starts_at_refresh = starts
            self._arm_refresh()  # work progresses: look again later
            return
        if not self._work_waits():
            return
        before = len(self.queue)
        for node, scheduler in self.router.schedulers.items():
            available = scheduler.available()
            if any(amount > 0 for amount in available.values()):
                self._send_report(node, force=True)
        moved = any(item.__class__ is C.ForwardTask for item in list(self.queue)[before:])
        self.emit(None, "sim.refresh", level=TraceLevel.DEBUG, moved=moved)
        if moved:
            self._arm_refresh()

    def _work_waits(self) -> bool:
        """Some scheduler holds an attempt that could run somewhere but does not run yet."""
        for scheduler in self.router.schedulers.values():
            # Diagnostics of a scheduler's queue: infeasible attempts wait for a node to join.
            if scheduler.queue_length() > scheduler.infeasible_count():
                return True
        return False

    # -- output ---------------------------------------------------------------------------------------------

    def _sink(self, unit: Any, stream: str, text: str) -> None:
        context = unit.context
        node = context.node if isinstance(context, UnitContext) else None
        self.emit(node, "print", stream=stream, text=text.rstrip("\n"))
        if not self.log_to_driver and isinstance(context, UnitContext) and context.kind != "driver":
            return
        from detray.sim.virtual_env import console_sink

        console_sink(unit, stream, text)

    # -- queries for the runtime ------------------------------------------------------------------------------

    def live_nodes(self) -> list[SimNode]:
        return [rec for node, rec in self.nodes.items() if self.router.is_live(node)]

    def resources_of(self, which: str) -> dict[str, float]:
        total: dict[str, int] = {}
        for node, scheduler in self.router.schedulers.items():
            if not self.nodes[node].up:
                continue
            units = scheduler.total() if which == "total" else scheduler.available()
            for name, amount in units.items():
                total[name] = total.get(name, 0) + amount
        return as_floats(total)

    def value_of(self, obj: ObjectID) -> StoredValue | None:
        return self.values.get(obj)

    def ensure_running(self) -> None:
        if self.closed or self.stopping:
            raise RaySystemError("the simulated cluster has shut down")


def _restamp(event: E.NodeJoined | E.NodeDied, now: float) -> E.NodeJoined | E.NodeDied:
    if event.now == now:
        return event
    if isinstance(event, E.NodeJoined):
        return E.NodeJoined(
            now=now,
            stimulus_id=event.stimulus_id,
            node=event.node,
            incarnation=event.incarnation,
            resources=event.resources,
            object_store_bytes=event.object_store_bytes,
            spill_enabled=event.spill_enabled,
        )
    return E.NodeDied(now=now, stimulus_id=event.stimulus_id, node=event.node, incarnation=event.incarnation)
