"""Records the simulator's hot paths build without their dataclass ``__init__``
(for speed) are the very records ``__init__`` builds."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from detray.core import specs
from detray.core.ids import JobID, ObjectID, TaskID, WorkerID
from detray.options import task_options, task_spec
from detray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"num_cpus": 2, "num_gpus": 1, "resources": {"custom": 3}, "memory": 1024},
        {"num_cpus": 0, "max_retries": 7, "retry_exceptions": True, "name": "renamed"},
        {"retry_exceptions": [ValueError, KeyError], "num_returns": 3},
        {"scheduling_strategy": "SPREAD"},
        {"scheduling_strategy": NodeAffinitySchedulingStrategy("node-00001", soft=True)},
    ],
)
def test_task_spec_is_what_the_dataclass_builds(options: dict[str, Any]) -> None:
    normal = task_options("module.f", options)
    ids: dict[str, Any] = {
        "task_id": TaskID("ffffffff00000001a3f2"),
        "job_id": JobID("00000001"),
        "owner": WorkerID("node-00000/driver"),
        "args": (ObjectID("o1"), ObjectID("o2")),
        "return_ids": (ObjectID("r1"),),
    }
    fast = task_spec(normal, **ids)
    slow = specs.TaskSpec(
        name=normal.name,
        kind=specs.TaskKind.NORMAL,
        resources=normal.resources,
        strategy=normal.strategy,
        max_retries=normal.max_retries,
        retry_exceptions=normal.retry_exceptions,
        **ids,
    )
    assert type(fast) is specs.TaskSpec
    for field in dataclasses.fields(specs.TaskSpec):  # placement too (compare=False)
        assert getattr(fast, field.name) == getattr(slow, field.name), field.name
    assert fast == slow and repr(fast) == repr(slow)
    assert pickle.loads(pickle.dumps(fast)) == slow
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.name = "changed"  # type: ignore[misc]
