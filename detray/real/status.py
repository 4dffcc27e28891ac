"""``detray status``: what a running cluster holds, read from its control plane (Redis).

Owns: finding the clusters to show (the user's live session files, or a
Redis address given on the command line), reading what the control plane
holds now (node records, the raylets' node stats, the actor table, task
records, the function table), and showing it: a rich table on a terminal,
``label: value`` lines otherwise, JSON with ``--json``. Must not: talk to a
raylet or a worker (a stuck raylet must not hang ``status``), write to
Redis, unpickle anything (the function table is read by key name only), or
print a password.

Theory of operation: every figure comes from Redis, so ``status`` works
from any process of the user and shows what other nodes would learn. Nodes,
actors and functions are tables the runtime keeps; tasks are counted from
their write-behind records (at most ``TASK_RECORDS_READ_MAX`` are read, in
SCAN batches); workers, objects and free resources come from each node's
stats hash (``detray:{c}:node_stats:{node_id}``, fields in
``NODE_STATS_FIELDS``), which the raylet rewrites when they change. A node
that publishes no such hash shows ``unknown (not published)``.

Exit status: 0 a report was shown; 1 no cluster is running (or none could
be read); 2 bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from detray import controlplane
from detray.core import ids
from detray.core.ids import ActorID
from detray.real import session as sessions

EXIT_OK = 0
EXIT_NO_CLUSTER = 1
EXIT_BAD_INPUT = 2

ACTORS_SHOWN_MAX = 50
"""Actors listed one by one (the counts by state cover all of them)."""
TASK_RECORDS_READ_MAX = 200_000
"""Task records counted at most (about a second of reading); the report says when it stopped short."""
FUNCTIONS_READ_MAX = 10_000
TASK_NAMES_SHOWN_MAX = 10
CLUSTERS_SCANNED_MAX = 1000
CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 10.0
PASSWORD_FILE_BYTES_MAX = 4096
PASSWORD_ENV = "REDISCLI_AUTH"
"""The password variable ``redis-cli`` reads; ``status --address`` reads it too."""
NOT_PUBLISHED = "unknown (not published)"

NODE_STATS_FIELDS: dict[str, str] = {
    "time_s": "wall-clock (Unix) time of this write",
    "pid": "the raylet's process id",
    "workers_alive": "worker processes running: warm + idle + busy + actor",
    "workers_warm": "started, not yet bound to a worker id (the warm pool)",
    "workers_idle": "task workers with no task",
    "workers_busy": "task workers running a task",
    "workers_actor": "workers hosting an actor",
    "workers_blocked": "workers blocked in get or wait with their CPUs released (also counted above)",
    "objects_inline": "small values (up to 100 KiB) held in the raylet's memory",
    "objects_inline_bytes": "their total size",
    "store_objects": "objects in the node's shared-memory store, in memory or spilled",
    "store_objects_spilled": "of those, objects whose only copy is on disk",
    "store_used_bytes": "store memory in use (copies, reservations, deleted objects still mapped)",
    "store_capacity_bytes": "the store's capacity",
    "store_disk_bytes": "bytes of objects on the spill disk",
    "resources_available": "JSON object: resources not held by tasks or actors (the node record's units)",
}
"""The node stats hash the raylet publishes (``controlplane.put_node_stats``): field -> meaning."""

WORKER_FIELDS = ("workers_alive", "workers_warm", "workers_idle", "workers_busy", "workers_actor", "workers_blocked")
OBJECT_FIELDS = (
    "objects_inline",
    "objects_inline_bytes",
    "store_objects",
    "store_objects_spilled",
    "store_used_bytes",
    "store_capacity_bytes",
    "store_disk_bytes",
)


# --- what is shown -------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class NodeStatus:
    node_id: str
    state: str
    incarnation: int
    address: str
    resources: dict[str, float]
    stats: dict[str, Any] | None
    """The node stats hash, numbers parsed; ``None`` when the node publishes none."""


@dataclass(slots=True, kw_only=True)
class ActorStatus:
    actor_id: str
    state: str
    class_name: str | None
    name: str | None
    namespace: str
    restarts: int
    node: str | None
    worker: str | None


@dataclass(slots=True, kw_only=True)
class ClusterStatus:
    cluster_id: str
    redis_address: str
    session: dict[str, Any] | None
    """The session file's public part (no password) when the cluster was found through one."""
    nodes: list[NodeStatus]
    actors_total: int
    actors_by_state: dict[str, int]
    actors: list[ActorStatus]
    """At most ``ACTORS_SHOWN_MAX``: live ones first."""
    tasks_total: int
    tasks_by_state: dict[str, int]
    tasks_by_name: dict[str, int]
    """The ``TASK_NAMES_SHOWN_MAX`` most frequent names."""
    tasks_truncated: bool
    functions: list[str]
    """Function ids (``qualname:digest``) of the function table."""
    functions_truncated: bool
    workers: dict[str, int] | None = field(default=None)
    """``WORKER_FIELDS`` summed over the nodes that publish them; ``None`` if none does."""
    objects: dict[str, int] | None = field(default=None)

    @property
    def running(self) -> bool:
        return any(node.state == "ALIVE" for node in self.nodes)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def gather(plane: controlplane.ControlPlane, *, session: sessions.Session | None = None) -> ClusterStatus:
    """Read cluster ``plane.cluster_id``'s status from its control plane (several round trips)."""
    nodes = [
        NodeStatus(
            node_id=record.node_id,
            state=record.state,
            incarnation=record.incarnation,
            address=record.address,
            resources=record.resources,
            stats=_parse_stats(controlplane.get_node_stats(plane, record.node_id)),
        )
        for record in plane.get_nodes()
    ]
    actor_ids = plane.get_actor_ids()
    records = controlplane.get_actors(plane, actor_ids)
    by_state = Counter(record.state for record in records)
    records.sort(key=lambda r: (r.state == "DEAD", r.actor_id))
    shown = records[:ACTORS_SHOWN_MAX]
    creation_tasks: dict[str, str] = {ids.actor_creation_task(ActorID(r.actor_id)): r.actor_id for r in shown}
    classes: dict[str, str] = {}
    tasks_by_state: Counter[str] = Counter()
    tasks_by_name: Counter[str] = Counter()
    tasks_total = 0
    truncated = False
    for task_id, fields in controlplane.iter_task_records(plane):
        if tasks_total >= TASK_RECORDS_READ_MAX:
            truncated = True
            break
        tasks_total += 1
        tasks_by_state[fields.get("state") or "?"] += 1
        name = fields.get("name") or "?"
        tasks_by_name[name] += 1
        actor = creation_tasks.get(task_id)
        if actor is not None and name.endswith(".__init__"):
            classes[actor] = name[: -len(".__init__")]
    functions, functions_truncated = controlplane.scan_function_ids(plane, limit=FUNCTIONS_READ_MAX)
    status = ClusterStatus(
        cluster_id=plane.cluster_id,
        redis_address=plane.address,
        session=None if session is None else session.public(),
        nodes=nodes,
        actors_total=len(records),
        actors_by_state=dict(sorted(by_state.items())),
        actors=[
            ActorStatus(
                actor_id=r.actor_id,
                state=r.state,
                class_name=classes.get(r.actor_id),
                name=r.name,
                namespace=r.namespace,
                restarts=r.restarts,
                node=r.node,
                worker=r.worker,
            )
            for r in shown
        ],
        tasks_total=tasks_total,
        tasks_by_state=dict(sorted(tasks_by_state.items())),
        tasks_by_name=dict(tasks_by_name.most_common(TASK_NAMES_SHOWN_MAX)),
        tasks_truncated=truncated,
        functions=functions,
        functions_truncated=functions_truncated,
    )
    status.workers = _summed(nodes, WORKER_FIELDS)
    status.objects = _summed(nodes, OBJECT_FIELDS)
    return status


