"""Reading a scenario file: YAML with line numbers, strict validation, friendly errors.

Owns: ``load(path) -> Scenario`` and ``ScenarioError``. The file is composed
with PyYAML (``yaml.compose``) so every value and every key keeps its line;
the document is checked against ``schema.SCHEMA`` (jsonschema), then against
what the schema cannot say (node indices within the cluster, the head node
cannot be killed, fault timings that fit together, the script exists) and,
last, against the engine's own validation (``parse_cluster``, the duration
model), so a scenario that loads is one the simulator accepts. Must not: run
anything or print.

Every problem becomes one line ``FILE:LINE: what is wrong; what is allowed``
(at most ``PROBLEMS_SHOWN_MAX`` of them, sorted by line); the CLI prints them
and exits with status 2, without a traceback.
"""

from __future__ import annotations

import difflib
import math
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import yaml  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError, best_match  # type: ignore[import-untyped]

from detray.scenario import model, schema
from detray.scenario.model import Expectations, FaultEntry, NodeGroup, Scenario

PROBLEMS_SHOWN_MAX = 10
SCENARIO_BYTES_MAX = 10 * 1024 * 1024

PathKey = tuple[Any, ...]


class ScenarioError(Exception):
    """A scenario file that cannot run; ``problems`` are ``FILE:LINE: ...`` lines."""

    def __init__(self, problems: list[str]) -> None:
        shown = problems[:PROBLEMS_SHOWN_MAX]
        if len(problems) > PROBLEMS_SHOWN_MAX:
            shown.append(f"... and {len(problems) - PROBLEMS_SHOWN_MAX} more problems")
        super().__init__("\n".join(shown))
        self.problems = problems


