"""Fault-injection testing for detray programs: run, compare with a reference, shrink, replay.

- ``run(program, cluster=..., faults=..., seed=...) -> Outcome``: one simulated run.
- ``reference(program)`` and ``check(outcome, reference)``: the lineage oracle (values
  equal to a run without faults, or an error the injected faults explain).
- ``detray.testing.strategies``: Hypothesis strategies for clusters, fault schedules, seeds.
- ``scenario_yaml(outcome)``: a scenario file that replays a run with ``detray simulate``.
- The pytest plugin (``detray.testing.plugin``, loaded automatically): the
  ``detray_cluster`` fixture, the ``detray`` marker, ``--detray-seed(s)``.

Names load on first use, so the plugin costs pytest nothing until a test asks for detray.
See docs/testing.md.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Outcome": "detray.testing.harness",
    "run": "detray.testing.harness",
    "OracleError": "detray.testing.oracle",
    "check": "detray.testing.oracle",
    "explain": "detray.testing.oracle",
    "reference": "detray.testing.oracle",
    "values_equal": "detray.testing.oracle",
    "fault_entry": "detray.testing.replay",
    "scenario_yaml": "detray.testing.replay",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'detray.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
