"""The virtual network: fair bandwidth, latency, partitions, node failures, the failure detector.

Numbers are chosen so results are exact: bandwidth 1 byte/s (or 100), latency 1 s.
Every test steps the environment through ``run_checked``, which cross-checks
the network's indexes after every event.
"""

from __future__ import annotations

import pytest
import simpy
from hypothesis import given, settings
from hypothesis import strategies as st

from detray.sim.network import Message, MessageState, Network, PartitionMode

A, B, C, D = "node-00000", "node-00001", "node-00002", "node-00003"


class Log:
    """Records every callback as (kind, virtual time, payload)."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self.events: list[tuple[str, float, object]] = []

    def delivered(self, message: Message) -> None:
        self.events.append(("delivered", self.env.now, message.payload))

    def dropped(self, message: Message) -> None:
        self.events.append(("dropped", self.env.now, message.payload))

    def failed(self, message: Message) -> None:
        self.events.append(("failed", self.env.now, message.payload))

    def suspected(self, node: str) -> None:
        self.events.append(("suspected", self.env.now, node))

    def times(self, kind: str = "delivered") -> dict[object, float]:
        return {payload: t for k, t, payload in self.events if k == kind}


def make(
    *, latency_s: float = 1.0, bandwidth: float = 1.0, mode: str = "hold"
) -> tuple[simpy.Environment, Network, Log]:
    env = simpy.Environment()
    net = Network(env, latency_s=latency_s, bandwidth_bytes_per_s=bandwidth, partition_mode=mode, head=A)
    return env, net, Log(env)


def send(net: Network, log: Log, src: str, dst: str, size: int, payload: object) -> Message:
    return net.send(src, dst, size, payload, log.delivered, on_dropped=log.dropped, on_failed=log.failed)


def at(env: simpy.Environment, time_s: float, action) -> None:  # type: ignore[no-untyped-def]
    timer = env.timeout(time_s - env.now)
    timer.callbacks.append(lambda _event: action())


def run_checked(env: simpy.Environment, net: Network, until: float = 1e9) -> None:
    net.check_invariants()
    while env.peek() <= until:
        env.step()
        net.check_invariants()


# --- latency and bandwidth -------------------------------------------------------------------


def test_a_message_arrives_after_its_transfer_time_plus_latency() -> None:
    env, net, log = make(bandwidth=100.0)
    send(net, log, A, B, 500, "m")
    run_checked(env, net)
    assert log.events == [("delivered", 6.0, "m")]
    assert (net.stats.messages, net.stats.bytes_moved) == (1, 500)


def test_a_control_message_of_size_zero_costs_only_latency() -> None:
    env, net, log = make(bandwidth=1.0)
    send(net, log, A, B, 0, "ping")
    run_checked(env, net)
    assert log.times() == {"ping": 1.0}


def test_a_message_to_itself_is_a_free_local_hand_off() -> None:
    env, net, log = make(bandwidth=1.0)
    send(net, log, B, B, 1000, "local")
    run_checked(env, net)
    assert log.times() == {"local": 0.0}


def test_concurrent_transfers_on_one_link_share_its_bandwidth_equally() -> None:
    env, net, log = make(bandwidth=1.0)
    send(net, log, A, B, 100, "first")
    at(env, 50.0, lambda: send(net, log, A, B, 100, "second"))
    run_checked(env, net)
    # 0..50: first alone gets 50 bytes; then each gets 0.5 byte/s: first needs
    # 100 s for its last 50 (ends 150), second then has 50 left alone (ends 200).
    assert log.times() == {"first": 151.0, "second": 201.0}


def test_equal_transfers_started_together_finish_together_in_send_order() -> None:
    env, net, log = make(bandwidth=10.0)
    for name in ("x", "y", "z"):
        send(net, log, A, B, 10, name)
    run_checked(env, net)
    assert [(t, p) for _k, t, p in log.events] == [(4.0, "x"), (4.0, "y"), (4.0, "z")]


def test_links_are_directed_and_independent() -> None:
    env, net, log = make(bandwidth=1.0)
    send(net, log, A, B, 10, "a->b")
    send(net, log, B, A, 10, "b->a")
    send(net, log, A, C, 10, "a->c")
    run_checked(env, net)
    assert log.times() == {"a->b": 11.0, "b->a": 11.0, "a->c": 11.0}


def test_set_link_overrides_latency_and_bandwidth_of_one_link() -> None:
    env, net, log = make(bandwidth=1.0)
    net.set_link(A, B, latency_s=0.5, bandwidth_bytes_per_s=10.0)
    send(net, log, A, B, 10, "fast")
    send(net, log, B, A, 10, "normal")
    run_checked(env, net)
    assert log.times() == {"fast": 1.5, "normal": 11.0}


def test_a_link_used_before_takes_new_properties_set_while_it_was_idle() -> None:
    env, net, log = make(bandwidth=1.0)
    send(net, log, A, B, 10, "before")
    run_checked(env, net)  # A->B busy then idle (kept for reuse)
    net.set_link(A, B, latency_s=0.5, bandwidth_bytes_per_s=10.0)
    at(env, 20.0, lambda: send(net, log, A, B, 10, "after set_link"))
    at(env, 30.0, lambda: net.set_node_slowdown(B, 4.0))
    at(env, 40.0, lambda: send(net, log, A, B, 10, "after slowdown"))
    run_checked(env, net)
    assert log.times() == {"before": 11.0, "after set_link": 21.5, "after slowdown": 44.5}


def test_a_slow_node_stretches_transfers_on_links_touching_it() -> None:
    env, net, log = make(bandwidth=1.0)
    net.set_node_slowdown(B, 2.0)
    send(net, log, A, B, 10, "to slow")
    send(net, log, C, A, 10, "elsewhere")
    send(net, log, A, B, 0, "control")  # latency is not slowed
    run_checked(env, net)
    assert log.times() == {"to slow": 21.0, "elsewhere": 11.0, "control": 1.0}


def test_a_slowdown_applies_from_the_moment_it_is_set() -> None:
    env, net, log = make(bandwidth=1.0)
    send(net, log, A, B, 100, "m")
    at(env, 40.0, lambda: net.set_node_slowdown(A, 4.0))  # 60 bytes left at 0.25 byte/s
    at(env, 200.0, lambda: net.set_node_slowdown(A, 1.0))
    run_checked(env, net)
    # 40 + 60 / 0.25 = 280 > 200: from 200 the last (60 - 160 * 0.25) = 20 bytes go at 1 byte/s.
    assert log.times() == {"m": 221.0}


def _processor_sharing_reference(arrivals: list[tuple[float, int]], bandwidth: float) -> list[float]:
    """Finish times on one link, computed the slow, obvious way (a tiny model to compare against)."""
    remaining: dict[int, float] = {}
    finish = [0.0] * len(arrivals)
    order = sorted(range(len(arrivals)), key=lambda i: (arrivals[i][0], i))
    now, next_arrival = 0.0, 0
    while next_arrival < len(order) or remaining:
        arrival_t = arrivals[order[next_arrival]][0] if next_arrival < len(order) else float("inf")
        if remaining:
            rate = bandwidth / len(remaining)
            done_t = now + min(remaining.values()) / rate
        else:
            rate, done_t = 0.0, float("inf")
        step_t = min(arrival_t, done_t)
        for i in remaining:
            remaining[i] -= (step_t - now) * rate
        now = step_t
        for i in [i for i, left in remaining.items() if left <= 1e-9]:
            finish[i] = now
            del remaining[i]
        if arrival_t <= now:
            i = order[next_arrival]
            next_arrival += 1
            if arrivals[i][1] == 0:
                finish[i] = now
            else:
                remaining[i] = float(arrivals[i][1])
    return finish


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 60)), min_size=1, max_size=12))
def test_fair_sharing_matches_a_processor_sharing_model(arrivals: list[tuple[int, int]]) -> None:
    env, net, log = make(latency_s=0.0, bandwidth=3.0)
    for index, (start_s, size) in enumerate(arrivals):
        at(env, float(start_s), lambda i=index, size=size: send(net, log, A, B, size, i))
    run_checked(env, net)
    expected = _processor_sharing_reference([(float(t), n) for t, n in arrivals], 3.0)
    got = log.times()
    for index in range(len(arrivals)):
        assert got[index] == pytest.approx(expected[index], rel=1e-9, abs=1e-9), (index, arrivals)


# --- partitions ------------------------------------------------------------------------------


def test_unlisted_nodes_form_one_more_group() -> None:
    _env, net, _log = make()
    net.partition([[D]])
    assert not net.connected(D, A) and not net.connected(D, B)
    assert net.connected(A, B) and net.connected(B, C)
    net.partition([[A, B], [C]])
    assert net.connected(A, B)
    assert not net.connected(A, C) and not net.connected(C, D) and not net.connected(A, D)
    net.heal()
    assert net.connected(A, D) and net.connected(C, D)


def test_a_node_cannot_be_in_two_groups() -> None:
    _env, net, _log = make()
    with pytest.raises(ValueError, match="two partition groups"):
        net.partition([[A, B], [B]])


def test_hold_mode_delivers_messages_sent_across_a_partition_after_heal() -> None:
    env, net, log = make(mode="hold")
    net.partition([[A], [B]])
    send(net, log, A, B, 0, "held")
    send(net, log, C, D, 0, "unaffected")
    at(env, 10.0, net.heal)
    run_checked(env, net)
    assert log.times() == {"unaffected": 1.0, "held": 11.0}
    assert net.stats.held == 1 and net.held_now == 0


def test_drop_mode_drops_messages_sent_across_a_partition() -> None:
    env, net, log = make(mode="drop")
    net.partition([[A], [B]])
    message = send(net, log, A, B, 10, "lost")
    assert log.events == []  # callbacks never run inside send
    run_checked(env, net)
    assert log.events == [("dropped", 0.0, "lost")]
    assert message.state is MessageState.DROPPED and message.reason == "partitioned"
    assert net.stats.dropped == 1 and net.stats.messages == 0


def test_hold_mode_stalls_an_in_flight_transfer_and_resumes_it_with_the_bytes_left() -> None:
    env, net, log = make(mode="hold", bandwidth=1.0)
    send(net, log, A, B, 100, "big")
    at(env, 30.0, lambda: net.partition([[A], [B]]))
    at(env, 80.0, net.heal)
    run_checked(env, net)
    assert log.times() == {"big": 30.0 + 50.0 + 70.0 + 1.0}


def test_drop_mode_fails_an_in_flight_transfer_when_a_partition_starts() -> None:
    env, net, log = make(mode="drop", bandwidth=1.0)
    send(net, log, A, B, 100, "big")
    send(net, log, A, C, 100, "other side ok")
    at(env, 30.0, lambda: net.partition([[A, C], [B]]))
    run_checked(env, net)
    assert log.events == [("dropped", 30.0, "big"), ("delivered", 101.0, "other side ok")]


def test_a_stalled_transfer_frees_its_share_of_the_link_for_the_others() -> None:
    env, net, log = make(mode="hold", bandwidth=1.0)
    send(net, log, A, B, 100, "x")
    send(net, log, A, B, 100, "y")
    at(env, 20.0, lambda: net.partition([[A], [B]]))  # each has 90 left
    at(env, 30.0, net.heal)
    run_checked(env, net)
    assert log.times() == {"x": 30.0 + 180.0 + 1.0, "y": 211.0}


def test_a_partition_that_starts_and_ends_during_propagation_does_not_touch_the_message() -> None:
    env, net, log = make(mode="drop", latency_s=10.0)
    send(net, log, A, B, 0, "m")
    at(env, 2.0, lambda: net.partition([[A], [B]]))
    at(env, 5.0, net.heal)
    run_checked(env, net)
    assert log.times() == {"m": 10.0}


def test_a_message_arriving_during_a_partition_is_held_until_heal_then_propagates_again() -> None:
    env, net, log = make(mode="hold", latency_s=10.0)
    send(net, log, A, B, 0, "m")
    at(env, 2.0, lambda: net.partition([[A], [B]]))
    at(env, 25.0, net.heal)
    run_checked(env, net)
    assert log.times() == {"m": 35.0}


def test_a_new_partition_that_reconnects_endpoints_releases_their_held_messages() -> None:
    env, net, log = make(mode="hold")
    net.partition([[A], [B, C]])
    send(net, log, A, B, 0, "a->b")
    send(net, log, A, C, 0, "a->c")
    at(env, 5.0, lambda: net.partition([[A, B], [C]]))
    at(env, 9.0, net.heal)
    run_checked(env, net)
    assert log.times() == {"a->b": 6.0, "a->c": 10.0}


def test_held_messages_resume_in_send_order() -> None:
    env, net, log = make(mode="hold", latency_s=1.0, bandwidth=1.0)
    net.partition([[A], [B]])
    for name in ("1", "2", "3"):
        send(net, log, A, B, 0, name)
    at(env, 4.0, net.heal)
    run_checked(env, net)
    assert [p for _k, _t, p in log.events] == ["1", "2", "3"]


# --- node failures ---------------------------------------------------------------------------


def test_node_down_fails_every_message_to_or_from_it_and_spares_the_rest() -> None:
    env, net, log = make(mode="hold", bandwidth=1.0)
    send(net, log, A, B, 100, "transferring to B")
    send(net, log, B, C, 0, "propagating from B")
    net.partition([[D]])
    send(net, log, D, B, 0, "held for B")
    send(net, log, A, C, 10, "bystander")
    at(env, 0.5, lambda: net.node_down(B))
    run_checked(env, net)
    assert log.events == [
        ("failed", 0.5, "transferring to B"),
        ("failed", 0.5, "propagating from B"),
        ("failed", 0.5, "held for B"),
        ("delivered", 11.0, "bystander"),
    ]
    assert net.stats.failed == 3


def test_sending_to_or_from_a_down_node_fails_later_never_inside_send() -> None:
    env, net, log = make()
    net.node_down(C)
    to_c = send(net, log, A, C, 10, "to")
    send(net, log, C, A, 10, "from")
    assert log.events == []
    run_checked(env, net)
    assert log.events == [("failed", 0.0, "to"), ("failed", 0.0, "from")]
    assert to_c.reason == f"node_down:{C}"
    net.node_up(C)
    send(net, log, A, C, 0, "again")
    run_checked(env, net)
    assert log.events[-1] == ("delivered", 1.0, "again")


def test_a_node_going_down_leaves_transfers_elsewhere_on_schedule() -> None:
    env, net, log = make(bandwidth=1.0)
    send(net, log, A, B, 100, "x")
    send(net, log, A, B, 100, "y")
    send(net, log, C, D, 10, "doomed")
    at(env, 5.0, lambda: net.node_down(D))
    run_checked(env, net)
    assert log.events == [("failed", 5.0, "doomed"), ("delivered", 201.0, "x"), ("delivered", 201.0, "y")]


# --- the failure detector ------------------------------------------------------------------


def test_watch_fires_once_a_down_node_stays_down_for_the_timeout() -> None:
    env, net, log = make()
    net.watch(B, 10.0, log.suspected)
    at(env, 5.0, lambda: net.node_down(B))
    at(env, 30.0, lambda: net.node_up(B))
    at(env, 40.0, lambda: net.node_down(B))
    run_checked(env, net)
    assert log.events == [("suspected", 15.0, B)]


def test_watch_does_not_fire_if_the_node_recovers_within_the_timeout() -> None:
    env, net, log = make()
    w = net.watch(B, 10.0, log.suspected)
    at(env, 5.0, lambda: net.node_down(B))
    at(env, 12.0, lambda: net.node_up(B))
    at(env, 13.0, lambda: net.partition([[B]]))
    at(env, 20.0, net.heal)  # 7 s < 10 s
    run_checked(env, net)
    assert log.events == [] and not w.fired


def test_watch_fires_for_a_node_cut_off_from_the_head_but_not_for_one_on_its_side() -> None:
    env, net, log = make()
    net.watch(B, 10.0, log.suspected)
    net.watch(C, 10.0, log.suspected)
    at(env, 1.0, lambda: net.partition([[A, C], [B]]))
    run_checked(env, net)
    assert log.events == [("suspected", 11.0, B)]


def test_watch_starts_its_timer_at_once_for_a_node_already_unreachable_and_can_be_cancelled() -> None:
    env, net, log = make()
    net.node_down(C)
    net.node_down(D)
    net.watch(C, 3.0, log.suspected)
    cancelled = net.watch(D, 3.0, log.suspected)
    cancelled.cancel()
    run_checked(env, net)
    assert log.events == [("suspected", 3.0, C)] and not cancelled.fired


def test_a_timer_is_restarted_each_time_the_node_becomes_unreachable_again() -> None:
    env, net, log = make()
    net.watch(B, 10.0, log.suspected)
    at(env, 0.0, lambda: net.partition([[B]]))
    at(env, 8.0, net.heal)
    at(env, 9.0, lambda: net.partition([[B]]))
    run_checked(env, net)
    assert log.events == [("suspected", 19.0, B)]


# --- cost and determinism ------------------------------------------------------------------


def test_nodes_cost_nothing_until_they_send() -> None:
    env, net, log = make()
    for index in range(10_000):
        net.watch(f"node-{index:05d}", 1.0, log.suspected)
    assert len(env._queue) == 0  # no per-node process or heartbeat
    send(net, log, A, B, 10, "one")
    steps = 0
    while env.peek() < float("inf"):
        env.step()
        steps += 1
    assert steps <= 3 and log.times() == {"one": 11.0}


def test_events_grow_with_transfers_not_with_nodes() -> None:
    env, net, log = make(bandwidth=1000.0)
    messages = 200
    for index in range(messages):
        send(net, log, f"node-{index:05d}", f"node-{index + 50_000:05d}", 1000, index)
    steps = 0
    while env.peek() < float("inf"):
        env.step()
        steps += 1
    assert len(log.events) == messages
    assert steps <= 2 * messages


def _scenario(seed_order: list[int]) -> list[tuple[str, float, object]]:
    env, net, log = make(mode="hold", bandwidth=7.0, latency_s=0.3)
    nodes = [A, B, C, D]
    for i in seed_order:
        src, dst = nodes[i % 4], nodes[(i * 3 + 1) % 4]
        at(env, (i % 5) * 0.7, lambda s=src, d=dst, i=i: send(net, log, s, d, (i * 37) % 50, i))
    at(env, 2.0, lambda: net.partition([[A, B]]))
    at(env, 3.0, lambda: net.set_node_slowdown(C, 3.0))
    at(env, 6.0, net.heal)
    at(env, 7.0, lambda: net.node_down(D))
    run_checked(env, net)
    return log.events


def test_the_same_sends_give_the_same_outcomes_every_run() -> None:
    order = list(range(40))
    first = _scenario(order)
    assert first == _scenario(order)
    assert len(first) == 40


def test_bad_arguments_are_refused() -> None:
    env = simpy.Environment()
    with pytest.raises(ValueError):
        Network(env, bandwidth_bytes_per_s=0.0)
    with pytest.raises(ValueError):
        Network(env, latency_s=-1.0)
    with pytest.raises(ValueError):
        Network(env, partition_mode="sometimes")
    net = Network(env)
    assert net.partition_mode is PartitionMode.HOLD
    with pytest.raises(ValueError):
        net.send(A, B, -1, None, None)
    with pytest.raises(ValueError):
        net.set_node_slowdown(A, 0.0)
