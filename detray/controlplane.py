"""The control plane client: one module, the same keys on fakeredis (simulator) and Redis (real).

Owns: the key layout, the pub/sub channels, how records are encoded, the
batched write-behind of task records, and turning connection failures into
``ControlPlaneUnavailable``. Must not: decide anything (the core decides),
read a clock (callers pass ``now``), or hold hot per-task state (that stays
with the owner and the raylet; task records arrive late, in batches).

Key layout (``{c}`` is the cluster id; ``docs/controlplane.md`` shows how to
inspect a live cluster with ``redis-cli``)::

    detray:{c}:fn:{function_id}               string  cloudpickled function, written once (SET NX)
    detray:{c}:nodes                          set     every node id ever registered
    detray:{c}:node:{node_id}                 hash    incarnation, resources (json), state, address
    detray:{c}:actors                         set     every actor id ever registered
    detray:{c}:actor:{actor_id}               hash    state, node, worker, name, namespace, restarts
    detray:{c}:actor_name:{namespace}:{name}  string  the actor id holding the name (SET NX)
    detray:{c}:obj:{object_id}                hash    size, owner
    detray:{c}:obj_loc:{object_id}            set     node ids holding a copy
    detray:{c}:task:{task_id}                 hash    name, owner, state, worker, attempt, error (write-behind)
    detray:{c}:node_stats:{node_id}           hash    a node's workers, objects and free resources (rewritten on change, expires)
    detray:{c}:ch:nodes                       channel a node record changed
    detray:{c}:ch:actors                      channel an actor record changed
    detray:{c}:ch:objects                     channel an object location was added or removed

A ``:`` or ``%`` inside a key part is written ``%3A`` / ``%25``, so parts
never run together (a namespace ``a:b`` cannot collide with name ``b:...``).
Absent optional fields are stored as the empty string.

Theory of operation:

* Table writes for nodes, actors and object locations go out in one round
  trip (MULTI/EXEC) together with a JSON message on their channel, as Ray
  0.x's GCS tables did: a reader either polls the table or subscribes.
* Every message is JSON (sorted keys, compact); nothing read from Redis is
  unpickled here. The function table holds cloudpickle bytes: peers are
  authenticated by the Redis password (``connect`` refuses to run without
  one), and only the runtime unpickles them.
* The simulator polls ``Subscription.get_message()`` (never blocks); the real
  runtime waits with a finite ``timeout_s``. Nothing here blocks forever: real
  connections carry connect and socket timeouts.
* ``TaskRecordWriter`` keeps per-task writes off the hot path: records are
  buffered (updates to one task coalesce) and written in one pipeline when
  the buffer reaches ``max_records`` or the oldest record is ``max_lag_s``
  old, whichever comes first; the caller supplies ``now``.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "CHANNELS",
    "KEY_LAYOUT",
    "ActorRecord",
    "ChannelMessage",
    "ControlPlane",
    "ControlPlaneUnavailable",
    "Keys",
    "NodeRecord",
    "ObjectRecord",
    "Subscription",
    "TaskRecordWriter",
    "WriterStats",
    "connect",
]

CHANNELS = ("nodes", "actors", "objects")

# pattern -> (redis type, contents); the module docstring and docs/controlplane.md list the same.
KEY_LAYOUT: dict[str, tuple[str, str]] = {
    "detray:{c}:fn:{function_id}": ("string", "cloudpickled function, written once (SET NX)"),
    "detray:{c}:nodes": ("set", "every node id ever registered"),
    "detray:{c}:node:{node_id}": ("hash", "incarnation, resources (json), state, address"),
    "detray:{c}:actors": ("set", "every actor id ever registered"),
    "detray:{c}:actor:{actor_id}": ("hash", "state, node, worker, name, namespace, restarts"),
    "detray:{c}:actor_name:{namespace}:{name}": ("string", "the actor id holding the name (SET NX)"),
    "detray:{c}:obj:{object_id}": ("hash", "size, owner"),
    "detray:{c}:obj_loc:{object_id}": ("set", "node ids holding a copy"),
    "detray:{c}:task:{task_id}": ("hash", "name, owner, state, worker, attempt, error (write-behind)"),
    "detray:{c}:node_stats:{node_id}": ("hash", "a node's workers, objects and free resources (rewritten on change, expires)"),
    "detray:{c}:ch:nodes": ("channel", "a node record changed"),
    "detray:{c}:ch:actors": ("channel", "an actor record changed"),
    "detray:{c}:ch:objects": ("channel", "an object location was added or removed"),
}

DEFAULT_CONNECT_TIMEOUT_S = 2.0
DEFAULT_SOCKET_TIMEOUT_S = 10.0
DEFAULT_MAX_RECORDS = 500
DEFAULT_MAX_LAG_S = 1.0
_NODES_PER_ROUND_TRIP = 1000
NAME_RELEASE_ATTEMPTS_MAX = 16

_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False)
_CONNECTION_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class ControlPlaneUnavailable(ConnectionError):
    """The control plane cannot be reached (or refused our password); names its address."""

    def __init__(self, address: str, detail: str) -> None:
        super().__init__(f"the control plane at {address} is unreachable: {detail}")
        self.address = address


# --- records -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeRecord:
    node_id: str
    incarnation: int
    resources: dict[str, float]
    state: str
    address: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorRecord:
    actor_id: str
    state: str
    node: str | None = None
    worker: str | None = None
    name: str | None = None
    namespace: str = ""
    restarts: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectRecord:
    object_id: str
    size_bytes: int
    owner: str
    locations: tuple[str, ...] = ()  # sorted node ids


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    channel: str  # short name, one of CHANNELS
    data: dict[str, Any]


# --- keys --------------------------------------------------------------------------------


def _part(text: str) -> str:
    if ":" in text or "%" in text:
        return text.replace("%", "%25").replace(":", "%3A")
    return text


class Keys:
    """Every key and channel name of one cluster (the layout above, in code)."""

    def __init__(self, cluster_id: str) -> None:
        if not cluster_id:
            raise ValueError("cluster_id must be a non-empty string")
        self.prefix = f"detray:{_part(cluster_id)}:"

    def fn(self, function_id: str) -> str:
        return f"{self.prefix}fn:{_part(function_id)}"

    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def node(self, node_id: str) -> str:
        return f"{self.prefix}node:{_part(node_id)}"

    def actors(self) -> str:
        return f"{self.prefix}actors"

    def actor(self, actor_id: str) -> str:
        return f"{self.prefix}actor:{_part(actor_id)}"

    def actor_name(self, namespace: str, name: str) -> str:
        return f"{self.prefix}actor_name:{_part(namespace)}:{_part(name)}"

    def obj(self, object_id: str) -> str:
        return f"{self.prefix}obj:{_part(object_id)}"

    def obj_locations(self, object_id: str) -> str:
        return f"{self.prefix}obj_loc:{_part(object_id)}"

    def task(self, task_id: str) -> str:
        return f"{self.prefix}task:{_part(task_id)}"

    def channel(self, short: str) -> str:
        if short not in CHANNELS:
            raise ValueError(f"unknown control plane channel {short!r}; channels are {CHANNELS}")
        return f"{self.prefix}ch:{short}"


# --- the client --------------------------------------------------------------------------


class ControlPlane:
    """Tables and channels of cluster ``cluster_id`` on a redis-py-compatible ``client``.

    ``client`` must return bytes (``decode_responses=False``): the function
    table is binary. Use ``connect()`` for a real server (password and
    timeouts set); pass a ``fakeredis.FakeRedis`` in the simulator.
    """

    def __init__(self, client: Any, cluster_id: str, *, address: str | None = None) -> None:
        kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
        if kwargs.get("decode_responses"):
            raise ValueError("the control plane client must be built with decode_responses=False")
        self.client = client
        self.cluster_id = cluster_id
        self.keys = Keys(cluster_id)
        self.address = address if address is not None else _address_of(client, kwargs)

    # functions

    def register_function(self, function_id: str, payload: bytes) -> bool:
        """Store a function's pickled bytes once; ``True`` if this call stored them."""
        with self._guard():
            return bool(self.client.set(self.keys.fn(function_id), payload, nx=True))

    def get_function(self, function_id: str) -> bytes | None:
        with self._guard():
            payload = self.client.get(self.keys.fn(function_id))
        return None if payload is None else bytes(payload)

    # nodes

    def put_node(self, record: NodeRecord) -> None:
        """Write a node's record and announce it on ``ch:nodes``, in one round trip."""
        self.put_nodes([record])

    def put_nodes(self, records: Sequence[NodeRecord]) -> None:
        """`put_node` for each record, in order, in one round trip per 1,000 records
        (a cluster coming up registers all its nodes at once)."""
        with self._guard():
            for start in range(0, len(records), _NODES_PER_ROUND_TRIP):
                batch = records[start : start + _NODES_PER_ROUND_TRIP]
                pipe = self.client.pipeline(transaction=True)
                pipe.sadd(self.keys.nodes(), *[record.node_id for record in batch])
                for record in batch:
                    fields = {
                        "incarnation": str(record.incarnation),
                        "resources": _JSON.encode(record.resources),
                        "state": record.state,
                        "address": record.address,
                    }
                    message = {"node": record.node_id, "incarnation": record.incarnation, "state": record.state}
                    pipe.hset(self.keys.node(record.node_id), mapping=fields)
                    pipe.publish(self.keys.channel("nodes"), _JSON.encode(message))
                pipe.execute()

    def get_node(self, node_id: str) -> NodeRecord | None:
        with self._guard():
            raw = self.client.hgetall(self.keys.node(node_id))
        return _node_record(node_id, raw) if raw else None

    def get_nodes(self) -> list[NodeRecord]:
        """Every registered node, sorted by id (two round trips)."""
        with self._guard():
            node_ids = sorted(_text(n) for n in self.client.smembers(self.keys.nodes()))
            pipe = self.client.pipeline(transaction=False)
            for node_id in node_ids:
                pipe.hgetall(self.keys.node(node_id))
            raws = pipe.execute() if node_ids else []
        return [_node_record(n, raw) for n, raw in zip(node_ids, raws) if raw]

    # actors

    def put_actor(self, record: ActorRecord) -> None:
        """Write an actor's record and announce it on ``ch:actors``, in one round trip."""
        fields = {
            "state": record.state,
            "node": record.node or "",
            "worker": record.worker or "",
            "name": record.name or "",
            "namespace": record.namespace,
            "restarts": str(record.restarts),
        }
        message = {"actor": record.actor_id, "state": record.state, "node": record.node}
        with self._guard():
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.keys.actor(record.actor_id), mapping=fields)
            pipe.sadd(self.keys.actors(), record.actor_id)
            pipe.publish(self.keys.channel("actors"), _JSON.encode(message))
            pipe.execute()

    def get_actor(self, actor_id: str) -> ActorRecord | None:
        with self._guard():
            raw = self.client.hgetall(self.keys.actor(actor_id))
        if not raw:
            return None
        f = _decode_hash(raw)
        return ActorRecord(
            actor_id=actor_id,
            state=f["state"],
            node=f.get("node") or None,
            worker=f.get("worker") or None,
            name=f.get("name") or None,
            namespace=f.get("namespace", ""),
            restarts=int(f.get("restarts") or 0),
        )

    def get_actor_ids(self) -> list[str]:
        with self._guard():
            return sorted(_text(a) for a in self.client.smembers(self.keys.actors()))

    def claim_actor_name(self, namespace: str, name: str, actor_id: str) -> bool:
        """Atomically give ``name`` in ``namespace`` to ``actor_id``.

        ``True`` if the name is now ``actor_id``'s (also when it already was:
        a retried claim succeeds); ``False`` if another actor holds it.
        """
        key = self.keys.actor_name(namespace, name)
        with self._guard():
            if self.client.set(key, actor_id, nx=True):
                return True
            holder = self.client.get(key)
        return holder is not None and _text(holder) == actor_id

    def lookup_actor_name(self, namespace: str, name: str) -> str | None:
        with self._guard():
            holder = self.client.get(self.keys.actor_name(namespace, name))
        return None if holder is None else _text(holder)

    def release_actor_name(self, namespace: str, name: str, actor_id: str) -> bool:
        """Free the name if ``actor_id`` holds it (compare-and-delete); ``True`` if freed."""
        key = self.keys.actor_name(namespace, name)
        with self._guard():
            for _attempt in range(NAME_RELEASE_ATTEMPTS_MAX):
                with self.client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(key)
                        holder = pipe.get(key)
                        if holder is None or _text(holder) != actor_id:
                            return False
                        pipe.multi()
                        pipe.delete(key)
                        pipe.execute()
                        return True
                    except redis.exceptions.WatchError:
                        continue
        raise RuntimeError(
            f"releasing actor name {namespace!r}/{name!r} lost {NAME_RELEASE_ATTEMPTS_MAX} races in a row"
        )

    # objects

    def put_object(self, object_id: str, size_bytes: int, owner: str) -> None:
        with self._guard():
            self.client.hset(self.keys.obj(object_id), mapping={"size": str(size_bytes), "owner": owner})

    def add_object_location(self, object_id: str, node_id: str) -> None:
        """Record a copy on ``node_id`` and announce it on ``ch:objects``, in one round trip."""
        self._change_location(object_id, node_id, "added")

    def remove_object_location(self, object_id: str, node_id: str) -> None:
        self._change_location(object_id, node_id, "removed")

    def get_object_locations(self, object_id: str) -> list[str]:
        with self._guard():
            members = self.client.smembers(self.keys.obj_locations(object_id))
        return sorted(_text(m) for m in members)

    def get_object(self, object_id: str) -> ObjectRecord | None:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            pipe.hgetall(self.keys.obj(object_id))
            pipe.smembers(self.keys.obj_locations(object_id))
            raw, members = pipe.execute()
        if not raw:
            return None
        f = _decode_hash(raw)
        return ObjectRecord(
            object_id=object_id,
            size_bytes=int(f["size"]),
            owner=f["owner"],
            locations=tuple(sorted(_text(m) for m in members)),
        )

    def delete_object(self, object_id: str) -> None:
        """Forget an object (freed): its record and its location set."""
        with self._guard():
            self.client.delete(self.keys.obj(object_id), self.keys.obj_locations(object_id))

    def _change_location(self, object_id: str, node_id: str, op: str) -> None:
        message = {"object": object_id, "node": node_id, "op": op}
        key = self.keys.obj_locations(object_id)
        with self._guard():
            pipe = self.client.pipeline(transaction=True)
            if op == "added":
                pipe.sadd(key, node_id)
            else:
                pipe.srem(key, node_id)
            pipe.publish(self.keys.channel("objects"), _JSON.encode(message))
            pipe.execute()

    # tasks (normally through TaskRecordWriter)

    def get_task(self, task_id: str) -> dict[str, str] | None:
        with self._guard():
            raw = self.client.hgetall(self.keys.task(task_id))
        return _decode_hash(raw) if raw else None

    # pub/sub

    def publish(self, channel: str, message: Mapping[str, Any]) -> int:
        """Send a JSON message on a channel (short name); returns how many subscribers got it."""
        with self._guard():
            return int(self.client.publish(self.keys.channel(channel), _JSON.encode(dict(message))))

    def subscribe(self, channels: tuple[str, ...] | list[str] = CHANNELS) -> Subscription:
        """Subscribe to channels (short names); messages published after this call arrive in order."""
        full = [self.keys.channel(c) for c in channels]
        with self._guard():
            pubsub = self.client.pubsub()
            pubsub.subscribe(*full)
        return Subscription(self, pubsub)

    def ping(self) -> None:
        """Round trip to the server; raises ``ControlPlaneUnavailable`` if it cannot."""
        with self._guard():
            self.client.ping()

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except ControlPlaneUnavailable:  # an OSError too: never wrap it twice
            raise
        except redis.exceptions.AuthenticationError as exc:
            raise ControlPlaneUnavailable(self.address, f"it refused the password ({exc})") from exc
        except _CONNECTION_ERRORS as exc:
            raise ControlPlaneUnavailable(self.address, str(exc) or type(exc).__name__) from exc
        except redis.exceptions.ResponseError as exc:
            if "NOAUTH" in str(exc) or "WRONGPASS" in str(exc):
                raise ControlPlaneUnavailable(self.address, f"it refused the password ({exc})") from exc
            raise