def _parse_stats(raw: dict[str, str] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    parsed: dict[str, Any] = {}
    for name, text in raw.items():
        value: Any = text
        if name == "resources_available":
            try:
                value = json.loads(text)
            except ValueError:
                pass
        else:
            for kind in (int, float):
                try:
                    value = kind(text)
                    break
                except ValueError:
                    continue
        parsed[name] = value
    return parsed


def _summed(nodes: list[NodeStatus], names: tuple[str, ...]) -> dict[str, int] | None:
    published = [node.stats for node in nodes if node.stats is not None and node.state == "ALIVE"]
    if not any(name in stats for stats in published for name in names):
        return None
    totals: dict[str, int] = {}
    for name in names:
        values = [stats[name] for stats in published if isinstance(stats.get(name), int)]
        if values:
            totals[name] = sum(values)
    return totals


# --- text -------------------------------------------------------------------------------------------


def _bytes(count: float) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _amount(resource: str, value: float) -> str:
    if resource == "memory" or resource.endswith("_memory"):
        return _bytes(value)
    return f"{value:g}"


def resources_text(resources: dict[str, float], available: dict[str, Any] | None = None) -> str:
    """``CPU 2, memory 23.5 GiB`` (or ``CPU 1/2, ...`` with availability: free/total)."""
    if not resources:
        return "none"
    parts = []
    for name in sorted(resources, key=lambda n: (n not in ("CPU", "GPU", "memory"), n)):
        total = _amount(name, resources[name])
        free = None if available is None else available.get(name, 0.0)
        if isinstance(free, (int, float)):
            total = f"{_amount(name, free)}/{total}"
        parts.append(f"{name} {total}")
    return ", ".join(parts)


def workers_text(stats: dict[str, Any] | None) -> str:
    if stats is None or not any(name in stats for name in WORKER_FIELDS):
        return NOT_PUBLISHED
    get = stats.get
    return (
        f"{get('workers_alive', '?')} alive ({get('workers_warm', '?')} warm, {get('workers_idle', '?')} idle, "
        f"{get('workers_busy', '?')} busy, {get('workers_actor', '?')} actor), {get('workers_blocked', '?')} blocked"
    )


def objects_text(stats: dict[str, Any] | None) -> str:
    if stats is None or not any(name in stats for name in OBJECT_FIELDS):
        return NOT_PUBLISHED

    def size(name: str) -> str:
        value = stats.get(name)
        return _bytes(value) if isinstance(value, (int, float)) else "?"

    get = stats.get
    return (
        f"{get('objects_inline', '?')} inline ({size('objects_inline_bytes')}); "
        f"store: {get('store_objects', '?')} ({get('store_objects_spilled', '?')} spilled), "
        f"{size('store_used_bytes')} used of {size('store_capacity_bytes')}, {size('store_disk_bytes')} on disk"
    )


def _available(node: NodeStatus) -> dict[str, Any] | None:
    value = None if node.stats is None else node.stats.get("resources_available")
    return value if isinstance(value, dict) else None


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{key} {value}" for key, value in counts.items()) or "none"


def _function_names(status: ClusterStatus) -> str:
    names = sorted({function_id.rpartition(":")[0] or function_id for function_id in status.functions})
    more = " (more not read)" if status.functions_truncated else ""
    return f"{len(status.functions)}{more}" + (f": {', '.join(names)}" if names else "")


def _driver_text(status: ClusterStatus, now_s: float) -> str:
    if status.session is None:
        return "unknown (no session file of this user names this cluster)"
    started = float(status.session["started_at_s"])
    when = datetime.datetime.fromtimestamp(started).isoformat(sep=" ", timespec="seconds")
    return f"pid {status.session['driver_pid']}, started {when} (up {max(0.0, now_s - started):.0f} s)"


def _actor_line(actor: ActorStatus) -> str:
    name = "-" if actor.name is None else f"{actor.name} (namespace {actor.namespace})"
    return (
        f"{actor.state}, class {actor.class_name or '-'}, name {name}, restarts {actor.restarts}, "
        f"worker {actor.worker or '-'}"
    )


def summary_rows(status: ClusterStatus, now_s: float) -> list[tuple[str, str]]:
    """The cluster-wide (label, value) pairs, in display order."""
    alive = sum(1 for node in status.nodes if node.state == "ALIVE")
    tasks = f"{status.tasks_total} records ({_counts(status.tasks_by_state)})"
    if status.tasks_truncated:
        tasks = f"at least {tasks}: stopped reading at {TASK_RECORDS_READ_MAX}"
    return [
        ("cluster", status.cluster_id),
        ("redis", status.redis_address),
        ("driver", _driver_text(status, now_s)),
        ("session file", "-" if status.session is None else str(status.session["path"])),
        ("nodes", f"{len(status.nodes)} ({alive} alive)"),
        ("workers", workers_text(status.workers)),
        ("objects", objects_text(status.objects)),
        ("actors", f"{status.actors_total} ({_counts(status.actors_by_state)})"),
        ("tasks", tasks),
        ("tasks by name", _counts(status.tasks_by_name)),
        ("functions", _function_names(status)),
    ]


def render(statuses: list[ClusterStatus], file: IO[str], *, terminal: bool, now_s: float | None = None) -> None:
    """Write the report: rich tables on a terminal, plain ``label: value`` lines otherwise."""
    now = time.time() if now_s is None else now_s
    if terminal:
        _render_rich(statuses, file, now)
        return
    for index, status in enumerate(statuses):
        if index:
            file.write("\n")
        lines = list(summary_rows(status, now))
        for node in status.nodes:
            prefix = f"node {node.node_id}"
            lines.append((prefix, f"{node.state}, incarnation {node.incarnation}, address {node.address or '-'}"))
            lines.append((f"{prefix} resources", resources_text(node.resources, _available(node))))
            lines.append((f"{prefix} workers", workers_text(node.stats)))
            lines.append((f"{prefix} objects", objects_text(node.stats)))
        for actor in status.actors:
            lines.append((f"actor {actor.actor_id}", _actor_line(actor)))
        hidden = status.actors_total - len(status.actors)
        if hidden > 0:
            lines.append(("actors not listed", str(hidden)))
        for label, value in lines:
            file.write(f"{label}: {value}\n")


def _render_rich(statuses: list[ClusterStatus], file: IO[str], now_s: float) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=file)
    for status in statuses:
        summary = Table(title=f"detray cluster {status.cluster_id}", box=box.SIMPLE_HEAVY, show_header=False)
        summary.add_column(style="bold")
        summary.add_column(overflow="fold")
        for label, value in summary_rows(status, now_s):
            summary.add_row(label, value)
        console.print(summary)
        nodes = Table(title="nodes", box=box.SIMPLE)
        for column in ("node", "state", "resources (free/total)", "workers", "objects"):
            nodes.add_column(column, overflow="fold")
        for node in status.nodes:
            style = "" if node.state == "ALIVE" else "dim"
            nodes.add_row(
                node.node_id,
                node.state,
                resources_text(node.resources, _available(node)),
                workers_text(node.stats),
                objects_text(node.stats),
                style=style,
            )
        console.print(nodes)
        if status.actors:
            actors = Table(title="actors", box=box.SIMPLE)
            for column in ("actor", "class", "name", "namespace", "state", "restarts", "worker"):
                actors.add_column(column, overflow="fold")
            for actor in status.actors:
                actors.add_row(
                    actor.actor_id,
                    actor.class_name or "-",
                    actor.name or "-",
                    actor.namespace if actor.name else "-",
                    actor.state,
                    str(actor.restarts),
                    actor.worker or "-",
                    style="dim" if actor.state == "DEAD" else "",
                )
            console.print(actors)
            hidden = status.actors_total - len(status.actors)
            if hidden > 0:
                console.print(f"... and {hidden} more actors (counted above)")