class _Lines:
    """Where each value (and each mapping key) of the document is, by path from the root."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[PathKey, int] = {}
        self.keys: dict[PathKey, int] = {}

    def of(self, path: Iterable[Any]) -> int:
        """Line of the value at ``path`` (or of the nearest enclosing value)."""
        key = tuple(path)
        while key and key not in self.values:
            key = key[:-1]
        return self.values.get(key, 1)

    def of_key(self, path: Iterable[Any]) -> int:
        """Line of the key naming the value at ``path`` (the value's line for list items)."""
        key = tuple(path)
        return self.keys.get(key) or self.of(key)

    def at(self, line: int, message: str) -> str:
        return f"{self.file}:{line}: {message}"


def where(path: Iterable[Any]) -> str:
    """``faults[2].kill_node`` for a path; ``the scenario`` for the root."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "the scenario"


# --- YAML with lines ---------------------------------------------------------------------------------


def _read(path: Path, lines: _Lines) -> Any:
    try:
        size = path.stat().st_size
        if size > SCENARIO_BYTES_MAX:
            raise ScenarioError([f"{lines.file}: the file is {size} bytes; a scenario is at most {SCENARIO_BYTES_MAX}"])
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError([f"{lines.file}: no such scenario file"]) from None
    except IsADirectoryError:
        raise ScenarioError([f"{lines.file}: is a directory; give a scenario .yaml file"]) from None
    except UnicodeDecodeError as error:
        raise ScenarioError([f"{lines.file}: not UTF-8 text ({error.reason} at byte {error.start})"]) from None
    except OSError as error:
        raise ScenarioError([f"{lines.file}: cannot read it: {error.strerror}"]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        context = f" ({error.context}" if error.context else ""
        if context and error.context_mark is not None and error.context_mark.line + 1 != line:
            context += f" that starts at line {error.context_mark.line + 1}"
        context += ")" if context else ""
        raise ScenarioError(
            [lines.at(line, f"YAML syntax error: {error.problem}{context}; check indentation, quotes and brackets")]
        ) from None
    except yaml.YAMLError as error:
        position = getattr(error, "position", 0) or 0
        line = text.count("\n", 0, position) + 1
        raise ScenarioError([lines.at(line, f"cannot read the YAML: {error}")]) from None
    finally:
        loader.dispose()
    if node is None:
        raise ScenarioError([lines.at(1, "the scenario is empty; it needs at least `cluster` and `workload`")])
    problems: list[str] = []
    document = _convert(node, (), loader, lines, problems)
    if problems:
        raise ScenarioError(problems)
    return document


def _convert(node: yaml.Node, path: PathKey, loader: yaml.SafeLoader, lines: _Lines, problems: list[str]) -> Any:
    lines.values.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # YAML merge keys (<<)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            key = loader.construct_object(key_node, deep=True) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                shown = key_node.value if isinstance(key_node, yaml.ScalarNode) else "a list or mapping"
                problems.append(
                    lines.at(
                        key_line,
                        f"key {shown!r} in {where(path)} is not a string; quote it (YAML reads "
                        "yes/no/on/off as booleans and digits as numbers)",
                    )
                )
                continue
            key_path = (*path, key)
            if key in result:
                first = lines.keys[key_path]
                problems.append(
                    lines.at(
                        key_line, f"duplicate key {key!r} in {where(path)} (first at line {first}); give each key once"
                    )
                )
                continue
            lines.keys[key_path] = key_line
            result[key] = _convert(value_node, key_path, loader, lines, problems)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), loader, lines, problems) for i, item in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    if isinstance(value, float) and not math.isfinite(value):
        problems.append(lines.at(node.start_mark.line + 1, f"{where(path)} is {node.value}; numbers must be finite"))
    return value


# --- the schema --------------------------------------------------------------------------------------

_VALIDATOR = jsonschema.Draft202012Validator(schema.SCHEMA)
_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "object": "a mapping (key: value)",
    "array": "a list",
    "null": "null",
}


def _yaml_type(value: Any) -> str:
    if value is None:
        return "null (an empty value)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _schema_problems(document: Any, lines: _Lines) -> list[tuple[int, str]]:
    problems: list[tuple[int, str]] = []
    for error in _VALIDATOR.iter_errors(document):
        problems.extend(_explain(error, lines))
    return problems


def _explain(error: ValidationError, lines: _Lines) -> list[tuple[int, str]]:
    path = tuple(error.absolute_path)
    allowed = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
    if error.validator == "oneOf" and error.schema is schema.FAULT:
        return _fault_action_problem(error.instance, path, lines)
    if error.validator in ("anyOf", "oneOf") and error.context:
        leaf = _best_branch_error(error)
        if leaf is not None:
            return _explain(leaf, lines)
        return [
            (
                lines.of(path),
                f"{where(path)} is {_shown(error.instance)} ({_yaml_type(error.instance)}); allowed: {allowed}",
            )
        ]
    kind = error.validator
    if kind == "additionalProperties" and isinstance(error.instance, dict):
        known = sorted(error.schema.get("properties", {}))
        found = []
        for key in error.instance:
            if key in known:
                continue
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            found.append(
                (
                    lines.of_key((*path, key)),
                    f"unknown key {key!r} in {where(path)}; {hint}allowed keys: {', '.join(known)}",
                )
            )
        return found
    if kind == "required":
        instance = error.instance if isinstance(error.instance, dict) else {}
        missing = next((str(k) for k in error.validator_value if k not in instance), str(error.validator_value))
        sub = error.schema.get("properties", {}).get(missing, {})
        what = sub.get("description", "")
        return [(lines.of_key(path), f"{where(path)} needs the key {missing!r}" + (f" ({what})" if what else ""))]
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        words = " or ".join(_TYPE_WORDS.get(str(w), str(w)) for w in wanted)
        hint = ""
        if (
            isinstance(error.instance, str)
            and ("number" in wanted or "integer" in wanted)
            and _looks_numeric(error.instance)
        ):
            hint = " (YAML reads 1e3 as text: write 1.0e3 or 1000)"
        extra = f"; allowed: {allowed}" if allowed else ""
        return [
            (
                lines.of(path),
                f"{where(path)} must be {words}, got {_shown(error.instance)} ({_yaml_type(error.instance)}){hint}{extra}",
            )
        ]
    if kind in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        relation = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}[kind]
        extra = f"; allowed: {allowed}" if allowed else ""
        return [
            (
                lines.of(path),
                f"{where(path)} is {_shown(error.instance)}; it must be {relation} {error.validator_value}{extra}",
            )
        ]
    if kind in ("enum", "const"):
        options = error.validator_value if kind == "enum" else [error.validator_value]
        shown = ", ".join(repr(o) if not isinstance(o, bool) else str(o).lower() for o in options)
        return [
            (
                lines.of(path),
                f"{where(path)} is {_shown(error.instance)}; allowed: {shown}" + (f" ({allowed})" if allowed else ""),
            )
        ]
    if kind == "maxProperties" and isinstance(error.instance, dict) and error.validator_value == 1:
        keys = ", ".join(sorted(error.instance))
        return [(lines.of(path), f"{where(path)} has several keys ({keys}); give exactly one: {allowed}")]
    if kind == "minProperties" and error.validator_value == 1:
        return [(lines.of(path), f"{where(path)} is empty; give one of: {allowed}")]
    if kind in ("minItems", "maxItems", "minLength") and allowed:
        return [(lines.of(path), f"{where(path)}: {error.message}; allowed: {allowed}")]
    if kind == "propertyNames":
        return [(lines.of(path), f"{where(path)} has an empty key; give each entry a name")]
    extra = f"; allowed: {allowed}" if allowed else ""
    return [(lines.of(path), f"{where(path)}: {error.message}{extra}")]


def _best_branch_error(error: ValidationError) -> ValidationError | None:
    """The error of the ``anyOf`` branch the value was meant for (a branch of its type), if one.

    A value of no branch's type, or one that only misses a constant, gets the
    field's own description instead (``None``)."""
    branches = error.validator_value
    matching = [
        sub
        for sub in error.context or ()
        if sub.schema_path and _type_fits(error.instance, branches[sub.schema_path[0]])
    ]
    if not matching:
        return None
    leaf = best_match(matching)
    while leaf.validator in ("anyOf", "oneOf") and leaf.context:
        deeper = _best_branch_error(leaf)
        if deeper is None:
            return None
        leaf = deeper
    shallow_mismatch = leaf.validator in ("const", "enum", "type") and leaf.absolute_path == error.absolute_path
    return None if shallow_mismatch else leaf


def _type_fits(instance: Any, branch: Mapping[str, Any]) -> bool:
    if "anyOf" in branch:
        return any(_type_fits(instance, sub) for sub in branch["anyOf"])
    if "const" in branch:
        return type(branch["const"]) is type(instance)
    wanted = branch.get("type")
    if wanted is None:
        return True
    types = wanted if isinstance(wanted, list) else [wanted]
    return any(_VALIDATOR.is_type(instance, name) for name in types)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fault_action_problem(entry: Any, path: PathKey, lines: _Lines) -> list[tuple[int, str]]:
    present = [key for key in schema.ONE_SHOT_ACTIONS if isinstance(entry, dict) and key in entry]
    actions = ", ".join(schema.ONE_SHOT_ACTIONS)
    if not present:
        unknown = isinstance(entry, dict) and any(key not in schema.FAULT["properties"] for key in entry)
        if unknown:
            return []  # a misspelt action: the unknown key's error (with its suggestion) says it
        return [(lines.of(path), f"{where(path)} has no action; a fault needs exactly one of: {actions}")]
    return [
        (
            lines.of_key((*path, present[1])),
            f"{where(path)} has several actions ({', '.join(present)}); give one action per fault entry (split it)",
        )
    ]


# --- what the schema cannot say -----------------------------------------------------------------------


class _Checks:
    def __init__(self, lines: _Lines) -> None:
        self.lines = lines
        self.problems: list[tuple[int, str]] = []

    def add(self, path: Iterable[Any], message: str, *, key: bool = False) -> None:
        path = tuple(path)
        line = self.lines.of_key(path) if key else self.lines.of(path)
        self.problems.append((line, message))


def _node_groups(cluster: Mapping[str, Any]) -> tuple[NodeGroup, ...]:
    groups = []
    first = 0
    for entry in cluster["nodes"]:
        count = int(entry.get("count", 1))
        resources = {str(k): float(v) for k, v in entry.get("resources", {"CPU": 8}).items()}
        groups.append(NodeGroup(first=first, count=count, name=str(entry.get("name", "")), resources=resources))
        first += count
    return tuple(groups)


def _check_cluster(cluster: Mapping[str, Any], checks: _Checks) -> None:
    total = sum(int(entry.get("count", 1)) for entry in cluster["nodes"])
    if total > schema.NODES_MAX:
        checks.add(("cluster", "nodes"), f"cluster.nodes makes {total} nodes; at most {schema.NODES_MAX}", key=True)
    for i, entry in enumerate(cluster["nodes"]):
        gpus = entry.get("resources", {}).get("GPU")
        if gpus is not None and gpus != int(gpus):
            checks.add(
                ("cluster", "nodes", i, "resources", "GPU"),
                f"cluster.nodes[{i}].resources.GPU is {gpus}; GPUs come whole (an integer)",
            )
    if checks.problems:
        return
    from detray.sim.config import parse_cluster

    try:
        parse_cluster(dict(cluster))
    except (ValueError, TypeError) as error:
        checks.add(("cluster",), f"the simulator refuses this cluster: {error}", key=True)


def _check_durations(durations: Mapping[str, Any], checks: _Checks) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for name, spec in durations.items():
        uniform = spec.get("uniform") if isinstance(spec, dict) else None
        if uniform is not None and uniform["low_s"] > uniform["high_s"]:
            checks.add(
                ("durations", name, "uniform"), f"durations.{name}.uniform has low_s > high_s; low_s must be <= high_s"
            )
            continue
        converted[name] = spec  # the engine reads the scenario's duration forms as they are
    if not checks.problems:
        from detray.sim.durations import DurationModel

        try:
            DurationModel(0, converted)
        except (ValueError, TypeError) as error:
            checks.add(("durations",), f"the simulator refuses these durations: {error}", key=True)
    return converted


def _check_fault(raw: Mapping[str, Any], index: int, node_count: int, checks: _Checks) -> FaultEntry | None:
    base = ("faults", index)
    before = len(checks.problems)
    action = next(key for key in schema.ONE_SHOT_ACTIONS if key in raw)
    value = raw[action]
    at_s, every_s, rate_per_s = raw.get("at_s"), raw.get("every_s"), raw.get("rate_per_s")
    until_s, heal_at_s, restart_after_s = raw.get("until_s"), raw.get("heal_at_s"), raw.get("restart_after_s")
    name = f"faults[{index}]"
    if every_s is not None and rate_per_s is not None:
        checks.add(
            (*base, "rate_per_s"),
            f"{name} has both every_s and rate_per_s; give one (periodic or random times)",
            key=True,
        )
    repeating = every_s is not None or rate_per_s is not None
    if not repeating and at_s is None:
        checks.add(base, f"{name} has no time; give at_s (seconds), or every_s / rate_per_s to repeat it")
    for key in ("until_s", "count"):
        if key in raw and not repeating:
            checks.add(
                (*base, key), f"{name}.{key} only applies to a repeating fault (with every_s or rate_per_s)", key=True
            )
    if every_s is not None and action not in schema.REPEATABLE_ACTIONS:
        checks.add(
            (*base, "every_s"),
            f"{name}: {action} cannot repeat; every_s works with {', '.join(schema.REPEATABLE_ACTIONS)}",
            key=True,
        )
    if rate_per_s is not None:
        if action not in schema.RATE_ACTIONS:
            checks.add(
                (*base, "rate_per_s"),
                f"{name}: {action} cannot come at random times; rate_per_s works with {', '.join(schema.RATE_ACTIONS)}",
                key=True,
            )
        else:
            for sub, ref in model.node_refs(action, value):
                if ref != model.RANDOM:
                    checks.add(
                        (*base, action, *sub),
                        f"{name}: with rate_per_s the node is drawn when each fault happens; write `random`, not {ref!r}",
                    )
            if action == "kill_worker" and isinstance(value, dict) and "task_name" in value:
                checks.add(
                    (*base, action, "task_name"),
                    f"{name}: task_name is not supported with rate_per_s; use every_s or at_s",
                    key=True,
                )
            if action == "slow_node" and "until_s" in value:
                checks.add(
                    (*base, action, "until_s"),
                    f"{name}: a randomly slowed node stays slow; until_s is not supported with rate_per_s",
                    key=True,
                )
    if heal_at_s is not None:
        if action != "partition":
            checks.add((*base, "heal_at_s"), f"{name}.heal_at_s only applies to a partition", key=True)
        elif at_s is not None and heal_at_s <= at_s:
            checks.add((*base, "heal_at_s"), f"{name}.heal_at_s is {heal_at_s}; it must be after at_s ({at_s})")
    if restart_after_s is not None and action != "kill_node":
        checks.add((*base, "restart_after_s"), f"{name}.restart_after_s only applies to kill_node", key=True)
    if until_s is not None and at_s is not None and until_s < at_s:
        checks.add((*base, "until_s"), f"{name}.until_s is {until_s}; it must be >= at_s ({at_s})")
    if action == "slow_node" and value.get("until_s") is not None and at_s is not None and value["until_s"] <= at_s:
        checks.add(
            (*base, action, "until_s"),
            f"{name}.slow_node.until_s is {value['until_s']}; it must be after at_s ({at_s})",
        )
    _check_nodes(action, value, base, name, node_count, checks)
    if len(checks.problems) > before:
        return None
    return FaultEntry(
        index=index,
        line=checks.lines.of(base),
        action=action,
        value=value,
        at_s=None if at_s is None else float(at_s),
        every_s=None if every_s is None else float(every_s),
        rate_per_s=None if rate_per_s is None else float(rate_per_s),
        until_s=None if until_s is None else float(until_s),
        count=raw.get("count"),
        heal_at_s=None if heal_at_s is None else float(heal_at_s),
        restart_after_s=None if restart_after_s is None else float(restart_after_s),
    )


def _check_nodes(action: str, value: Any, base: PathKey, name: str, node_count: int, checks: _Checks) -> None:
    last = node_count - 1
    seen: dict[int, int] = {}
    for sub, ref in model.node_refs(action, value):
        path = (*base, action, *sub)
        if ref == model.RANDOM:
            if node_count < 2:
                checks.add(path, f"{name}: `random` picks a node other than the head, and this cluster has only node 0")
            continue
        if ref > last:
            checks.add(
                path,
                f"{name} names node {ref}, but the cluster has {node_count} nodes; allowed: 0 to {last} (file order, counts expanded)",
            )
            continue
        if action in ("kill_node", "restart_node") and ref == 0:
            verb = "kills" if action == "kill_node" else "restarts"
            alternatives = f"1 to {last}" + (" or `random`" if action == "kill_node" else "")
            checks.add(
                path,
                f"{name} {verb} node 0, the head: it runs the driver and the control plane; allowed: {alternatives}",
            )
        if action == "partition":
            if ref in seen:
                checks.add(
                    path,
                    f"{name}: node {ref} is in two partition groups (groups {seen[ref]} and {sub[0]}); a node belongs to one group",
                )
            seen[ref] = sub[0]


def _find_module(module: str, scenario_dir: Path) -> Any:
    """The spec of ``module`` with the scenario's directory and the current one on sys.path."""
    import importlib.util

    added = [p for p in (str(scenario_dir), os.getcwd()) if p not in sys.path]
    sys.path[:0] = added
    try:
        return importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    finally:
        for path in added:
            sys.path.remove(path)


def _check_workload(workload: Mapping[str, Any], scenario_file: Path, checks: _Checks) -> Path:
    scenario_dir = scenario_file.parent
    if "function" in workload:
        module = str(workload["function"]).partition(":")[0]
        if _find_module(module, scenario_dir) is None:
            checks.add(
                ("workload", "function"),
                f"workload.function: module {module!r} cannot be imported (looked in {scenario_dir}, the current "
                "directory and sys.path); give module:function of an importable module",
            )
        return scenario_file
    script = (scenario_dir / str(workload["script"])).resolve()
    if not script.is_file():
        what = "is a directory" if script.is_dir() else "does not exist"
        checks.add(
            ("workload", "script"),
            f"workload.script {workload['script']!r} {what} (looked for {script}); give a Python file, relative to the scenario file",
        )
    return script


def _check_expect(expect: Mapping[str, Any], checks: _Checks) -> Expectations:
    exit_ = expect.get("exit", "ok")
    if isinstance(exit_, str) and exit_ != "ok" and not all(part.isidentifier() for part in exit_.split(".")):
        checks.add(
            ("expect", "exit"),
            f"expect.exit is {exit_!r}; allowed: `ok`, an exception class name (like DeadlockError) or an exit status",
        )
    bounds: dict[str, tuple[int | None, int | None]] = {}
    for measure in ("tasks_finished", "task_retries", "actor_restarts", "objects_reconstructed"):
        low, high = expect.get(f"min_{measure}"), expect.get(f"max_{measure}")
        if low is not None and high is not None and low > high:
            checks.add(
                ("expect", f"max_{measure}"), f"expect.max_{measure} ({high}) is below expect.min_{measure} ({low})"
            )
        if low is not None or high is not None:
            bounds[measure] = (low, high)
    makespan = expect.get("max_makespan_s")
    return Expectations(
        exit=exit_,
        max_makespan_s=None if makespan is None else float(makespan),
        bounds=bounds,
        output_contains=tuple(expect.get("output_contains", ())),
    )


def load(path: str | Path) -> Scenario:
    """Read, validate and map a scenario file; ``ScenarioError`` lists every problem found."""
    file = Path(path)
    lines = _Lines(str(path))
    document = _read(file, lines)
    if not isinstance(document, dict):
        raise ScenarioError(
            [
                lines.at(
                    1,
                    f"the scenario must be a mapping with keys like cluster: and workload:, got {_yaml_type(document)}",
                )
            ]
        )
    found = _schema_problems(document, lines)
    if found:
        raise ScenarioError([lines.at(line, message) for line, message in sorted(found, key=lambda p: p[0])])
    checks = _Checks(lines)
    cluster = document["cluster"]
    _check_cluster(cluster, checks)
    groups = _node_groups(cluster)
    node_count = sum(group.count for group in groups)
    durations = _check_durations(document.get("durations", {}), checks)
    entries = []
    for index, raw in enumerate(document.get("faults", [])):
        entry = _check_fault(raw, index, node_count, checks)
        if entry is not None:
            entries.append(entry)
    expanded = sum(model.expanded_count(entry, schema.REPEAT_DEFAULT) for entry in entries)
    if expanded > schema.FAULTS_EXPANDED_MAX:
        checks.add(
            ("faults",),
            f"the faults expand to {expanded} scheduled faults; at most {schema.FAULTS_EXPANDED_MAX} (lower count or raise every_s)",
            key=True,
        )
    script = _check_workload(document["workload"], file.resolve(), checks)
    expect = _check_expect(document.get("expect", {}), checks)
    if checks.problems:
        raise ScenarioError([lines.at(line, message) for line, message in sorted(checks.problems, key=lambda p: p[0])])
    name = document.get("name") or file.name.removesuffix(".yaml").removesuffix(".yml")
    return Scenario(
        path=file,
        name=name,
        seed=int(document.get("seed", 0)),
        cluster=cluster,
        node_groups=groups,
        script=script,
        args=model.as_args(document["workload"].get("args", [])),
        durations=durations,
        fault_entries=tuple(entries),
        expect=expect,
        function=document["workload"].get("function"),
    )