class Subscription:
    """Messages from subscribed channels, in publication order."""

    def __init__(self, plane: ControlPlane, pubsub: Any) -> None:
        self._plane = plane
        self._pubsub = pubsub
        self._prefix_len = len(plane.keys.prefix) + len("ch:")

    def get_message(self, timeout_s: float = 0.0) -> ChannelMessage | None:
        """The next message, or ``None`` if none arrives within ``timeout_s`` (0: do not wait).

        ``timeout_s`` must be finite: nothing in detray blocks forever on the
        control plane. Subscription confirmations are skipped.
        """
        if not 0.0 <= timeout_s < float("inf"):
            raise ValueError(f"timeout_s must be finite and >= 0, got {timeout_s}")
        deadline = time.monotonic() + timeout_s if timeout_s > 0.0 else 0.0
        wait_s = timeout_s
        with self._plane._guard():
            while True:
                raw = self._pubsub.get_message(timeout=wait_s)
                if raw is None:
                    return None
                if raw.get("type") == "message":
                    channel = _text(raw["channel"])[self._prefix_len :]
                    return ChannelMessage(channel=channel, data=json.loads(_text(raw["data"])))
                if timeout_s > 0.0:  # a subscription confirmation: keep waiting for the rest
                    wait_s = max(0.0, deadline - time.monotonic())

    def drain(self) -> list[ChannelMessage]:
        """Every message available now, without waiting (the simulator's poll)."""
        messages = []
        while (message := self.get_message()) is not None:
            messages.append(message)
        return messages

    def close(self) -> None:
        with contextlib.suppress(*_CONNECTION_ERRORS):
            self._pubsub.close()


