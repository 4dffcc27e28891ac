"""The control plane client on fakeredis: tables, name claims, pub/sub, write-behind, failures."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from detray import controlplane
from detray.controlplane import (
    KEY_LAYOUT,
    ActorRecord,
    ChannelMessage,
    ControlPlane,
    ControlPlaneUnavailable,
    NodeRecord,
    ObjectRecord,
    TaskRecordWriter,
    connect,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def plane(server: fakeredis.FakeServer) -> ControlPlane:
    return ControlPlane(fakeredis.FakeRedis(server=server), "c1")


def other_client(server: fakeredis.FakeServer) -> ControlPlane:
    """A second process's view of the same cluster (another connection, same server)."""
    return ControlPlane(fakeredis.FakeStrictRedis(server=server), "c1")


# --- tables ----------------------------------------------------------------------------------


def test_a_function_is_written_once_and_read_back_as_bytes(plane: ControlPlane, server: Any) -> None:
    payload = b"\x80\x05cloudpickled\x00bytes"
    assert plane.register_function("f1", payload) is True
    assert other_client(server).register_function("f1", b"something else") is False
    assert other_client(server).get_function("f1") == payload
    assert plane.get_function("missing") is None


def test_node_records_round_trip_sorted_by_id(plane: ControlPlane, server: Any) -> None:
    second = NodeRecord(node_id="node-00002", incarnation=1, resources={"CPU": 2.0}, state="ALIVE")
    first = NodeRecord(
        node_id="node-00001", incarnation=3, resources={"CPU": 8.0, "GPU": 1.0, "custom": 0.5},
        state="ALIVE", address="10.0.0.1:7000",
    )
    plane.put_node(second)
    plane.put_node(first)
    assert other_client(server).get_nodes() == [first, second]
    dead = NodeRecord(node_id="node-00002", incarnation=1, resources={"CPU": 2.0}, state="DEAD")
    plane.put_node(dead)
    assert plane.get_node("node-00002") == dead
    assert plane.get_node("node-00009") is None