# --- the command ------------------------------------------------------------------------------------


class BadArguments(ValueError):
    """The command line cannot be used (exit 2)."""


@dataclass(frozen=True, slots=True)
class Target:
    """One control plane to read: where it is, with which password, and which cluster."""

    host: str
    port: int
    password: str = field(repr=False)
    cluster_id: str | None
    """``None``: every running cluster on that server."""
    session: sessions.Session | None


def command(args: argparse.Namespace, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    """Run ``detray status`` with parsed ``args``; returns the exit status."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    try:
        targets = _targets(args)
    except BadArguments as problem:
        print(f"detray status: {problem}", file=err)
        return EXIT_BAD_INPUT
    except sessions.SessionError as problem:
        print(f"detray status: {problem}", file=err)
        return EXIT_NO_CLUSTER
    statuses: list[ClusterStatus] = []
    errors: list[dict[str, str]] = []
    if not targets:
        where = sessions.session_dir()
        message = (
            f"no detray cluster is running for this user (no live session file in {where}); "
            "start one with detray.init(), or give --address HOST:PORT"
        )
        errors.append({"error": message})
        print(f"detray status: {message}", file=err)
    for target in targets:
        found, failure = _read_target(target)
        statuses.extend(found)
        if failure is not None:
            errors.append(failure)
            print(f"detray status: {failure['error']}", file=err)
    if args.json:
        json.dump({"clusters": [s.to_json() for s in statuses], "errors": errors}, out, indent=2, sort_keys=True)
        out.write("\n")
    elif statuses:
        render(statuses, out, terminal=out.isatty())
    return EXIT_OK if statuses else EXIT_NO_CLUSTER


def _read_target(target: Target) -> tuple[list[ClusterStatus], dict[str, str] | None]:
    address = f"{target.host}:{target.port}"
    label = target.cluster_id or "?"
    try:
        base = controlplane.connect(
            target.host,
            target.port,
            password=target.password,
            cluster_id=label,
            connect_timeout_s=CONNECT_TIMEOUT_S,
            socket_timeout_s=SOCKET_TIMEOUT_S,
        )
    except controlplane.ControlPlaneUnavailable as exc:
        return [], {"cluster_id": label, "redis_address": address, "error": _failed(target, str(exc))}
    try:
        if target.cluster_id is not None:
            cluster_ids = [target.cluster_id]
            known, _ = controlplane.find_cluster_ids(base, limit=CLUSTERS_SCANNED_MAX)
            if target.cluster_id not in known:
                detail = f"no cluster {target.cluster_id} at {address} (clusters there: {', '.join(known) or 'none'})"
                return [], {"cluster_id": label, "redis_address": address, "error": detail}
        else:
            cluster_ids, _ = controlplane.find_cluster_ids(base, limit=CLUSTERS_SCANNED_MAX)
        found = []
        for cluster_id in cluster_ids:
            plane = controlplane.ControlPlane(base.client, cluster_id, address=address)
            status = gather(plane, session=_matching_session(target, cluster_id))
            if target.cluster_id is not None or status.running:
                found.append(status)
        if not found:
            stopped = f" (records of stopped clusters: {', '.join(cluster_ids)})" if cluster_ids else ""
            detail = f"no running detray cluster at {address}{stopped}"
            return [], {"cluster_id": label, "redis_address": address, "error": detail}
        return found, None
    except controlplane.ControlPlaneUnavailable as exc:
        return [], {"cluster_id": label, "redis_address": address, "error": _failed(target, str(exc))}
    finally:
        base.client.close()


def _failed(target: Target, detail: str) -> str:
    if target.session is None:
        return detail
    return f"cluster {target.session.cluster_id} (driver pid {target.session.driver_pid}): {detail}"


def _matching_session(target: Target, cluster_id: str) -> sessions.Session | None:
    if target.session is not None:
        return target.session if target.session.cluster_id == cluster_id else None
    try:
        live = sessions.find_live()
    except sessions.SessionError:
        return None
    for candidate in live:
        if candidate.cluster_id == cluster_id and _same_server(candidate, target.host, target.port):
            return candidate
    return None


def _same_server(candidate: sessions.Session, host: str, port: int) -> bool:
    def canonical(name: str) -> str:
        return "127.0.0.1" if name in ("localhost", "127.0.0.1", "::1") else name

    return candidate.redis_port == port and canonical(candidate.redis_host) == canonical(host)


def _targets(args: argparse.Namespace) -> list[Target]:
    if args.address is None:
        if args.password is not None or args.password_file is not None:
            raise BadArguments("--password and --password-file go with --address (session files hold the password)")
        live = sessions.find_live()
        if args.cluster_id is not None:
            live = [s for s in live if s.cluster_id == args.cluster_id]
        return [Target(s.redis_host, s.redis_port, s.redis_password, s.cluster_id, s) for s in live]
    host, port = parse_address(args.address)
    password = _password(args, host, port)
    return [Target(host, port, password, args.cluster_id, None)]


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) -> (host, port); ``BadArguments`` otherwise."""
    host, sep, port_text = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise BadArguments(f"--address {text!r} is not HOST:PORT with a port in 1..65535")
    return host, int(port_text)


def _password(args: argparse.Namespace, host: str, port: int) -> str:
    if args.password is not None:
        if not args.password:
            raise BadArguments("--password is empty")
        return str(args.password)
    if args.password_file is not None:
        path = Path(args.password_file)
        try:
            with open(path, "rb") as handle:
                raw = handle.read(PASSWORD_FILE_BYTES_MAX + 1)
        except OSError as exc:
            raise BadArguments(f"cannot read --password-file {path}: {exc.strerror or exc}") from None
        if len(raw) > PASSWORD_FILE_BYTES_MAX:
            raise BadArguments(f"--password-file {path} is larger than {PASSWORD_FILE_BYTES_MAX} bytes")
        text = raw.decode("utf-8", "replace").strip()
        if not text:
            raise BadArguments(f"--password-file {path} is empty")
        return text
    try:
        live = sessions.find_live()
    except sessions.SessionError:
        live = []
    for candidate in live:
        if _same_server(candidate, host, port):  # the password is the server's, whatever the cluster
            return candidate.redis_password
    from_env = os.environ.get(PASSWORD_ENV, "")
    if from_env:
        return from_env
    raise BadArguments(
        f"no password for {host}:{port}: give --password-file FILE (or set {PASSWORD_ENV}); "
        "no live session file of this user names that address"
    )