# --- task records: batched write-behind --------------------------------------------------


@dataclass(slots=True)
class WriterStats:
    flushes: int = 0  # pipelines executed
    records_written: int = 0  # task hashes written (after coalescing)
    updates: int = 0  # record() calls


class TaskRecordWriter:
    """Buffers task records and writes them in batches with bounded lag.

    ``record`` never touches the network; ``maybe_flush(now)`` writes the
    buffer in one pipeline when it holds ``max_records`` tasks or its oldest
    record is ``max_lag_s`` old. Several updates to one task before a flush
    coalesce (later fields win). Not thread-safe: one writer per owner.
    If a flush fails the buffer is kept, so the next flush retries it.
    """

    def __init__(
        self,
        plane: ControlPlane,
        *,
        max_records: int = DEFAULT_MAX_RECORDS,
        max_lag_s: float = DEFAULT_MAX_LAG_S,
    ) -> None:
        if max_records < 1:
            raise ValueError(f"max_records must be >= 1, got {max_records}")
        if not max_lag_s >= 0.0:
            raise ValueError(f"max_lag_s must be >= 0, got {max_lag_s}")
        self.plane = plane
        self.max_records = max_records
        self.max_lag_s = max_lag_s
        self.stats = WriterStats()
        self._buffer: dict[str, dict[str, str]] = {}
        self._oldest_at_s: float | None = None

    def record(self, task_id: str, fields: Mapping[str, str | int | float], now: float) -> bool:
        """Buffer fields of ``task_id``'s record at time ``now``; ``True`` if a flush is now due."""
        encoded = self._buffer.setdefault(task_id, {})
        for key, value in fields.items():
            encoded[key] = _field_text(key, value)
        if self._oldest_at_s is None:
            self._oldest_at_s = now
        self.stats.updates += 1
        return self.due(now)

    def due(self, now: float) -> bool:
        if self._oldest_at_s is None:
            return False
        return len(self._buffer) >= self.max_records or now - self._oldest_at_s >= self.max_lag_s

    def maybe_flush(self, now: float) -> bool:
        """Flush if the buffer is full or its oldest record is ``max_lag_s`` old; ``True`` if it did."""
        if not self.due(now):
            return False
        self.flush()
        return True

    def flush(self) -> int:
        """Write every buffered record in one pipeline; returns how many tasks were written."""
        if not self._buffer:
            return 0
        keys = self.plane.keys
        with self.plane._guard():
            pipe = self.plane.client.pipeline(transaction=False)
            for task_id, fields in self._buffer.items():
                pipe.hset(keys.task(task_id), mapping=fields)
            pipe.execute()
        written = len(self._buffer)
        self.stats.flushes += 1
        self.stats.records_written += written
        self._buffer = {}
        self._oldest_at_s = None
        return written

    @property
    def pending(self) -> int:
        """Tasks buffered and not yet written."""
        return len(self._buffer)

    @property
    def oldest_at_s(self) -> float | None:
        return self._oldest_at_s