def test_nodes_written_together_are_each_recorded_and_announced_in_order(
    plane: ControlPlane, server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(controlplane, "_NODES_PER_ROUND_TRIP", 2)  # 5 records cross two batch edges
    records = [
        NodeRecord(node_id=f"node-{index:05d}", incarnation=1, resources={"CPU": float(index)}, state="ALIVE")
        for index in (3, 0, 4, 1, 2)
    ]
    subscription = other_client(server).subscribe(["nodes"])
    plane.put_nodes(records)
    assert other_client(server).get_nodes() == sorted(records, key=lambda record: record.node_id)
    assert [message.data["node"] for message in subscription.drain()] == [record.node_id for record in records]
    plane.put_nodes([])  # nothing to write: no error, no message
    assert subscription.drain() == []
    subscription.close()


def test_actor_records_round_trip_with_absent_fields(plane: ControlPlane) -> None:
    pending = ActorRecord(actor_id="Aabc", state="PENDING_CREATION", name="counter", namespace="ns")
    plane.put_actor(pending)
    assert plane.get_actor("Aabc") == pending
    alive = ActorRecord(
        actor_id="Aabc", state="ALIVE", node="node-00001", worker="node-00001/w00002",
        name="counter", namespace="ns", restarts=2,
    )
    plane.put_actor(alive)
    assert plane.get_actor("Aabc") == alive
    assert plane.get_actor("Anone") is None
    assert plane.get_actor_ids() == ["Aabc"]


def test_object_locations_add_remove_and_read(plane: ControlPlane) -> None:
    plane.put_object("t1.r1", 1_000_000, "node-00000/w00001")
    plane.add_object_location("t1.r1", "node-00002")
    plane.add_object_location("t1.r1", "node-00001")
    plane.add_object_location("t1.r1", "node-00001")
    assert plane.get_object_locations("t1.r1") == ["node-00001", "node-00002"]
    plane.remove_object_location("t1.r1", "node-00002")
    assert plane.get_object("t1.r1") == ObjectRecord(
        object_id="t1.r1", size_bytes=1_000_000, owner="node-00000/w00001", locations=("node-00001",)
    )
    plane.delete_object("t1.r1")
    assert plane.get_object("t1.r1") is None and plane.get_object_locations("t1.r1") == []


def test_keys_follow_the_documented_layout_and_escape_separators(plane: ControlPlane, server: Any) -> None:
    plane.register_function("f1", b"x")
    plane.put_node(NodeRecord(node_id="node-00001", incarnation=1, resources={}, state="ALIVE"))
    plane.put_actor(ActorRecord(actor_id="A1", state="ALIVE"))
    plane.claim_actor_name("team:a", "x:y%", "A1")
    plane.put_object("o1", 1, "w")
    plane.add_object_location("o1", "node-00001")
    writer = TaskRecordWriter(plane)
    writer.record("t1", {"state": "FINISHED"}, now=0.0)
    writer.flush()
    raw = fakeredis.FakeRedis(server=server)
    assert sorted(k.decode() for k in raw.keys("*")) == [
        "detray:c1:actor:A1",
        "detray:c1:actor_name:team%3Aa:x%3Ay%25",
        "detray:c1:actors",
        "detray:c1:fn:f1",
        "detray:c1:node:node-00001",
        "detray:c1:nodes",
        "detray:c1:obj:o1",
        "detray:c1:obj_loc:o1",
        "detray:c1:task:t1",
    ]
    assert raw.hgetall("detray:c1:node:node-00001") == {
        b"incarnation": b"1", b"resources": b"{}", b"state": b"ALIVE", b"address": b"",
    }


def test_clusters_sharing_a_server_do_not_see_each_other(server: Any) -> None:
    one = ControlPlane(fakeredis.FakeRedis(server=server), "one")
    two = ControlPlane(fakeredis.FakeRedis(server=server), "two")
    one.put_node(NodeRecord(node_id="node-00000", incarnation=1, resources={}, state="ALIVE"))
    assert two.get_nodes() == [] and two.lookup_actor_name("", "x") is None


# --- actor names -----------------------------------------------------------------------------


def test_a_name_claim_is_exclusive_and_idempotent(plane: ControlPlane, server: Any) -> None:
    rival = other_client(server)
    assert plane.claim_actor_name("ns", "counter", "A1") is True
    assert rival.claim_actor_name("ns", "counter", "A2") is False
    assert plane.claim_actor_name("ns", "counter", "A1") is True  # a retried claim
    assert rival.lookup_actor_name("ns", "counter") == "A1"
    assert rival.claim_actor_name("other-ns", "counter", "A2") is True  # namespaces are apart
    assert plane.lookup_actor_name("ns", "nobody") is None


def test_only_the_holder_releases_a_name(plane: ControlPlane) -> None:
    plane.claim_actor_name("ns", "counter", "A1")
    assert plane.release_actor_name("ns", "counter", "A2") is False
    assert plane.lookup_actor_name("ns", "counter") == "A1"
    assert plane.release_actor_name("ns", "counter", "A1") is True
    assert plane.lookup_actor_name("ns", "counter") is None
    assert plane.claim_actor_name("ns", "counter", "A2") is True


# --- pub/sub ---------------------------------------------------------------------------------


def test_pubsub_delivers_table_changes_and_messages_in_order(plane: ControlPlane, server: Any) -> None:
    subscription = other_client(server).subscribe()
    assert subscription.get_message() is None
    plane.put_node(NodeRecord(node_id="node-00001", incarnation=2, resources={"CPU": 1.0}, state="ALIVE"))
    for index in range(5):
        plane.publish("objects", {"index": index})
    plane.add_object_location("o1", "node-00001")
    plane.put_actor(ActorRecord(actor_id="A1", state="ALIVE", node="node-00001"))
    messages = subscription.drain()
    assert messages == [
        ChannelMessage("nodes", {"incarnation": 2, "node": "node-00001", "state": "ALIVE"}),
        *[ChannelMessage("objects", {"index": i}) for i in range(5)],
        ChannelMessage("objects", {"node": "node-00001", "object": "o1", "op": "added"}),
        ChannelMessage("actors", {"actor": "A1", "node": "node-00001", "state": "ALIVE"}),
    ]
    assert subscription.get_message() is None
    subscription.close()


def test_a_subscription_hears_only_its_channels(plane: ControlPlane) -> None:
    subscription = plane.subscribe(["actors"])
    plane.publish("nodes", {"x": 1})
    plane.publish("actors", {"x": 2})
    assert subscription.drain() == [ChannelMessage("actors", {"x": 2})]
    with pytest.raises(ValueError, match="unknown control plane channel"):
        plane.publish("gossip", {})


def test_a_blocking_read_waits_at_most_its_timeout(plane: ControlPlane) -> None:
    subscription = plane.subscribe(["nodes"])
    started = time.monotonic()
    assert subscription.get_message(timeout_s=0.05) is None
    assert time.monotonic() - started < 2.0
    with pytest.raises(ValueError, match="finite"):
        subscription.get_message(timeout_s=float("inf"))


# --- write-behind ----------------------------------------------------------------------------


class CountingRedis(fakeredis.FakeRedis):  # type: ignore[misc]
    """Counts pipeline round trips (one ``execute`` each) and single commands."""

    executions = 0

    def pipeline(self, *args: Any, **kwargs: Any) -> Any:
        pipe = super().pipeline(*args, **kwargs)
        execute = pipe.execute
        owner = self

        def counted_execute(*a: Any, **k: Any) -> Any:
            owner.executions += 1
            return execute(*a, **k)

        pipe.execute = counted_execute
        return pipe


def test_task_records_are_written_in_one_round_trip_per_batch(server: Any) -> None:
    client = CountingRedis(server=server)
    plane = ControlPlane(client, "c1")
    writer = TaskRecordWriter(plane, max_records=100, max_lag_s=10.0)
    for index in range(250):
        writer.record(f"t{index}", {"state": "RUNNING", "attempt": 1, "node": "node-00001"}, now=0.0)
        writer.maybe_flush(now=0.0)
    assert client.executions == 2 and writer.pending == 50
    assert plane.get_task("t0") == {"state": "RUNNING", "attempt": "1", "node": "node-00001"}
    assert plane.get_task("t249") is None  # still buffered: write-behind
    assert writer.flush() == 50 and client.executions == 3
    assert plane.get_task("t249") == {"state": "RUNNING", "attempt": "1", "node": "node-00001"}
    assert (writer.stats.flushes, writer.stats.records_written, writer.stats.updates) == (3, 250, 250)
    assert writer.flush() == 0 and client.executions == 3  # nothing buffered: no round trip


def test_updates_to_one_task_coalesce_before_a_flush(plane: ControlPlane) -> None:
    writer = TaskRecordWriter(plane, max_records=10, max_lag_s=10.0)
    writer.record("t1", {"state": "SCHEDULED", "name": "f", "attempt": 1}, now=0.0)
    writer.record("t1", {"state": "RUNNING", "node": "node-00003"}, now=0.1)
    writer.record("t1", {"state": "FINISHED"}, now=0.2)
    assert writer.pending == 1
    writer.flush()
    assert plane.get_task("t1") == {"state": "FINISHED", "name": "f", "attempt": "1", "node": "node-00003"}


def test_the_write_behind_lag_is_bounded_by_the_callers_clock(server: Any) -> None:
    client = CountingRedis(server=server)
    writer = TaskRecordWriter(ControlPlane(client, "c1"), max_records=1000, max_lag_s=0.5)
    assert writer.maybe_flush(now=100.0) is False  # nothing buffered, however late
    writer.record("t1", {"state": "RUNNING"}, now=1.0)
    writer.record("t2", {"state": "RUNNING"}, now=1.3)
    assert writer.maybe_flush(now=1.49) is False and client.executions == 0
    assert writer.oldest_at_s == 1.0
    assert writer.maybe_flush(now=1.5) is True and client.executions == 1  # t1 is 0.5 s old
    assert writer.pending == 0 and writer.oldest_at_s is None
    due = writer.record("t3", {"state": "FINISHED"}, now=2.0)
    assert due is False and writer.maybe_flush(now=2.2) is False
    assert writer.record("t4", {"state": "FINISHED"}, now=2.6) is True  # t3 is now 0.6 s old


def test_task_record_fields_must_be_scalars(plane: ControlPlane) -> None:
    writer = TaskRecordWriter(plane)
    with pytest.raises(TypeError, match="'deps'"):
        writer.record("t1", {"deps": ["a", "b"]}, now=0.0)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        TaskRecordWriter(plane, max_records=0)


def test_a_failed_flush_keeps_its_records_for_the_next_one(server: Any) -> None:
    plane = ControlPlane(fakeredis.FakeRedis(server=server), "c1")
    writer = TaskRecordWriter(plane)
    writer.record("t1", {"state": "RUNNING"}, now=0.0)
    server.connected = False
    with pytest.raises(ControlPlaneUnavailable, match="fakeredis"):
        writer.flush()
    assert writer.pending == 1
    server.connected = True
    assert writer.flush() == 1 and plane.get_task("t1") == {"state": "RUNNING"}


# --- failures --------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_server_raises_a_clear_error_naming_its_address() -> None:
    port = _closed_port()
    client = redis.Redis(
        host="127.0.0.1", port=port, password="secret", socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    plane = ControlPlane(client, "c1")
    with pytest.raises(ControlPlaneUnavailable) as caught:
        plane.register_function("f1", b"x")
    message = str(caught.value)
    assert message.startswith(f"the control plane at 127.0.0.1:{port} is unreachable: ")
    assert caught.value.address == f"127.0.0.1:{port}"
    assert isinstance(caught.value, ConnectionError)


def test_connect_fails_fast_and_requires_a_password() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(ControlPlaneUnavailable, match=f"127.0.0.1:{port} is unreachable"):
        connect("127.0.0.1", port, password="secret", cluster_id="c1", connect_timeout_s=0.2)
    assert time.monotonic() - started < 2.0
    with pytest.raises(ValueError, match="password"):
        connect("127.0.0.1", port, password="", cluster_id="c1")


def test_a_client_that_decodes_responses_is_refused() -> None:
    with pytest.raises(ValueError, match="decode_responses"):
        ControlPlane(fakeredis.FakeRedis(decode_responses=True), "c1")


# --- the documentation cannot drift ----------------------------------------------------------


def test_the_key_layout_is_documented_in_the_module_and_in_docs() -> None:
    doc = (REPO / "docs" / "controlplane.md").read_text()
    module_doc = controlplane.__doc__ or ""
    for pattern, (kind, contents) in KEY_LAYOUT.items():
        assert f"| `{pattern}` | {kind} | {contents} |" in doc, pattern
        assert pattern in module_doc and contents in module_doc, pattern
