"""``detray simulate``: scenario files that run a program on the simulator.

A scenario (YAML, see ``docs/scenarios.md``) names a cluster, a workload
script, task durations, faults and expectations. ``load.load`` validates it
(errors name the file and line), ``run.run_scenario`` runs it, ``report``
summarizes the run, ``chrome_trace`` writes it for Perfetto, and
``run.check_determinism`` runs it again in a fresh process to compare traces.

Modules: ``schema`` (the JSON Schema), ``load`` (YAML -> ``Scenario``),
``model`` (the ``Scenario`` and its mapping onto ``detray.sim``), ``run``,
``expect`` (judging the run), ``analysis`` (reading the trace back),
``report``, ``chrome_trace``, ``progress``.
"""

from __future__ import annotations

from detray.scenario.load import ScenarioError, load
from detray.scenario.model import Scenario

__all__ = ["Scenario", "ScenarioError", "load"]