# --- connecting to a real server ---------------------------------------------------------


def connect(
    host: str,
    port: int,
    *,
    password: str,
    cluster_id: str,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    socket_timeout_s: float = DEFAULT_SOCKET_TIMEOUT_S,
) -> ControlPlane:
    """Connect to the Redis at ``host:port`` with ``password`` and check it answers.

    Raises ``ControlPlaneUnavailable`` naming the address if it does not
    (refused, timed out, wrong password). One immediate retry covers a
    dropped idle connection; there is no backoff loop to hang in.
    """
    if not password:
        raise ValueError("the control plane needs a password: it is what authenticates peers")
    client = redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_connect_timeout=connect_timeout_s,
        socket_timeout=socket_timeout_s,
        retry=Retry(NoBackoff(), 1),
        health_check_interval=30,
        decode_responses=False,
    )
    plane = ControlPlane(client, cluster_id, address=f"{host}:{port}")
    plane.ping()
    return plane


# --- encoding helpers --------------------------------------------------------------------


def _address_of(client: Any, kwargs: Mapping[str, Any]) -> str:
    if type(client).__module__.startswith("fakeredis"):
        return "fakeredis (in-process)"
    if kwargs.get("path"):
        return f"unix:{kwargs['path']}"
    return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _decode_hash(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in raw.items()}


