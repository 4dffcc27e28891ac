"""The driver's per-task fast paths give what the general code gives: ``typed_refs``
(a submission's return refs) against ``ObjectRef(...)``, and a blocked ``get`` of many
results (shared ``None`` results, plain values and errors mixed) against ``value_for``."""

from __future__ import annotations

import pytest

import detray as ray
import detray.sim
from detray.core.ids import ObjectID, WorkerID
from detray.object_ref import ObjectRef, typed_refs


@ray.remote
def echo(x):
    return x


@ray.remote
def fail():
    raise ValueError("boom")


def test_typed_refs_match_the_constructor_and_count_the_same() -> None:
    ray.init(mode="sim")
    cluster = detray.sim.current_cluster()
    ledger = cluster.ledger
    ids = (ObjectID("t.r1"), ObjectID("t.r2"))
    owner = WorkerID("n/driver")
    fast = typed_refs(ids, owner)
    fast_changes = list(ledger.refs)
    ledger.refs.clear()
    slow = [ObjectRef(obj, owner) for obj in ids]
    assert list(ledger.refs) == fast_changes
    ledger.refs.clear()
    for a, b in zip(fast, slow):
        assert (a.id, a.owner, a._runtime, a._token) == (b.id, b.owner, b._runtime, b._token)
        assert a == b and hash(a) == hash(b)
    del fast, slow
    ledger.refs.clear()


def test_a_blocked_get_of_mixed_results_reads_like_value_for() -> None:
    ray.init(mode="sim", num_cpus=2)
    refs = [echo.remote(None), echo.remote(3), echo.remote([None]), echo.remote(None)]
    assert ray.get(refs) == [None, 3, [None], None]
    with_error = [echo.remote(None), fail.remote(), echo.remote("x")]
    with pytest.raises(ValueError, match="boom"):
        ray.get(with_error)
    assert ray.get([with_error[0], with_error[2], with_error[0]]) == [None, "x", None]
