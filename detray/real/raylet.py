"""The raylet: one process per node, hosting the core and carrying out its commands with real processes.

Owns: the node's ``Router`` (the core's state machines), its object store
(``ObjectStore``: the raylet is the owner process), its worker processes
(a warm pool, assignment, death), the connections of the driver and the
workers, the values of small objects (kept here, as Ray keeps them in the
owner's in-process store), the waiters of ``get``/``wait``, timers, and the
control-plane records other processes read (node, actors, task records by
write-behind). Must not: decide anything the core decides (placement,
retries, reconstruction, freeing), unpickle user data (payloads and values
are opaque bytes here), or block on one client.

Theory of operation: one thread runs ``serve``: it waits on every client
channel (and a wake pipe the accept thread writes to), reads each ready
channel's batches, turns each message into core events (``feed``), carries
out the external commands the router returns (``execute``), and at the end
of each round sends every client its batch of replies in one write. Time is
``time.monotonic()`` since start: the core's ``now``.

Worker processes are spawned ahead of need (a warm pool) and bound to the
core's worker id when the scheduler asks for one (``StartWorker``): the core
sees a worker appear at once, the user sees no process start-up on the
first task. A worker whose channel closes is dead (``WorkerDied``): its task
is retried or its actor restarted by the core. A driver whose channel closes
ends the cluster. An actor whose call reported ``EXITING`` (``exit_actor()``)
is ended by the core with ``KillWorker`` like any other, but its process is
asked to exit (``EXIT``: it runs its ``atexit`` handlers) rather than killed.

Reference counts: every client reports its ref handle changes (batched);
the raylet keeps per-client counts so a dead client's handles are dropped,
and converts changes to the core's ``RefsAdded``/``RefsRemoved`` by owner.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import logging
import os
import queue
import select
import selectors
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from typing import Any

from detray import controlplane
from detray.core import commands as C
from detray.core import events as E
from detray.core import ids
from detray.core.directory import ObjectStatus
from detray.core.errors import ErrorKind, Failure, failure
from detray.core.ids import ActorID, NodeID, ObjectID, TaskID, WorkerID
from detray.core.resources import as_floats
from detray.core.router import Router
from detray.core.specs import ActorSpec, TaskKind, TaskSpec
from detray.real import protocol as P
from detray.real.channel import Channel, ChannelClosed, ChannelError, ChannelListener
from detray.real.object_store import ObjectStore
from detray.real.processes import ChildContext, ChildProcess, spawn_python_child
from detray.real.zygote import ForkedProcess, Zygote

logger = logging.getLogger("detray.raylet")

WORKER_TARGET = "detray.real.worker:main"
WARM_WORKERS_MAX = 4
"""Warm (spawned, unassigned) worker processes kept ready, at most."""
TASK_RECORD_LAG_S = 0.5
"""Task records reach Redis at most this late (write-behind)."""
STOP_GRACE_S = 2.0
NODE_STATS_INTERVAL_S = 1.0
"""How often the raylet looks whether its published counts changed (`detray status` reads them)."""
NODE_STATS_REFRESH_S = 10.0
NODE_STATS_TTL_S = 30.0
DEBUG = bool(os.environ.get("DETRAY_RAYLET_DEBUG"))


_ZYGOTE = object()
"""Selector key data of the zygote's reply pipe."""


class Client:
    """One connected process (the driver or a worker)."""

    __slots__ = ("channel", "kind", "pid", "number", "refs", "actors", "worker", "blocking", "out")

    def __init__(self, channel: Channel, number: int) -> None:
        self.channel = channel
        self.kind = "?"
        self.pid = 0
        self.number = number
        self.refs: dict[ObjectID, int] = {}
        self.actors: dict[ActorID, int] = {}
        self.worker: WorkerProc | None = None
        self.blocking = 0
        self.out: list[P.Message] = []


class WorkerProc:
    """A worker process: warm (no id yet) or bound to a core worker id."""

    __slots__ = ("process", "client", "worker", "runs", "actor", "gpu_ids", "dead", "exiting")

    def __init__(self, process: ChildProcess | ForkedProcess) -> None:
        self.process = process
        self.client: Client | None = None
        self.worker: WorkerID | None = None
        self.runs: dict[TaskID, int] = {}
        self.actor: ActorID | None = None
        self.gpu_ids: tuple[int, ...] = ()
        self.dead = False
        self.exiting = False
        """Its actor called ``exit_actor()``: a ``KillWorker`` lets it exit by itself."""


class Waiter:
    __slots__ = ("client", "req", "kind", "objects", "blocking")

    def __init__(self, client: Client, req: int, kind: str, objects: tuple[ObjectID, ...], blocking: bool) -> None:
        self.client = client
        self.req = req
        self.kind = kind
        self.objects = objects
        self.blocking = blocking


class Value:
    """A stored object as the raylet knows it: wire form (inline bytes or "in the store")."""

    __slots__ = ("wire", "refs", "actors", "in_store")

    def __init__(self, wire: P.Wire, refs: tuple[ObjectID, ...], actors: tuple[ActorID, ...], in_store: bool) -> None:
        self.wire = wire
        self.refs = refs
        self.actors = actors
        self.in_store = in_store


class Payload:
    __slots__ = ("data", "refs", "actors", "children")

    def __init__(self, data: bytes, refs: tuple[ObjectID, ...], actors: tuple[ActorID, ...]) -> None:
        self.data = data
        self.refs = refs
        self.actors = actors
        self.children: list[TaskID] | None = None