def _node_record(node_id: str, raw: Mapping[bytes | str, bytes | str]) -> NodeRecord:
    f = _decode_hash(raw)
    return NodeRecord(
        node_id=node_id,
        incarnation=int(f["incarnation"]),
        resources=json.loads(f["resources"]),
        state=f["state"],
        address=f.get("address", ""),
    )


def _field_text(key: str, value: str | int | float) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    raise TypeError(f"task record field {key!r} must be str, int or float, got {type(value).__name__}")


# --- read-only views for `detray status`; the node stats hash ----------------------------
# Added for `detray status` (detray/real/status.py). The node stats key is
# ``detray:{c}:node_stats:{node_id}`` (hash): the raylet's own counts (workers,
# objects, available resources), rewritten when they change, with a TTL so a
# raylet that stops reporting leaves no stale figures.

_SCAN_BATCH = 1000


def node_stats_key(keys: Keys, node_id: str) -> str:
    """``detray:{c}:node_stats:{node_id}``: the hash of a node's current counts."""
    return f"{keys.prefix}node_stats:{_part(node_id)}"


def put_node_stats(
    plane: ControlPlane, node_id: str, stats: Mapping[str, str | int | float], *, ttl_s: float
) -> None:
    """Replace a node's stats hash in one round trip and let it expire after ``ttl_s`` without a rewrite."""
    if not ttl_s > 0.0:
        raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
    key = node_stats_key(plane.keys, node_id)
    fields = {name: _field_text(name, value) for name, value in stats.items()}
    with plane._guard():
        pipe = plane.client.pipeline(transaction=True)
        pipe.delete(key)  # a field no longer published must not linger
        if fields:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, max(1, int(ttl_s * 1000)))
        pipe.execute()


