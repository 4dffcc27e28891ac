"""How long a task takes in virtual time: the duration model.

Owns: parsing duration specs and drawing a duration for one attempt. A
task's body runs at the start of its virtual interval; its results appear
``duration_s`` later (plus whatever virtual time the body spent blocked or
sleeping). Must not: read the wall clock (durations never come from how long
the body really took) or draw from anything but the stream of the attempt,
``("duration", name, task_id, attempt)``, so adding a task never shifts
another's duration.

Specs, per function name (``"default"`` for the rest), in the scenario
file's form (docs/scenarios.md)::

    0.005                                        fixed, seconds
    {"fixed_s": 0.005}
    {"normal": {"mean_s": 0.1, "sd_s": 0.02}}    clipped at 0
    {"uniform": {"low_s": 0.05, "high_s": 0.2}}
    {"exponential": {"mean_s": 0.1}}

or in the engine's own form::

    {"dist": "fixed", "value": 0.005}
    {"dist": "normal", "mean": 0.1, "std": 0.02}   clipped at 0
    {"dist": "uniform", "low": 0.05, "high": 0.2}
    {"dist": "exponential", "mean": 0.1}

Names are what the trace shows: a function's qualified name (or its
``name`` option), ``Class.method`` for actor methods, ``Class.__init__`` for
actor creation. A function defined inside another is also found by its name
without the enclosing ``outer.<locals>.`` part.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from detray.sim import streams

DEFAULT_DURATION_S = 0.001
"""A no-op task takes a millisecond (Ray's per-task overhead is of this order)."""
DEFAULT_KEY = "default"


@dataclass(frozen=True, slots=True)
class Dist:
    kind: str
    a: float
    b: float = 0.0


def parse_spec(name: str, spec: Any) -> Dist:
    """One spec in normal form; a bad one is a ValueError naming the function."""
    where = f"duration of {name!r}"
    if isinstance(spec, bool):
        raise TypeError(f"{where}: expected seconds or a dict, got a bool")
    if isinstance(spec, (int, float)):
        return Dist("fixed", _seconds(where, spec))
    if not isinstance(spec, Mapping):
        raise TypeError(f"{where}: expected seconds or a dict, got {type(spec).__name__}")
    if "dist" not in spec and len(spec) == 1:
        spec = _from_scenario_form(where, spec)
    kind = spec.get("dist", "fixed")
    keys = {"fixed": ("value",), "normal": ("mean", "std"), "uniform": ("low", "high"), "exponential": ("mean",)}
    if kind not in keys:
        raise ValueError(f"{where}: unknown dist {kind!r}; use one of {sorted(keys)}")
    extra = sorted(set(spec) - {"dist", *keys[kind]})
    if extra:
        raise ValueError(f"{where}: unknown keys {extra} for dist {kind!r}")
    values = []
    for key in keys[kind]:
        if key not in spec:
            raise ValueError(f"{where}: dist {kind!r} needs {key!r}")
        values.append(_seconds(f"{where}[{key!r}]", spec[key]))
    if kind == "uniform" and values[1] < values[0]:
        raise ValueError(f"{where}: uniform needs low <= high, got {values}")
    return Dist(kind, *values)


_SCENARIO_FORMS = {
    "normal": ("normal", {"mean_s": "mean", "sd_s": "std"}),
    "uniform": ("uniform", {"low_s": "low", "high_s": "high"}),
    "exponential": ("exponential", {"mean_s": "mean"}),
}


def _from_scenario_form(where: str, spec: Mapping[str, Any]) -> Mapping[str, Any]:
    ((form, value),) = spec.items()
    if form == "fixed_s":
        return {"dist": "fixed", "value": value}
    if form == "value":
        return {"dist": "fixed", "value": value}
    if form not in _SCENARIO_FORMS:
        raise ValueError(
            f"{where}: unknown form {form!r}; use seconds, {{fixed_s}}, {{normal: {{mean_s, sd_s}}}}, "
            "{uniform: {low_s, high_s}} or {exponential: {mean_s}}"
        )
    kind, names = _SCENARIO_FORMS[form]
    if not isinstance(value, Mapping) or set(value) != set(names):
        raise ValueError(f"{where}: {form} needs exactly {sorted(names)}, got {value!r}")
    return {"dist": kind, **{names[key]: value[key] for key in names}}


def _seconds(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


class DurationModel:
    """Durations by function name, drawn from per-attempt streams of run ``seed``."""

    def __init__(self, seed: int, specs: Mapping[str, Any] | None = None) -> None:
        self.seed = seed
        self._default = Dist("fixed", DEFAULT_DURATION_S)
        self._by_name: dict[str, Dist] = {}
        self._resolved: dict[str, Dist] = {}
        if specs:
            self.update(specs)

    def update(self, specs: Mapping[str, Any]) -> None:
        """Set specs (``"default"`` for every name without its own); validated first."""
        parsed = {str(name): parse_spec(str(name), spec) for name, spec in specs.items()}
        default = parsed.pop(DEFAULT_KEY, None)
        if default is not None:
            self._default = default
        self._by_name.update(parsed)
        self._resolved.clear()

    def _dist(self, name: str) -> Dist:
        dist = self._resolved.get(name)
        if dist is None:
            dist = self._by_name.get(name)
            if dist is None:
                short = name.rpartition("<locals>.")[2]
                dist = self._by_name.get(short, self._default)
            self._resolved[name] = dist
        return dist

    def duration_s(self, name: str, task_id: str, attempt: int) -> float:
        dist = self._dist(name)
        kind = dist.kind
        if kind == "fixed":
            return dist.a
        rng = streams.stream(self.seed, "duration", name, task_id, attempt)
        if kind == "normal":
            return max(0.0, rng.gauss(dist.a, dist.b))
        if kind == "uniform":
            return rng.uniform(dist.a, dist.b)
        return rng.expovariate(1.0 / dist.a) if dist.a > 0 else 0.0