class Raylet:
    """One node's raylet (see the module docstring)."""

    def __init__(self, config: dict[str, Any], token: bytes, zygote: Zygote | None = None) -> None:
        self.config = config
        self.token = token
        self.t0 = time.monotonic()
        self.node = NodeID(config["node_id"])
        self.job = config["job"]
        self.namespace = config["namespace"]
        self.env_vars: dict[str, str] = dict(config.get("env_vars") or {})
        self.resources: dict[str, int] = {k: int(v) for k, v in config["resources"].items()}
        self.router = Router()
        self.store = ObjectStore(
            int(config["object_store_bytes"]),
            name=config["store_name"],
            backend=config.get("store_backend", "auto"),
        )
        self.listener = ChannelListener(token, socket_dir_parent=config.get("socket_dir_parent"))
        self.zygote: Zygote | None = zygote
        if zygote is not None:
            zygote.configure(self._worker_payload())
        self.plane = controlplane.connect(
            config["redis_host"], int(config["redis_port"]), password=config["redis_password"], cluster_id=config["cluster_id"]
        )
        self.task_records = controlplane.TaskRecordWriter(self.plane, max_lag_s=TASK_RECORD_LAG_S)
        self.clients: dict[Channel, Client] = {}
        self.driver: Client | None = None
        self.workers: dict[WorkerID, WorkerProc] = {}
        self.warm: list[WorkerProc] = []
        self.spawning: list[WorkerProc] = []
        self.want_workers: deque[WorkerID] = deque()
        self.values: dict[ObjectID, Value] = {}
        self.owner_of: dict[ObjectID, WorkerID] = {}
        self.payloads: dict[TaskID, Payload] = {}
        self.waiters: dict[str, Waiter] = {}
        self.timers: list[tuple[float, int, str]] = []
        self.timer_seq = 0
        self.actor_specs: dict[ActorID, ActorSpec] = {}
        self.actor_meta: dict[ActorID, Any] = {}
        self.actor_handles: dict[ActorID, int] = {}
        self.calls_open: dict[ActorID, int] = {}
        self.out_of_scope: dict[ActorID, None] = {}
        self.init_errors: dict[ActorID, P.Wire] = {}
        self.warned: set[tuple[str, str]] = set()
        self.sid_counter = 0
        self.stats_checked_at = -NODE_STATS_INTERVAL_S
        self.stats_written_at = -NODE_STATS_REFRESH_S
        self.stats_last: dict[str, str | int | float] = {}
        self.client_counter = 0
        self.events: deque[E.Event] = deque()
        self.feeding = False
        self.stopping = False
        self.new_channels: queue.Queue[Channel] = queue.Queue()
        self.selector = selectors.DefaultSelector()
        self.dirty: dict[Client, None] = {}
        self.deletions: list[ObjectID] = []
        """Store objects freed this round, deleted after the round's replies went out."""
        """Clients with replies waiting to be sent at the end of this round."""
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        self.handlers: dict[str, Callable[[Client, P.Message], None]] = {
            P.HELLO: self.on_hello,
            P.SUBMIT: self.on_submit,
            P.ACTOR: self.on_actor,
            P.PUT: self.on_put,
            P.REQUEST: self.on_request,
            P.UNREQUEST: self.on_unrequest,
            P.REFS: self.on_refs,
            P.KILL: self.on_kill,
            P.CANCEL: self.on_cancel,
            P.LOOKUP: self.on_lookup,
            P.INFO: self.on_info,
            P.DONE: self.on_done,
            P.EXITING: self.on_exiting,
            P.PRINT: self.on_print,
            P.LOST: self.on_lost,
            P.SHUTDOWN: self.on_shutdown,
        }
        self.executors: dict[type, Callable[[Any], None]] = {
            C.StartWorker: self.start_worker,
            C.StartTask: self.start_task,
            C.InterruptTask: self.interrupt_task,
            C.KillWorker: self.kill_worker,
            C.DeleteCopy: self.delete_copy,
            C.SpillObject: self.spill_object,
            C.RestoreObject: self.restore_object,
            C.WakeWaiter: self.wake_waiter,
            C.Warn: self.warn,
            C.SetTimer: self.set_timer,
            C.ReportActorDead: self.report_actor_dead,
            C.ForwardTask: self.single_node_only,
            C.PullObject: self.single_node_only,
        }

    # --- time, ids ------------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def sid(self, prefix: str) -> str:
        self.sid_counter += 1
        return f"{prefix}-{self.sid_counter}"

    # --- start, serve, stop -----------------------------------------------------------------------

    def start(self) -> None:
        cpus = self.resources.get("CPU", 0) // 10_000 if self.resources.get("CPU") else 0
        self.feed(
            E.NodeJoined(
                now=self.now(),
                stimulus_id="join",
                node=self.node,
                incarnation=1,
                resources=self.resources,
                object_store_bytes=self.store.capacity_bytes,
                spill_enabled=True,
            )
        )
        self.plane.put_node(
            controlplane.NodeRecord(
                node_id=self.node,
                incarnation=1,
                resources=as_floats(self.resources),
                state="ALIVE",
                address=str(self.listener.address),
            )
        )
        threading.Thread(target=self._accept_loop, name="detray-raylet-accept", daemon=True).start()
        for _ in range(min(WARM_WORKERS_MAX, max(1, int(cpus)))):
            self._spawn_worker()
        if self.zygote is not None:
            self.selector.register(self.zygote.reply_fd(), selectors.EVENT_READ, _ZYGOTE)

    def _accept_loop(self) -> None:
        while not self.listener.closed:
            try:
                channel = self.listener.accept()
            except ChannelError:
                return
            self.new_channels.put(channel)
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                return

    def serve(self) -> None:
        selector = self.selector
        selector.register(self.wake_r, selectors.EVENT_READ, None)
        while not self.stopping:
            timeout = None
            if self.timers:
                timeout = max(0.0, self.timers[0][0] - self.now())
            if self.task_records.pending:
                timeout = TASK_RECORD_LAG_S if timeout is None else min(timeout, TASK_RECORD_LAG_S)
            timeout = NODE_STATS_INTERVAL_S if timeout is None else min(timeout, NODE_STATS_INTERVAL_S)
            for key, _ in selector.select(timeout):
                client = key.data
                if client is None:
                    self._take_new_channels()
                elif client is _ZYGOTE:
                    self._zygote_output()
                else:
                    self._read(client)
                if self.stopping:
                    break  # type: ignore[unreachable]  # a handler may set it
            if self.timers:
                self._fire_timers()
            if self.spawning or (self.zygote is not None and self.zygote.pending):
                self._reap_spawning()
            if self.dirty:
                self._flush()
            if self.deletions:
                self._delete_files()
            if self.task_records.pending:
                try:
                    self.task_records.maybe_flush(self.now())
                except controlplane.ControlPlaneUnavailable:
                    logger.warning("the control plane is unavailable: task records are kept for the next flush")
            self._publish_stats()

    def _take_new_channels(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        while True:
            try:
                channel = self.new_channels.get_nowait()
            except queue.Empty:
                return
            self.client_counter += 1
            client = Client(channel, self.client_counter)
            self.clients[channel] = client
            self.selector.register(channel, selectors.EVENT_READ, client)

    def _read(self, client: Client | None) -> None:
        if client is None:
            return
        channel = client.channel
        while True:
            try:
                batch = channel.recv_obj()
            except (ChannelClosed, EOFError, OSError, ChannelError):
                self.client_gone(client)
                return
            owner_of = self.owner_of
            for message in batch:  # owners of objects this batch creates, before its ref counts
                tag = message[0]
                if tag == P.SUBMIT:
                    for obj in message[1].return_ids:
                        owner_of[obj] = message[1].owner
                elif tag == P.PUT:
                    owner_of[message[1]] = message[2]
            for message in batch:
                try:
                    self.handlers[message[0]](client, message)
                except controlplane.ControlPlaneUnavailable as exc:
                    self._plane_failed(client, message, exc)
            if self.stopping:
                return
            try:  # more batches already waiting? (a plain select: Channel.poll builds a selector per call)
                if not select.select((channel.fileno(),), (), (), 0)[0]:
                    return
            except (OSError, ValueError, ChannelError):
                self.client_gone(client)
                return

    def _plane_failed(self, client: Client, message: P.Message, exc: Exception) -> None:
        """A request that needed Redis while it is down: answered with the error, never dropped."""
        logger.warning("%s failed: %s", message[0], exc)
        req = message[1] if message[0] in (P.LOOKUP, P.ACTOR, P.INFO) else None
        if req is not None:
            self.send(client, (P.REPLY, req, ("unavailable", str(exc), None)))

    def _flush(self) -> None:
        dirty, self.dirty = self.dirty, {}
        for client in dirty:
            if client.out:
                batch, client.out = client.out, []
                try:
                    client.channel.send_obj(batch)
                except (ChannelError, OSError):
                    self.client_gone(client)

    def send(self, client: Client, message: P.Message) -> None:
        client.out.append(message)
        self.dirty[client] = None

    def stop(self) -> None:
        self.stopping = True
        for client in list(self.clients.values()):
            try:
                if client.kind == "worker":
                    client.channel.send_obj([(P.EXIT,)])
            except (ChannelError, OSError):
                pass
        for proc in self.spawning:
            proc.process.stop(0.5)  # not connected yet: nothing to finish
        if self.zygote is not None:
            self.zygote.stop()  # forks not connected yet die with it
        deadline = time.monotonic() + STOP_GRACE_S
        processes = [w.process for w in [*self.workers.values(), *self.warm]]
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except Exception:  # noqa: BLE001 -- a stuck worker is stopped below
                pass
            process.stop(0.5)
        self.listener.close()
        for client in self.clients.values():
            client.channel.close()
        try:
            self.plane.put_node(
                controlplane.NodeRecord(node_id=self.node, incarnation=1, resources={}, state="DEAD")
            )
            controlplane.put_node_stats(self.plane, self.node, {}, ttl_s=NODE_STATS_TTL_S)  # deletes the hash
            self.task_records.flush()
        except Exception:  # noqa: BLE001 -- the control plane may already be gone
            pass
        self.store.close()
        os.close(self.wake_r)
        os.close(self.wake_w)

    # --- feeding the core -----------------------------------------------------------------------

    def feed(self, event: E.Event) -> None:
        self.events.append(event)
        if self.feeding:
            return
        self.feeding = True
        try:
            events = self.events
            handle = self.router.handle
            executors = self.executors
            while events:
                event = events.popleft()
                if DEBUG:
                    logger.warning("event %s", event)
                for command in handle(event):
                    if DEBUG:
                        logger.warning("  -> %s", command)
                    executors[type(command)](command)
        finally:
            self.feeding = False

    # --- clients ----------------------------------------------------------------------------------

    def on_hello(self, client: Client, m: P.Message) -> None:
        _, req, kind, pid = m
        client.kind = kind
        client.pid = pid
        if kind == "driver":
            self.driver = client
            self.send(client, (P.REPLY, req, {"node_id": self.node, "store": self.store.location}))
            return
        found = next((proc for proc in self.spawning if proc.process.pid == pid), None)
        if found is not None:
            self.spawning.remove(found)
        elif self.zygote is not None:
            forked = self.zygote.take(pid)
            if forked is not None:
                found = WorkerProc(forked)
        if found is None:
            self.client_gone(client)  # a worker this raylet did not ask for
            return
        found.client = client
        client.worker = found
        if self.want_workers:
            self._assign(found, self.want_workers.popleft())
        else:
            self.warm.append(found)

    def client_gone(self, client: Client) -> None:
        if self.clients.pop(client.channel, None) is None:
            return
        try:
            self.selector.unregister(client.channel)
        except (KeyError, ValueError):
            pass
        client.channel.close()
        now = self.now()
        if client is self.driver:
            self.stopping = True
            return
        proc = client.worker
        if proc is not None:
            proc.dead = True
            if proc in self.warm:
                self.warm.remove(proc)
            if proc.worker is not None:
                self.workers.pop(proc.worker, None)
                self.feed(E.WorkerDied(now=now, stimulus_id=self.sid("died"), worker=proc.worker, node=self.node))
            proc.process.stop(0.5)
        for key in [k for k, w in self.waiters.items() if w.client is client]:
            self.waiters.pop(key)
            self.feed(E.WaiterCancelled(now=now, stimulus_id=key, waiter=key))
        if client.refs:
            self._ref_events(list(client.refs.items()), E.RefsRemoved)
        for actor, count in client.actors.items():
            self._actor_handles(actor, -count)

    # --- tasks ------------------------------------------------------------------------------------

    def on_submit(self, client: Client, m: P.Message) -> None:
        _, spec, data, held_refs, held_actors, parent, inherit_retries = m
        if inherit_retries and spec.actor_id is not None:
            actor_spec = self.actor_specs.get(spec.actor_id)
            if actor_spec is not None:
                spec = dataclasses.replace(spec, max_retries=actor_spec.max_task_retries)
        task = spec.task_id
        for obj in spec.return_ids:
            self.owner_of[obj] = spec.owner
        self._add_payload(task, data, held_refs, held_actors, parent)
        if spec.kind is TaskKind.ACTOR_TASK and spec.actor_id is not None:
            self.calls_open[spec.actor_id] = self.calls_open.get(spec.actor_id, 0) + 1
        self.task_records.record(task, {"name": spec.name, "state": "SUBMITTED", "owner": spec.owner}, self.now())
        self.feed(E.TaskSubmitted(now=self.now(), stimulus_id=task, spec=spec, node=self.node))

    def _add_payload(
        self, task: TaskID, data: bytes, refs: tuple[ObjectID, ...], actors: tuple[ActorID, ...], parent: TaskID | None
    ) -> None:
        self.payloads[task] = Payload(data, refs, actors)
        if refs:
            self._hold(refs, E.RefsAdded)
        for actor in actors:
            self.actor_handles[actor] = self.actor_handles.get(actor, 0) + 1
        if parent is not None:
            parent_payload = self.payloads.get(parent)
            if parent_payload is not None:
                if parent_payload.children is None:
                    parent_payload.children = []
                parent_payload.children.append(task)

    def on_actor(self, client: Client, m: P.Message) -> None:
        _, req, spec, data, meta, held_refs, held_actors, get_if_exists, parent = m
        actor = spec.actor_id
        if spec.name is not None:
            holder = self._claim_name(spec.namespace, spec.name, actor)
            if holder is not None:
                if get_if_exists:
                    self.send(client, (P.REPLY, req, ("exists", holder, self.actor_meta.get(ActorID(holder)))))
                else:
                    self.send(client, (P.REPLY, req, ("taken", holder, None)))
                return
        if req is not None:
            self.send(client, (P.REPLY, req, ("created", actor, None)))
        self.actor_specs[actor] = spec
        self.actor_meta[actor] = meta
        creation = spec.creation.task_id
        self.task_records.record(
            creation, {"name": spec.creation.name, "state": "SUBMITTED", "owner": spec.creation.owner}, self.now()
        )
        self._add_payload(creation, data, held_refs, held_actors, parent)
        self._actor_record(actor, "PENDING_CREATION", None, 0)
        self.feed(E.ActorCreated(now=self.now(), stimulus_id=creation, spec=spec, node=self.node))

    def _claim_name(self, namespace: str, name: str, actor: ActorID) -> str | None:
        """``None`` when ``name`` is now ``actor``'s, else the live holder's id."""
        plane = self.plane
        if plane.claim_actor_name(namespace, name, actor):
            return None
        holder = plane.lookup_actor_name(namespace, name)
        if holder is not None and self._actor_alive(ActorID(holder)):
            return holder
        if holder is not None:
            plane.release_actor_name(namespace, name, holder)
        if plane.claim_actor_name(namespace, name, actor):
            return None
        return plane.lookup_actor_name(namespace, name) or "?"

    def _actor_alive(self, actor: ActorID) -> bool:
        state = self.router.actors.state(actor)
        return state is not None and state.name != "DEAD"

    def on_lookup(self, client: Client, m: P.Message) -> None:
        _, req, name, namespace = m
        holder = self.plane.lookup_actor_name(namespace, name)
        if holder is None or not self._actor_alive(ActorID(holder)):
            self.send(client, (P.REPLY, req, None))
        else:
            self.send(client, (P.REPLY, req, (holder, self.actor_meta.get(ActorID(holder)))))

    def on_kill(self, client: Client, m: P.Message) -> None:
        _, actor, no_restart = m
        self.feed(E.ActorKillRequested(now=self.now(), stimulus_id=self.sid("kill"), actor=actor, no_restart=no_restart))

    def on_cancel(self, client: Client, m: P.Message) -> None:
        _, task, force, recursive = m
        targets = [task]
        seen = {task}
        index = 0
        while recursive and index < len(targets):
            payload = self.payloads.get(targets[index])
            index += 1
            for child in (payload.children or ()) if payload is not None else ():
                if child not in seen:
                    seen.add(child)
                    targets.append(child)
        for target in targets:
            self.feed(
                E.CancelRequested(now=self.now(), stimulus_id=self.sid("cancel"), task=target, force=force, recursive=recursive)
            )

    def start_worker(self, command: C.StartWorker) -> None:
        if self.warm:
            self._assign(self.warm.pop(0), command.worker)
        else:
            self.want_workers.append(command.worker)
            if self._starting() < len(self.want_workers):
                self._spawn_worker()
        if len(self.warm) + self._starting() - len(self.want_workers) < 1 and not self.stopping:
            self._spawn_worker()  # keep one warm process ready for the next request

    def _starting(self) -> int:
        """Worker processes asked for that have not said hello yet."""
        return len(self.spawning) + (self.zygote.pending if self.zygote is not None else 0)

    def _spawn_worker(self) -> None:
        if self.zygote is not None and self.zygote.alive and self.zygote.request_fork():
            return
        process = spawn_python_child(
            WORKER_TARGET,
            token=self.token,
            payload=self._worker_payload(),
            name="detray-worker",
            cwd=self.config["cwd"],
            sys_path=self.config["sys_path"],
        )
        self.spawning.append(WorkerProc(process))

    def _worker_payload(self) -> dict[str, Any]:
        return {
            "raylet": str(self.listener.address),
            "store": {
                "name": self.store.location.name,
                "memory_dir": self.store.location.memory_dir,
                "spill_dir": self.store.location.spill_dir,
                "backend": self.store.location.backend,
            },
            "redis": {
                "host": self.config["redis_host"],
                "port": self.config["redis_port"],
                "password": self.config["redis_password"],
                "cluster_id": self.config["cluster_id"],
            },
            "node_id": self.node,
            "job": self.job,
            "namespace": self.namespace,
        }

    def _zygote_output(self) -> None:
        assert self.zygote is not None
        self.zygote.drain()
        if not self.zygote.alive:
            self._reap_spawning()

    def _reap_spawning(self) -> None:
        for proc in list(self.spawning):
            if not proc.process.running:
                self.spawning.remove(proc)
                logger.error("a worker process exited before connecting (exit code %s)", proc.process.returncode)
                if self.want_workers and not self.stopping:
                    self._spawn_worker()
        zygote = self.zygote
        if zygote is not None and zygote.pending and not zygote.alive:
            logger.error("the worker zygote exited; starting workers from scratch")
            try:
                self.selector.unregister(zygote.reply_fd())
            except (KeyError, ValueError, OSError):
                pass
            lost, zygote.pending = zygote.pending, 0
            self.zygote = None
            for _ in range(lost):
                if not self.stopping:
                    self._spawn_worker()

    def _assign(self, proc: WorkerProc, worker: WorkerID) -> None:
        proc.worker = worker
        self.workers[worker] = proc
        assert proc.client is not None
        self.send(proc.client, (P.ASSIGN, worker, self.node, self.env_vars, self.job))
        self.feed(E.WorkerStarted(now=self.now(), stimulus_id=self.sid("started"), worker=worker, node=self.node))

    def start_task(self, command: C.StartTask) -> None:
        proc = self.workers.get(command.worker)
        spec = command.spec
        task = spec.task_id
        if proc is None or proc.dead or proc.client is None:
            return
        payload = self.payloads.get(task)
        if payload is None:
            raise AssertionError(f"no payload for task {task} ({spec.name}) at StartTask")
        args = {obj: self.wire_of(obj) for obj in spec.args}
        meta = None
        if spec.kind is TaskKind.ACTOR_CREATION and spec.actor_id is not None:
            actor_spec = self.actor_specs[spec.actor_id]
            # The actor's name goes with every creation (restarts too): its code reads it
            # (``get_runtime_context().get_actor_name()``) for the actor's whole life.
            meta = (self.actor_meta.get(spec.actor_id), actor_spec.max_concurrency, actor_spec.name)
            proc.actor = spec.actor_id
            proc.gpu_ids = command.gpu_ids
            if command.attempt > 1:
                self._actor_record(spec.actor_id, "RESTARTING", proc.worker, command.attempt - 1)
        gpu_ids = proc.gpu_ids if spec.kind is TaskKind.ACTOR_TASK else command.gpu_ids
        proc.runs[task] = command.attempt
        self.send(proc.client, (P.RUN, spec, command.attempt, payload.data, gpu_ids, args, meta))
        now = self.now()
        self.feed(
            E.TaskStarted(now=now, stimulus_id=task, task=task, attempt=command.attempt, node=self.node, worker=command.worker)
        )

    def wire_of(self, obj: ObjectID) -> P.Wire:
        value = self.values.get(obj)
        if value is not None:
            return value.wire
        known = self.router.directory.failure(obj)
        if known is not None:
            return self._failure_wire(known)
        return ("f", failure(ErrorKind.OBJECT_LOST, f"object {obj} has no value on node {self.node}", obj=obj), None)

    def _failure_wire(self, failure: Failure) -> P.Wire:
        cause = None
        if failure.kind is ErrorKind.ACTOR_DIED:
            actor = failure.detail("actor")
            if actor:
                cause = self.init_errors.get(ActorID(actor))
        return ("f", failure, cause)

    def on_done(self, client: Client, m: P.Message) -> None:
        _, task, attempt, results, error_types, cancelled, init_error = m
        proc = client.worker
        if proc is None or proc.worker is None or proc.runs.get(task) != attempt:
            return
        del proc.runs[task]
        now = self.now()
        sizes = self._store_results(results)
        spec_actor = proc.actor
        if error_types is None:
            self.task_records.record(task, {"state": "FINISHED", "worker": proc.worker, "attempt": attempt}, now)
            self.feed(
                E.TaskFinished(
                    now=now, stimulus_id=task, task=task, attempt=attempt, node=self.node, worker=proc.worker, return_sizes=sizes
                )
            )
        else:
            if init_error is not None and spec_actor is not None:
                self.init_errors[spec_actor] = init_error
            self.task_records.record(
                task, {"state": "FAILED", "worker": proc.worker, "attempt": attempt, "error": error_types[0]}, now
            )
            self.feed(
                E.TaskFailed(
                    now=now,
                    stimulus_id=task,
                    task=task,
                    attempt=attempt,
                    node=self.node,
                    worker=proc.worker,
                    error_types=tuple(error_types),
                    cancelled=cancelled,
                    return_sizes=sizes,
                )
            )
        if spec_actor is not None and task == ids.actor_creation_task(spec_actor):
            if error_types is None:
                self._actor_record(spec_actor, "ALIVE", proc.worker, attempt - 1)
            return
        if spec_actor is not None:
            self._call_closed(spec_actor, task)
        else:
            self.maybe_drop_payload(task)

    def on_exiting(self, client: Client, m: P.Message) -> None:
        """An actor call called ``exit_actor()``: the core fails it and ends the actor."""
        _, task, attempt = m
        proc = client.worker
        if proc is None or proc.worker is None or proc.actor is None or proc.runs.get(task) != attempt:
            return
        del proc.runs[task]
        proc.exiting = True
        actor = proc.actor
        now = self.now()
        self.task_records.record(
            task, {"state": "FAILED", "worker": proc.worker, "attempt": attempt, "error": "exit_actor"}, now
        )
        self.feed(
            E.ActorKillRequested(
                now=now, stimulus_id=task, actor=actor, exit_call=task, exit_attempt=attempt, worker=proc.worker
            )
        )
        self._call_closed(actor, task)

    def _store_results(self, results: list[tuple[Any, ...]]) -> tuple[tuple[ObjectID, int], ...]:
        sizes = []
        for obj, wire, size, refs, actors in results:
            in_store = wire[0] == "s"
            if in_store:
                try:
                    self.store.adopt(obj)
                except Exception:  # noqa: BLE001 -- a duplicate (retried task): the first copy stays
                    pass
            previous = self.values.get(obj)
            if previous is not None:
                self._release_value(previous)
            self.values[obj] = Value(wire, tuple(refs), tuple(actors), in_store)
            if refs:
                self._hold(refs, E.RefsAdded)
            for actor in actors:
                self.actor_handles[actor] = self.actor_handles.get(actor, 0) + 1
            sizes.append((obj, size))
        return tuple(sizes)

    def _call_closed(self, actor: ActorID, task: TaskID) -> None:
        state = self.router.tasks.state(task)
        if state is not None and state.name not in ("FINISHED", "FAILED", "CANCELLED"):
            return  # retried
        self.payloads.pop(task, None)
        left = self.calls_open.get(actor, 0) - 1
        if left > 0:
            self.calls_open[actor] = left
            return
        self.calls_open.pop(actor, None)
        if actor in self.out_of_scope:
            self._maybe_terminate(actor)

    def maybe_drop_payload(self, task: TaskID) -> None:
        if task in self.payloads and not self.router.tasks.has_lineage(task):
            state = self.router.tasks.state(task)
            if state is None or state.name in ("FINISHED", "FAILED", "CANCELLED"):
                self.drop_payload(task)

    def drop_payload(self, task: TaskID) -> None:
        payload = self.payloads.pop(task, None)
        if payload is None:
            return
        if payload.refs:
            self._hold(payload.refs, E.RefsRemoved)
        for actor in payload.actors:
            self._actor_handles(actor, -1)

    def interrupt_task(self, command: C.InterruptTask) -> None:
        proc = self.workers.get(command.worker)
        if proc is None or proc.runs.get(command.task) != command.attempt or proc.client is None:
            return
        if command.force:
            self._kill_process(proc)
        else:
            self.send(proc.client, (P.INTERRUPT, command.task, command.attempt))

    def kill_worker(self, command: C.KillWorker) -> None:
        proc = self.workers.get(command.worker)
        if proc is None:
            return
        if proc.exiting and proc.client is not None and not proc.runs:
            # An intentional exit: the process exits by itself (atexit handlers run); its
            # channel closing then reports the worker's death (``client_gone``).
            self.send(proc.client, (P.EXIT,))
            return
        self._kill_process(proc)

    def _kill_process(self, proc: WorkerProc) -> None:
        try:
            os.kill(proc.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.client is not None:
            self.client_gone(proc.client)

    # --- objects ----------------------------------------------------------------------------------

    def on_put(self, client: Client, m: P.Message) -> None:
        _, obj, owner, wire, size, refs, actors = m
        in_store = wire[0] == "s"
        if in_store:
            try:
                self.store.adopt(obj)
            except Exception as exc:  # noqa: BLE001 -- reported to the putter's next get
                logger.error("adopting put object %s failed: %s", obj, exc)
        self.owner_of[obj] = owner
        self.values[obj] = Value(wire, tuple(refs), tuple(actors), in_store)
        if refs:
            self._hold(refs, E.RefsAdded)
        for actor in actors:
            self.actor_handles[actor] = self.actor_handles.get(actor, 0) + 1
        self.feed(E.ObjectPut(now=self.now(), stimulus_id=obj, obj=obj, node=self.node, size_bytes=size, owner=owner))

    def on_request(self, client: Client, m: P.Message) -> None:
        _, req, kind, objects, num_required, fetch = m
        waiter = f"{kind}:{client.number}:{req}"
        blocking = kind == "get" and client.worker is not None and client.worker.worker is not None
        self.waiters[waiter] = Waiter(client, req, kind, objects, blocking)
        self.feed(
            E.ObjectsRequested(
                now=self.now(), stimulus_id=waiter, waiter=waiter, node=self.node, objects=objects, num_required=num_required, fetch=fetch
            )
        )
        if waiter in self.waiters and blocking:
            self._blocked(client, +1)

    def _blocked(self, client: Client, delta: int) -> None:
        proc = client.worker
        if proc is None or proc.worker is None or proc.dead:
            return
        before = client.blocking
        client.blocking += delta
        if before == 0 and client.blocking > 0 and proc.runs:
            self.feed(E.WorkerBlocked(now=self.now(), stimulus_id=self.sid("blocked"), worker=proc.worker, node=self.node))
        elif before > 0 and client.blocking == 0 and proc.runs:
            self.feed(E.WorkerUnblocked(now=self.now(), stimulus_id=self.sid("unblocked"), worker=proc.worker, node=self.node))

    def on_unrequest(self, client: Client, m: P.Message) -> None:
        _, req, kind = m
        key = f"{kind}:{client.number}:{req}"
        waiter = self.waiters.pop(key, None)
        if waiter is None:
            return  # answered already: the client takes that answer
        self.feed(E.WaiterCancelled(now=self.now(), stimulus_id=key, waiter=key))
        if waiter.blocking:
            self._blocked(client, -1)
        if kind == "wait":
            directory = self.router.directory
            ready = [
                obj
                for obj in waiter.objects
                if directory.status(obj) in (ObjectStatus.AVAILABLE, ObjectStatus.FAILED)
            ]
            self.send(client, (P.REPLY, req, ("timeout", ready)))
        else:
            self.send(client, (P.REPLY, req, ("timeout", None)))

    def wake_waiter(self, command: C.WakeWaiter) -> None:
        waiter = self.waiters.pop(command.waiter, None)
        if waiter is None:
            return
        client = waiter.client
        if waiter.blocking:
            self._blocked(client, -1)
        if waiter.kind == "wait":
            ready = list(command.ready) + [obj for obj, _ in command.failed]
            self.send(client, (P.REPLY, waiter.req, ("ready", ready)))
            return
        failed = dict(command.failed)
        values = {}
        for obj in waiter.objects:
            cause = failed.get(obj)
            values[obj] = self._failure_wire(cause) if cause is not None else self.wire_of(obj)
        self.send(client, (P.REPLY, waiter.req, ("values", values)))

    def delete_copy(self, command: C.DeleteCopy) -> None:
        obj = command.obj
        value = self.values.pop(obj, None)
        if value is not None:
            self._release_value(value)
            if value.in_store:
                # Unlinking a large file returns its pages to the kernel (~10 ms per 100 MB):
                # done after this round's replies are sent, so no get waits behind it.
                self.deletions.append(obj)
        status = self.router.directory.status(obj)
        if status is None or status is ObjectStatus.FREED:
            self.owner_of.pop(obj, None)
        if command.reason == "freed" and not ids.is_put(obj):
            self.maybe_drop_payload(ids.creating_task(obj))

    def _delete_files(self) -> None:
        deletions, self.deletions = self.deletions, []
        for obj in deletions:
            if obj in self.values:
                continue  # created again meanwhile (a rebuild): its file is the new copy
            try:
                self.store.delete(obj)
            except Exception:  # noqa: BLE001 -- already gone
                pass

    def _release_value(self, value: Value) -> None:
        if value.refs:
            self._hold(value.refs, E.RefsRemoved)
        for actor in value.actors:
            self._actor_handles(actor, -1)

    def on_lost(self, client: Client, m: P.Message) -> None:
        """A client found store files missing: forget those copies; the core rebuilds or fails."""
        gone = []
        location = self.store.location
        for obj in m[1]:
            value = self.values.get(obj)
            if value is None or not value.in_store:
                continue
            if os.path.exists(location.memory_path(obj)) or os.path.exists(location.spill_path(obj)):
                continue
            del self.values[obj]
            self._release_value(value)
            try:
                self.store.delete(obj)
            except Exception:  # noqa: BLE001 -- its file is gone already; only the index entry goes
                pass
            gone.append(obj)
        if gone:
            self.feed(E.CopiesEvicted(now=self.now(), stimulus_id=self.sid("lost"), node=self.node, objects=tuple(gone)))

    def spill_object(self, command: C.SpillObject) -> None:
        value = self.values.get(command.obj)
        if value is not None and value.in_store:
            try:
                self.store.spill(command.obj)
            except Exception as exc:  # noqa: BLE001 -- e.g. out of disk: the object stays in memory
                logger.warning("spilling %s failed: %s", command.obj, exc)

    def restore_object(self, command: C.RestoreObject) -> None:
        value = self.values.get(command.obj)
        if value is not None and value.in_store:
            try:
                self.store.restore(command.obj)
            except Exception as exc:  # noqa: BLE001 -- clients read a spilled copy from disk
                logger.warning("restoring %s failed: %s", command.obj, exc)
        self.feed(E.ObjectRestored(now=self.now(), stimulus_id=self.sid("restored"), obj=command.obj, node=self.node))

    # --- references -------------------------------------------------------------------------------

    def on_refs(self, client: Client, m: P.Message) -> None:
        _, added, removed, actors_added, actors_removed, escaped = m
        counts = client.refs
        if added:
            for obj in added:
                counts[obj] = counts.get(obj, 0) + 1
            self._hold(added, E.RefsAdded)
        if escaped:
            self._hold(escaped, E.RefsAdded)  # pinned: never removed
        if removed:
            for obj in removed:
                left = counts.get(obj, 0) - 1
                if left > 0:
                    counts[obj] = left
                else:
                    counts.pop(obj, None)
            self._hold(removed, E.RefsRemoved)
        for actor in actors_added:
            client.actors[actor] = client.actors.get(actor, 0) + 1
            self._actor_handles(actor, +1)
        for actor in actors_removed:
            left = client.actors.get(actor, 0) - 1
            if left > 0:
                client.actors[actor] = left
            else:
                client.actors.pop(actor, None)
            self._actor_handles(actor, -1)

    def _hold(self, objects: Any, cls: type[E.RefsAdded] | type[E.RefsRemoved]) -> None:
        owner_of = self.owner_of
        by_owner: dict[WorkerID, list[ObjectID]] = {}
        for obj in objects:
            owner = owner_of.get(obj)
            if owner is not None:
                by_owner.setdefault(owner, []).append(obj)
        now = self.now()
        for owner, objs in by_owner.items():
            self.feed(cls(now=now, stimulus_id="refs", owner=owner, objects=tuple(objs)))

    def _ref_events(self, counted: list[tuple[ObjectID, int]], cls: type[E.RefsRemoved]) -> None:
        objects = [obj for obj, count in counted for _ in range(count)]
        self._hold(objects, cls)

    def _actor_handles(self, actor: ActorID, delta: int) -> None:
        count = self.actor_handles.get(actor, 0) + delta
        self.actor_handles[actor] = count
        if count <= 0:
            self.out_of_scope[actor] = None
            self._maybe_terminate(actor)

    def _maybe_terminate(self, actor: ActorID) -> None:
        """A non-detached actor with no handle and no call in flight exits (Ray's rule)."""
        if self.actor_handles.get(actor, 0) > 0:
            self.out_of_scope.pop(actor, None)
            return
        if self.calls_open.get(actor, 0) > 0:
            return
        self.out_of_scope.pop(actor, None)
        spec = self.actor_specs.get(actor)
        if spec is None or spec.detached or not self._actor_alive(actor):
            return
        self.actor_handles.pop(actor, None)
        self.feed(E.ActorKillRequested(now=self.now(), stimulus_id=self.sid("scope"), actor=actor, no_restart=True))

    # --- actors, timers, warnings, info ------------------------------------------------------------

    def report_actor_dead(self, command: C.ReportActorDead) -> None:
        actor = command.actor
        spec = self.actor_specs.get(actor)
        self._actor_record(actor, "DEAD", None, self.router.actors.restarts(actor))
        if spec is not None and spec.name is not None:
            try:
                self.plane.release_actor_name(spec.namespace, spec.name, actor)
            except controlplane.ControlPlaneUnavailable as exc:  # a claim later takes the stale name over
                logger.warning("releasing the name of dead actor %s failed: %s", actor, exc)
        self.drop_payload(ids.actor_creation_task(actor))
        self.out_of_scope.pop(actor, None)
        self.actor_specs.pop(actor, None)
        self.actor_meta.pop(actor, None)
        self.actor_handles.pop(actor, None)

    def _actor_record(self, actor: ActorID, state: str, worker: WorkerID | None, restarts: int) -> None:
        spec = self.actor_specs.get(actor)
        record = controlplane.ActorRecord(
            actor_id=actor,
            state=state,
            node=self.node if worker is not None else None,
            worker=worker,
            name=None if spec is None else spec.name,
            namespace="" if spec is None else spec.namespace,
            restarts=restarts,
        )
        try:
            self.plane.put_actor(record)
        except controlplane.ControlPlaneUnavailable:
            logger.warning("actor table write failed (control plane unavailable): %s %s", actor, state)

    def set_timer(self, command: C.SetTimer) -> None:
        self.timer_seq += 1
        heapq.heappush(self.timers, (command.at, self.timer_seq, command.timer))

    def _fire_timers(self) -> None:
        now = self.now()
        while self.timers and self.timers[0][0] <= now:
            _, _, timer = heapq.heappop(self.timers)
            self.feed(E.TimerFired(now=now, stimulus_id=self.sid("timer"), timer=timer))

    def warn(self, command: C.Warn) -> None:
        key = (command.code, command.subject)
        if key in self.warned:
            return
        self.warned.add(key)
        if self.driver is not None:
            self.send(self.driver, (P.PRINT, f"detray warning: {command.message}", "stderr"))

    def single_node_only(self, command: C.Command) -> None:
        raise AssertionError(f"{type(command).__name__} on a one-node cluster: {command}")

    def on_info(self, client: Client, m: P.Message) -> None:
        _, req, what = m
        scheduler = self.router.schedulers.get(self.node)
        if what == "stats":
            self.send(client, (P.REPLY, req, self.stats()))
            return
        if what == "cluster":
            data: Any = as_floats(scheduler.total()) if scheduler else {}
        elif what == "available":
            data = as_floats(scheduler.available()) if scheduler else {}
        else:
            data = [
                {
                    "NodeID": self.node,
                    "Alive": True,
                    "alive": True,
                    "NodeName": "127.0.0.1",
                    "NodeManagerAddress": "127.0.0.1",
                    "NodeManagerHostname": os.uname().nodename,
                    "Resources": as_floats(self.resources),
                    "ObjectStoreMemory": self.store.capacity_bytes,
                    "Incarnation": 1,
                    "Labels": {},
                }
            ]
        self.send(client, (P.REPLY, req, data))

    def stats(self) -> dict[str, int]:
        """Sizes of the raylet's tables and the store (tests use them to find leaks)."""
        store = self.store.stats()
        return {
            "clients": len(self.clients),
            "workers": len(self.workers),
            "workers_busy": sum(1 for proc in self.workers.values() if proc.runs),
            "workers_warm": len(self.warm),
            "values": len(self.values),
            "values_in_store": sum(1 for value in self.values.values() if value.in_store),
            "payloads": len(self.payloads),
            "owners_known": len(self.owner_of),
            "waiters": len(self.waiters),
            "actors": len(self.actor_specs),
            "store_objects": int(store.objects),
            "store_used_bytes": int(store.used_bytes),
            "store_spills": int(store.spills),
            "store_fallback_allocations": int(store.fallback_allocations),
        }

    def node_stats(self) -> dict[str, str | int | float]:
        """What ``detray status`` shows of this node (``controlplane.put_node_stats``)."""
        procs = [p for p in self.workers.values() if not p.dead]
        actor = sum(1 for p in procs if p.actor is not None)
        busy = sum(1 for p in procs if p.actor is None and p.runs)
        warm = len(self.warm) + self._starting()
        inline = [v.wire for v in self.values.values() if v.wire[0] == "i"]
        store = self.store.stats()
        scheduler = self.router.schedulers.get(self.node)
        available = as_floats(scheduler.available()) if scheduler is not None else {}
        return {
            "pid": os.getpid(),
            "workers_alive": warm + len(procs),
            "workers_warm": warm,
            "workers_idle": len(procs) - actor - busy,
            "workers_busy": busy,
            "workers_actor": actor,
            "workers_blocked": sum(1 for p in procs if p.client is not None and p.client.blocking > 0),
            "objects_inline": len(inline),
            "objects_inline_bytes": sum(P.wire_size(w) for w in inline),
            "store_objects": store.objects,
            "store_objects_spilled": store.spilled_objects,
            "store_used_bytes": store.used_bytes,
            "store_capacity_bytes": store.capacity_bytes,
            "store_disk_bytes": store.disk_bytes,
            "resources_available": json.dumps(available, sort_keys=True, separators=(",", ":")),
        }

    def _publish_stats(self) -> None:
        now = self.now()
        if now - self.stats_checked_at < NODE_STATS_INTERVAL_S:
            return
        self.stats_checked_at = now
        stats = self.node_stats()
        if stats == self.stats_last and now - self.stats_written_at < NODE_STATS_REFRESH_S:
            return
        try:
            controlplane.put_node_stats(self.plane, self.node, {**stats, "time_s": time.time()}, ttl_s=NODE_STATS_TTL_S)
        except controlplane.ControlPlaneUnavailable:
            return
        self.stats_last, self.stats_written_at = stats, now

    def on_print(self, client: Client, m: P.Message) -> None:
        _, text, stream = m
        if self.driver is not None:
            self.send(self.driver, (P.PRINT, text, stream))

    def on_shutdown(self, client: Client, m: P.Message) -> None:
        self.send(client, (P.REPLY, m[1], "bye"))
        self._flush()
        self.stopping = True


class Terminated(Exception):
    """SIGTERM (also sent by the kernel when the driver dies): stop cleanly."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated()


def serve(context: ChildContext, zygote: Zygote | None) -> None:
    """Run the raylet until the driver leaves (called by ``raylet_main.main``)."""
    logging.basicConfig(level=logging.WARNING, format="detray raylet: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGTERM, _terminate)
    assert context.token is not None
    raylet: Raylet | None = None
    try:
        raylet = Raylet(context.payload, context.token, zygote)
        raylet.start()
        profile_path = os.environ.get("DETRAY_RAYLET_PROFILE")
        if profile_path:  # developers: where the raylet's time goes (cProfile stats file)
            import cProfile

            profiler = cProfile.Profile()
            try:
                profiler.runcall(raylet.serve)
            finally:
                profiler.dump_stats(profile_path)
        else:
            raylet.serve()
    except Terminated:
        pass
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if raylet is not None:
            raylet.stop()
        elif zygote is not None:
            zygote.stop()