def get_node_stats(plane: ControlPlane, node_id: str) -> dict[str, str] | None:
    """A node's stats hash, or ``None`` when it publishes none (or stopped: the hash expired)."""
    with plane._guard():
        raw = plane.client.hgetall(node_stats_key(plane.keys, node_id))
    return _decode_hash(raw) if raw else None


def find_cluster_ids(plane: ControlPlane, *, limit: int = 1000) -> tuple[list[str], bool]:
    """Ids of every cluster with a node table on ``plane``'s server (whatever ``plane``'s own
    cluster id), sorted; and whether ``limit`` cut the list."""
    found: set[str] = set()
    with plane._guard():
        for raw in plane.client.scan_iter(match="detray:*:nodes", count=_SCAN_BATCH):
            middle = _text(raw)[len("detray:") : -len(":nodes")]
            if middle and ":" not in middle:  # not e.g. an actor named "nodes": detray:c:actor_name:ns:nodes
                found.add(_unpart(middle))
                if len(found) > limit:
                    break
    ids = sorted(found)
    return ids[:limit], len(ids) > limit


def iter_task_records(plane: ControlPlane) -> Iterator[tuple[str, dict[str, str]]]:
    """Every task record as (task id, fields), in no order, read lazily.

    Walks the key space with SCAN (never KEYS) and reads the hashes in
    pipelines of ``_SCAN_BATCH``, so memory stays bounded by one batch. A
    read for a person or a script, not for the hot path; stop early by
    breaking out of the loop.
    """
    prefix = plane.keys.prefix + "task:"
    with plane._guard():
        batch: list[str] = []
        for raw in plane.client.scan_iter(match=_glob_escape(prefix) + "*", count=_SCAN_BATCH):
            batch.append(_text(raw))
            if len(batch) >= _SCAN_BATCH:
                yield from _read_hashes(plane, batch, len(prefix))
                batch = []
        yield from _read_hashes(plane, batch, len(prefix))


