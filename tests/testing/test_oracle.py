"""The lineage oracle and the harness: faulty runs against a fault-free reference."""

from __future__ import annotations

import pytest

import detray
import detray.testing as dt
from detray.sim import faults as F

CLUSTER = {"nodes": [{"count": 1, "resources": {"CPU": 2}}, {"count": 3, "resources": {"CPU": 2}}]}


@detray.remote
def square(x: int) -> int:
    import time

    time.sleep(0.1)
    return x * x


@detray.remote
def total(*parts: int) -> int:
    return sum(parts)


def tree() -> int:
    return detray.get(total.remote(*[square.remote(i) for i in range(12)]))


def test_values_rebuilt_after_a_node_kill_agree_with_the_reference() -> None:
    ref = dt.reference(tree)
    outcome = dt.run(tree, cluster=CLUSTER, faults=[F.KillNode(at_s=0.15, node=2)], seed=3)
    assert outcome.faults_injected["KillNode"] == 1
    assert outcome.result == ref.result == sum(i * i for i in range(12))
    assert set(outcome.values) == set(ref.values)  # the same object ids in both runs
    dt.check(outcome, ref, program=tree)


_drift = [0]


@detray.remote
def leaky(x: int) -> int:
    _drift[0] += 1  # state outside the task: the value depends on how often it ran
    return x + _drift[0]


def leaky_program() -> int:
    return detray.get(leaky.remote(1))


def test_a_value_that_differs_from_the_reference_is_reported_with_a_replay() -> None:
    ref = dt.reference(leaky_program)
    outcome = dt.run(leaky_program, cluster=CLUSTER, seed=1)
    with pytest.raises(dt.OracleError) as caught:
        dt.check(outcome, ref, program=leaky_program)
    message = str(caught.value)
    assert "but the reference run got" in message
    assert "workload: {function: 'test_oracle:leaky_program'}" in message or "leaky_program" in message


def test_an_error_the_faults_explain_is_accepted_and_one_they_do_not_is_not() -> None:
    ref = dt.reference(tree)
    lost = dt.Outcome(result=None, error=detray.exceptions.ObjectLostError("00ab.p1"), values={},
                      cluster=CLUSTER, faults=(), seed=0)
    with pytest.raises(dt.OracleError, match="which no injected fault explains"):
        dt.check(lost, ref)
    lost.faults_injected["KillNode"] = 1
    dt.check(lost, ref)  # a put's copies lost to a node kill: explained
    rebuildable = dt.Outcome(result=None, error=detray.exceptions.ObjectLostError("00ab.r1"), values={},
                             cluster=CLUSTER, faults=(), seed=0, rebuildable={"00ab.r1"})
    rebuildable.faults_injected["KillNode"] = 1
    with pytest.raises(dt.OracleError):
        dt.check(rebuildable, ref)  # it had lineage: detray should have rebuilt it


@detray.remote(max_restarts=1, max_task_retries=-1)
class Doubler:
    def double(self, x: int) -> int:
        import time

        time.sleep(0.2)
        return 2 * x


def actor_program() -> list[int]:
    doubler = Doubler.remote()
    return [detray.get(doubler.double.remote(i)) for i in range(10)]


def _kill_the_doubler(at_s: float) -> list[F.Fault]:
    return [F.KillWorker(at_s=at_s, node=n, task_name="Doubler.double") for n in range(4)]


def test_actor_death_is_explained_only_after_its_restarts_are_spent() -> None:
    ref = dt.reference(actor_program)
    once = dt.run(actor_program, cluster=CLUSTER, seed=0, faults=_kill_the_doubler(0.3))
    assert once.recovery["actor restarts"] == 1 and once.actors_dead_after_restarts == 0
    assert once.error is None and once.result == ref.result  # restarted, the call retried
    dt.check(once, ref, program=actor_program)
    once.error = detray.exceptions.ActorDiedError()
    with pytest.raises(dt.OracleError, match="no injected fault explains"):
        dt.check(once, ref, program=actor_program)  # a restart left, so a death is not explained
    twice = dt.run(actor_program, cluster=CLUSTER, seed=0, faults=_kill_the_doubler(0.3) + _kill_the_doubler(0.5))
    assert isinstance(twice.error, detray.exceptions.RayActorError)
    assert twice.actors_dead_after_restarts == 1
    dt.check(twice, ref, program=actor_program)


def test_run_refuses_to_start_inside_a_running_cluster() -> None:
    detray.init(mode="sim", seed=0)
    try:
        with pytest.raises(RuntimeError, match="call detray.shutdown"):
            dt.run(tree)
    finally:
        detray.shutdown()


def test_values_equal_understands_arrays_in_containers() -> None:
    import numpy as np

    assert dt.values_equal({"a": [np.arange(3)]}, {"a": [np.arange(3)]})
    assert not dt.values_equal({"a": [np.arange(3)]}, {"a": [np.arange(4)]})
    assert not dt.values_equal((1, 2), [1, 2])
