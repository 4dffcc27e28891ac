"""An instant driver: carries out the router's external commands at once.

Owns: a minimal, synchronous, deterministic driver for tests, property runs
and the ``detray demo`` story. Workers start the moment they are asked for,
transfers complete at once, timers fire when ``advance`` passes them. Task
bodies do not run here: a started attempt stays in ``running`` until the
caller finishes, fails or kills it (or ``auto_finish`` finishes it at once),
so a test decides every interleaving.

Must not: do I/O, read a clock or draw randomness (it is part of core).
Values are modelled, not stored: a return value is a pure function of the
task name and its arguments' values (``value_of``), so a rebuilt object has
the same value as the original, and a test can compare against a plain
sequential evaluation.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from detray.core import commands as C
from detray.core import events as E
from detray.core.errors import Failure
from detray.core.ids import NodeID, ObjectID, TaskID, WorkerID
from detray.core.router import Router
from detray.core.specs import TaskSpec

EVENTS_PER_STEP_MAX = 100_000


@dataclass(slots=True)
class Running:
    """An attempt the driver started and has not yet settled."""

    spec: TaskSpec
    attempt: int
    node: NodeID
    worker: WorkerID
    gpu_ids: tuple[int, ...]


@dataclass(slots=True)
class InstantDriver:
    """Drive a ``Router`` synchronously; record what a real driver would have done."""

    router: Router = field(default_factory=Router)
    auto_finish: bool = False
    return_size_bytes: Callable[[TaskSpec, ObjectID], int] = lambda spec, obj: 100
    now: float = 0.0
    running: dict[tuple[TaskID, int], Running] = field(default_factory=dict)
    woken: dict[str, C.WakeWaiter] = field(default_factory=dict)
    warnings: list[C.Warn] = field(default_factory=list)
    dead_actor_notices: list[C.ReportActorDead] = field(default_factory=list)
    started: list[tuple[TaskID, int]] = field(default_factory=list)
    """Every attempt ever started, in order."""
    timers: list[C.SetTimer] = field(default_factory=list)
    values: dict[ObjectID, object] = field(default_factory=dict)
    """Modelled values of every object the driver stored (tasks' returns, puts)."""
    log: list[E.Event] = field(default_factory=list)
    """Every event fed to the router, in order (replay it to check determinism)."""
    commands: list[C.Command] = field(default_factory=list)
    """Every external command the router returned, in order."""
    start_checks: list[Callable[[C.StartTask], None]] = field(default_factory=list)
    """Called with every ``StartTask`` before the attempt is recorded as running."""
    _sequence: int = 0
    _workers_busy: dict[WorkerID, tuple[TaskID, int]] = field(default_factory=dict)

    # -- feeding events ---------------------------------------------------------

    def stimulus(self, prefix: str) -> str:
        self._sequence += 1
        return f"{prefix}-{self._sequence}"

    def feed(self, event: E.Event) -> None:
        """Deliver ``event`` and carry out everything it causes, to quiescence."""
        queue: deque[E.Event] = deque((event,))
        steps = 0
        while queue:
            steps += 1
            assert steps <= EVENTS_PER_STEP_MAX, "the instant driver did not reach quiescence"
            current = queue.popleft()
            self.log.append(current)
            for command in self.router.handle(current):
                self.commands.append(command)
                queue.extend(self._carry_out(command))

    def advance(self, seconds: float) -> None:
        """Move time forward and fire the timers that fall due, in order."""
        self.now += seconds
        due = sorted((t for t in self.timers if t.at <= self.now), key=lambda t: (t.at, t.timer))
        self.timers = [t for t in self.timers if t.at > self.now]
        for timer in due:
            self.feed(E.TimerFired(now=self.now, stimulus_id=timer.stimulus_id, timer=timer.timer))

    # -- settling running attempts --------------------------------------------------

    def finish(self, task: TaskID, attempt: int) -> None:
        """The attempt's code returns; an argument holding an error makes it raise
        that error instead (as a worker does when it deserializes an error value)."""
        run = self.running[(task, attempt)]
        for arg in run.spec.args:
            value = self.values.get(arg)
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "error":
                self.fail(task, attempt, error_types=(str(value[1]),))
                return
        del self.running[(task, attempt)]
        self._workers_busy.pop(run.worker, None)
        sizes = []
        for obj in run.spec.return_ids:
            self.values[obj] = self.value_of(run.spec)
            sizes.append((obj, self.return_size_bytes(run.spec, obj)))
        self.feed(
            E.TaskFinished(
                now=self.now,
                stimulus_id=self.stimulus("finish"),
                task=task,
                attempt=attempt,
                node=run.node,
                worker=run.worker,
                return_sizes=tuple(sizes),
            )
        )

    def fail(self, task: TaskID, attempt: int, error_types: tuple[str, ...] = ("builtins.ValueError",)) -> None:
        run = self.running.pop((task, attempt))
        self._workers_busy.pop(run.worker, None)
        sizes = []
        for obj in run.spec.return_ids:
            self.values[obj] = ("error", error_types[0] if error_types else "Exception")
            sizes.append((obj, 64))
        self.feed(
            E.TaskFailed(
                now=self.now,
                stimulus_id=self.stimulus("fail"),
                task=task,
                attempt=attempt,
                node=run.node,
                worker=run.worker,
                error_types=error_types,
                return_sizes=tuple(sizes),
            )
        )

    def kill_worker(self, worker: WorkerID, node: NodeID) -> None:
        self._drop_worker(worker)
        self.feed(E.WorkerDied(now=self.now, stimulus_id=self.stimulus("kill"), worker=worker, node=node))

    def kill_node(self, node: NodeID) -> None:
        incarnation = self.router.incarnations[node]
        for key, run in list(self.running.items()):
            if run.node == node:
                del self.running[key]
                self._workers_busy.pop(run.worker, None)
        self.feed(E.NodeDied(now=self.now, stimulus_id=self.stimulus("node-died"), node=node, incarnation=incarnation))

    def value_of(self, spec: TaskSpec) -> object:
        """The modelled value of ``spec``'s returns: its name applied to its arguments' values."""
        return (spec.name, tuple(self.values.get(arg) for arg in spec.args))

    # -- carrying out commands --------------------------------------------------------

    def _drop_worker(self, worker: WorkerID) -> None:
        key = self._workers_busy.pop(worker, None)
        if key is not None:
            self.running.pop(key, None)

    def _carry_out(self, command: C.Command) -> list[E.Event]:
        handler = _HANDLERS.get(type(command))
        if handler is None:
            raise TypeError(f"the instant driver cannot carry out {type(command).__name__}")
        return handler(self, command)

    def _start_worker(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.StartWorker)
        return [E.WorkerStarted(now=self.now, stimulus_id=c.stimulus_id, worker=c.worker, node=c.node)]

    def _start_task(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.StartTask)
        for check in self.start_checks:
            check(c)
        key = (c.spec.task_id, c.attempt)
        self.running[key] = Running(spec=c.spec, attempt=c.attempt, node=c.node, worker=c.worker, gpu_ids=c.gpu_ids)
        self._workers_busy[c.worker] = key
        self.started.append(key)
        started = E.TaskStarted(
            now=self.now, stimulus_id=c.stimulus_id, task=c.spec.task_id, attempt=c.attempt, node=c.node, worker=c.worker
        )
        if not self.auto_finish:
            return [started]
        self.feed(started)
        if key in self.running:
            self.finish(*key)
        return []

    def _forward(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.ForwardTask)
        return [self.router.arrival(c, now=self.now)]

    def _pull(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.PullObject)
        if not self.router.is_live(c.source) or not self.router.is_live(c.node):
            return [E.ObjectPullFailed(now=self.now, stimulus_id=c.stimulus_id, obj=c.obj, node=c.node, source=c.source)]
        return [E.ObjectCopied(now=self.now, stimulus_id=c.stimulus_id, obj=c.obj, node=c.node)]

    def _restore(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.RestoreObject)
        return [E.ObjectRestored(now=self.now, stimulus_id=c.stimulus_id, obj=c.obj, node=c.node)]

    def _wake(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.WakeWaiter)
        assert c.waiter not in self.woken, f"waiter {c.waiter} woken twice"
        self.woken[c.waiter] = c
        return []

    def _interrupt(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.InterruptTask)
        run = self.running.get((c.task, c.attempt))
        if run is None:
            return []
        if c.force:
            self._drop_worker(c.worker)
            return [E.WorkerDied(now=self.now, stimulus_id=c.stimulus_id, worker=c.worker, node=run.node)]
        del self.running[(c.task, c.attempt)]
        self._workers_busy.pop(c.worker, None)
        sizes = tuple((obj, 64) for obj in run.spec.return_ids)
        for obj in run.spec.return_ids:
            self.values[obj] = ("error", "TaskCancelledError")
        return [
            E.TaskFailed(
                now=self.now,
                stimulus_id=c.stimulus_id,
                task=c.task,
                attempt=c.attempt,
                node=run.node,
                worker=c.worker,
                error_types=("detray.exceptions.TaskCancelledError",),
                cancelled=True,
                return_sizes=sizes,
            )
        ]

    def _kill(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.KillWorker)
        if not self.router.is_live(c.node):
            return []
        self._drop_worker(c.worker)
        return [E.WorkerDied(now=self.now, stimulus_id=c.stimulus_id, worker=c.worker, node=c.node)]

    def _warn(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.Warn)
        self.warnings.append(c)
        return []

    def _timer(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.SetTimer)
        self.timers.append(c)
        return []

    def _actor_dead(self, c: C.Command) -> list[E.Event]:
        assert isinstance(c, C.ReportActorDead)
        self.dead_actor_notices.append(c)
        return []

    def _nothing(self, c: C.Command) -> list[E.Event]:
        return []


def failure_of(driver: InstantDriver, waiter: str, obj: ObjectID) -> Failure | None:
    """The failure a woken waiter got for ``obj`` (None if it was ready)."""
    wake = driver.woken[waiter]
    for failed_obj, failure in wake.failed:
        if failed_obj == obj:
            return failure
    return None


_HANDLERS: dict[type[C.Command], Callable[[InstantDriver, C.Command], list[E.Event]]] = {
    C.StartWorker: InstantDriver._start_worker,
    C.StartTask: InstantDriver._start_task,
    C.ForwardTask: InstantDriver._forward,
    C.PullObject: InstantDriver._pull,
    C.DeleteCopy: InstantDriver._nothing,
    C.SpillObject: InstantDriver._nothing,
    C.RestoreObject: InstantDriver._restore,
    C.WakeWaiter: InstantDriver._wake,
    C.InterruptTask: InstantDriver._interrupt,
    C.KillWorker: InstantDriver._kill,
    C.Warn: InstantDriver._warn,
    C.SetTimer: InstantDriver._timer,
    C.ReportActorDead: InstantDriver._actor_dead,
}