def scan_function_ids(plane: ControlPlane, *, limit: int) -> tuple[list[str], bool]:
    """Up to ``limit`` function ids (``qualname:digest``) of the function table, sorted; and whether more exist."""
    prefix = plane.keys.prefix + "fn:"
    ids: list[str] = []
    truncated = False
    with plane._guard():
        for raw in plane.client.scan_iter(match=_glob_escape(prefix) + "*", count=_SCAN_BATCH):
            if len(ids) >= limit:
                truncated = True
                break
            ids.append(_unpart(_text(raw)[len(prefix) :]))
    return sorted(ids), truncated


def get_actors(plane: ControlPlane, actor_ids: list[str]) -> list[ActorRecord]:
    """The records of ``actor_ids`` in one pipelined round trip, in the given order (missing ones skipped)."""
    if not actor_ids:
        return []
    with plane._guard():
        pipe = plane.client.pipeline(transaction=False)
        for actor_id in actor_ids:
            pipe.hgetall(plane.keys.actor(actor_id))
        raws = pipe.execute()
    return [_actor_record(actor_id, raw) for actor_id, raw in zip(actor_ids, raws) if raw]


def _actor_record(actor_id: str, raw: Mapping[bytes | str, bytes | str]) -> ActorRecord:
    f = _decode_hash(raw)
    return ActorRecord(
        actor_id=actor_id,
        state=f["state"],
        node=f.get("node") or None,
        worker=f.get("worker") or None,
        name=f.get("name") or None,
        namespace=f.get("namespace", ""),
        restarts=int(f.get("restarts") or 0),
    )


def _read_hashes(plane: ControlPlane, keys: list[str], prefix_len: int) -> list[tuple[str, dict[str, str]]]:
    if not keys:
        return []
    pipe = plane.client.pipeline(transaction=False)
    for key in keys:
        pipe.hgetall(key)
    raws = pipe.execute()
    return [(_unpart(key[prefix_len:]), _decode_hash(raw)) for key, raw in zip(keys, raws) if raw]


def _unpart(text: str) -> str:
    """The inverse of ``_part``."""
    return text.replace("%3A", ":").replace("%25", "%")


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a SCAN MATCH pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)
