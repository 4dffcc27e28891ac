"""``records.builder``: the same record as the class's own constructor, faster."""

from __future__ import annotations

import pickle

import pytest

from detray.core import commands as C
from detray.core import events as E
from detray.core.policy import PlacementRequest
from detray.core.records import builder
from detray.core.specs import TaskSpec


def test_a_built_record_equals_the_constructed_one() -> None:
    build = builder(C.DeleteCopy, "stimulus_id", "obj", "node", "reason")
    built = build("s1", "o1", "n1", "freed")
    made = C.DeleteCopy(stimulus_id="s1", obj="o1", node="n1", reason="freed")
    assert built == made and repr(built) == repr(made) and type(built) is C.DeleteCopy
    assert pickle.loads(pickle.dumps(built)) == made


def test_fields_are_set_in_the_order_named_and_the_record_stays_frozen() -> None:
    build = builder(E.ObjectFreed, "obj", "now", "stimulus_id")
    built = build("o1", 2.5, "s1")
    assert built == E.ObjectFreed(now=2.5, stimulus_id="s1", obj="o1")
    with pytest.raises(AttributeError):
        built.obj = "o2"  # type: ignore[misc]


def test_positional_records_are_built_too() -> None:
    spec = TaskSpec(task_id="t", job_id="j", owner="w", name="f")
    build = builder(PlacementRequest, "spec", "hops", "arg_bytes_by_node", "spill_only")
    assert build(spec, 1, (), True) == PlacementRequest(spec, 1, (), True)


def test_every_field_must_be_named_once() -> None:
    with pytest.raises(AssertionError):
        builder(C.DeleteCopy, "stimulus_id", "obj", "node")
    with pytest.raises(AssertionError):
        builder(C.DeleteCopy, "stimulus_id", "obj", "node", "node")
