"""The JSON Schema of a scenario file (``detray simulate SCENARIO.yaml``).

Owns: ``SCHEMA`` (draft 2020-12; every object closed with
``additionalProperties: false`` except the two maps keyed by the user:
resources and durations), the lists of fault actions and timings, and the
limits that bound a scenario. Every property carries a ``description``: the
loader quotes it as "what is allowed" in its errors and ``docs/scenarios.md``
documents every key (a test checks that none is missing there). Must not:
read files or know about the simulator (``load.py`` maps a validated document
onto the engine).
"""

from __future__ import annotations

from typing import Any

NODES_MAX = 100_000
"""Nodes in one cluster, counts expanded."""
FAULT_ENTRIES_MAX = 1_000
REPEAT_MAX = 10_000
"""Occurrences of one repeating fault (``count``); also the engine's cap on random faults."""
REPEAT_DEFAULT = 100
FAULTS_EXPANDED_MAX = 100_000
"""Faults one scenario may schedule once repeating entries are expanded."""
ARGS_MAX = 1_000

ONE_SHOT_ACTIONS = (
    "kill_node",
    "restart_node",
    "kill_worker",
    "partition",
    "heal",
    "evict_objects",
    "slow_node",
    "lose_notifications",
    "delay_notifications",
    "restart_control_plane",
)
"""Every action a fault entry may name (exactly one per entry)."""
REPEATABLE_ACTIONS = (
    "kill_node",
    "kill_worker",
    "evict_objects",
    "slow_node",
    "lose_notifications",
    "delay_notifications",
    "restart_control_plane",
)
"""Actions that may repeat ``every_s``."""
RATE_ACTIONS = {
    "kill_worker": "kill_worker",
    "kill_node": "kill_node",
    "evict_objects": "evict",
    "slow_node": "slow_node",
}
"""Actions that may arrive at ``rate_per_s`` (the engine's ``RandomFaults`` kinds they map to)."""
TIMING_KEYS = ("at_s", "every_s", "rate_per_s", "until_s", "count", "heal_at_s", "restart_after_s")


def _seconds(description: str, *, positive: bool = False, default: Any = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "number", "description": description}
    if positive:
        schema["exclusiveMinimum"] = 0
    else:
        schema["minimum"] = 0
    if default is not None:
        schema["default"] = default
    return schema


NODE_INDEX: dict[str, Any] = {
    "type": "integer",
    "minimum": 0,
    "description": "a node index (nodes are numbered from 0 in file order, each group counting `count` nodes)",
}
NODE_OR_RANDOM: dict[str, Any] = {
    "anyOf": [NODE_INDEX, {"const": "random"}],
    "description": "a node index (numbered from 0 in file order), or `random`",
}

NODE_GROUP: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "a group of identical nodes",
    "properties": {
        "count": {
            "type": "integer",
            "minimum": 1,
            "maximum": NODES_MAX,
            "default": 1,
            "description": f"how many identical nodes this entry makes (1 to {NODES_MAX})",
        },
        "name": {"type": "string", "default": "", "description": "a label shown in the summary and the Chrome trace"},
        "resources": {
            "type": "object",
            "default": {"CPU": 8},
            "description": "resource name -> quantity >= 0 (CPU, GPU (whole), memory, or any custom name)",
            "propertyNames": {"minLength": 1},
            "additionalProperties": {"type": "number", "minimum": 0, "description": "a quantity >= 0"},
        },
        "object_store_mb": {
            "type": "number",
            "exclusiveMinimum": 0,
            "default": 1024,
            "description": "object store capacity of each node, in MiB (> 0)",
        },
        "spill": {"type": "boolean", "default": True, "description": "whether a full object store spills to disk"},
    },
}

CLUSTER: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["nodes"],
    "description": "the simulated cluster: node groups and the network",
    "properties": {
        "nodes": {
            "type": "array",
            "minItems": 1,
            "items": NODE_GROUP,
            "description": "node groups in order; node 0 (the first node) is the head: it runs the driver",
        },
        "network": {
            "type": "object",
            "additionalProperties": False,
            "description": "the network between nodes",
            "properties": {
                "latency_ms": {
                    "type": "number",
                    "minimum": 0,
                    "default": 0.2,
                    "description": "one-way latency in ms (>= 0)",
                },
                "bandwidth_mb_per_s": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "default": 1192.09,
                    "description": "bandwidth of each directed link in MiB/s (> 0)",
                },
                "partition_mode": {
                    "enum": ["hold", "drop"],
                    "default": "hold",
                    "description": "`hold` (messages across a partition wait for the heal) or `drop`",
                },
            },
        },
        "failure_detector_timeout_s": _seconds(
            "how long a node is unreachable before it is declared dead (>= 0)", default=1.0
        ),
        "resource_report_interval_s": _seconds(
            "period of resource reports between nodes (> 0)", positive=True, default=0.1
        ),
        "resync_interval_s": _seconds(
            "how often nodes re-read the node table after missing a notification (> 0)", positive=True, default=5.0
        ),
        "worker_start_s": _seconds("virtual time a new worker process takes to start (>= 0)", default=0.0),
    },
}

WORKLOAD: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "the driver program: a script, or a function",
    "oneOf": [
        {"required": ["script"], "not": {"required": ["function"]}},
        {"required": ["function"], "not": {"required": ["script"]}},
    ],
    "properties": {
        "script": {
            "type": "string",
            "minLength": 1,
            "description": "path of the Python program, relative to the scenario file; run as __main__ on the head node",
        },
        "function": {
            "type": "string",
            "pattern": r"^[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*$",
            "description": (
                "module:function, imported with the scenario file's directory and the current directory "
                "on sys.path; called with no arguments after detray.init() (what detray.testing replays)"
            ),
        },
        "args": {
            "type": "array",
            "maxItems": ARGS_MAX,
            "default": [],
            "items": {"type": ["string", "number"], "description": "a string (numbers are turned into strings)"},
            "description": "the program's command-line arguments (sys.argv[1:])",
        },
    },
}

_DURATION_FORMS = "seconds (a number >= 0), {fixed_s}, {normal: {mean_s, sd_s}}, {uniform: {low_s, high_s}} or {exponential: {mean_s}}"
DURATION_SPEC: dict[str, Any] = {
    "description": f"a duration: {_DURATION_FORMS}",
    "anyOf": [
        {"type": "number", "minimum": 0, "description": "seconds (>= 0)"},
        {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
            "description": f"exactly one of {_DURATION_FORMS}",
            "properties": {
                "fixed_s": _seconds("always this many seconds (>= 0)"),
                "normal": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["mean_s", "sd_s"],
                    "description": "normal distribution, clipped at 0: {mean_s, sd_s}",
                    "properties": {
                        "mean_s": _seconds("mean in seconds (>= 0)"),
                        "sd_s": _seconds("standard deviation in seconds (>= 0)"),
                    },
                },
                "uniform": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["low_s", "high_s"],
                    "description": "uniform between low_s and high_s seconds: {low_s, high_s}",
                    "properties": {
                        "low_s": _seconds("lowest duration in seconds (>= 0)"),
                        "high_s": _seconds("highest duration in seconds (>= low_s)"),
                    },
                },
                "exponential": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["mean_s"],
                    "description": "exponential distribution: {mean_s}",
                    "properties": {"mean_s": _seconds("mean in seconds (>= 0)")},
                },
            },
        },
    ],
}

DURATIONS: dict[str, Any] = {
    "type": "object",
    "description": "function or Class.method name (or `default`) -> duration",
    "propertyNames": {"minLength": 1},
    "additionalProperties": DURATION_SPEC,
}

_SLOW_NODE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["node", "factor"],
    "description": "{node, factor, until_s}: tasks and transfers on the node take `factor` times longer",
    "properties": {
        "node": NODE_OR_RANDOM,
        "factor": {"type": "number", "exclusiveMinimum": 0, "description": "slowdown factor (> 0; 1 is normal speed)"},
        "until_s": _seconds("when the node is back to normal speed (absolute virtual seconds; default: never)"),
    },
}

FAULT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "one fault: a time (at_s) or a repetition (every_s or rate_per_s), and exactly one action",
    "oneOf": [{"required": [action]} for action in ONE_SHOT_ACTIONS],
    "properties": {
        "at_s": _seconds(
            "when the fault happens (absolute virtual seconds >= 0); for a repeating fault, the first time"
        ),
        "every_s": _seconds("repeat the fault with this period (> 0 seconds)", positive=True),
        "rate_per_s": {
            "type": "number",
            "exclusiveMinimum": 0,
            "description": "repeat the fault at random times, this many per second on average (a Poisson process)",
        },
        "until_s": _seconds("a repeating fault stops after this virtual time (default: after `count` occurrences)"),
        "count": {
            "type": "integer",
            "minimum": 1,
            "maximum": REPEAT_MAX,
            "default": REPEAT_DEFAULT,
            "description": f"at most this many occurrences of a repeating fault (1 to {REPEAT_MAX})",
        },
        "heal_at_s": _seconds("for a partition: when it heals (absolute virtual seconds, after at_s)"),
        "restart_after_s": _seconds("for kill_node: the node restarts this long after it is killed (default: never)"),
        "kill_node": {
            **NODE_OR_RANDOM,
            "description": "kill a node (not the head, node 0): a node index, or `random`",
        },
        "restart_node": {**NODE_INDEX, "description": "restart a node as a new, empty incarnation: a node index"},
        "kill_worker": {
            "description": "kill a worker running a task: a node index, `random`, or {node, task_name}",
            "anyOf": [
                NODE_OR_RANDOM,
                {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["node"],
                    "description": "{node, task_name}: kill a worker on `node` running a task named `task_name`",
                    "properties": {
                        "node": NODE_OR_RANDOM,
                        "task_name": {
                            "type": "string",
                            "minLength": 1,
                            "description": "only a worker running this task",
                        },
                    },
                },
            ],
        },
        "partition": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "array",
                "minItems": 1,
                "items": NODE_INDEX,
                "description": "a group: a list of node indices",
            },
            "description": "groups of node indices that can only reach each other (unlisted nodes form one more group)",
        },
        "heal": {"const": True, "description": "`true`: remove the partition in force"},
        "evict_objects": {
            "type": "object",
            "additionalProperties": False,
            "required": ["node", "fraction"],
            "description": "{node, fraction}: object copies holding this fraction of the node's memory vanish",
            "properties": {
                "node": NODE_OR_RANDOM,
                "fraction": {"type": "number", "minimum": 0, "maximum": 1, "description": "a fraction within [0, 1]"},
            },
        },
        "slow_node": _SLOW_NODE,
        "lose_notifications": {
            "type": "integer",
            "minimum": 1,
            "description": "the next N node-membership notifications are lost (an integer >= 1)",
        },
        "delay_notifications": {
            "type": "object",
            "additionalProperties": False,
            "required": ["delay_s"],
            "description": "{delay_s, count}: the next `count` membership notifications arrive `delay_s` late",
            "properties": {
                "delay_s": _seconds("how late (seconds >= 0)"),
                "count": {
                    "type": "integer",
                    "minimum": 1,
                    "default": 1,
                    "description": "how many notifications (>= 1)",
                },
            },
        },
        "restart_control_plane": {
            "type": "object",
            "additionalProperties": False,
            "description": "{downtime_s}: the control plane is down for downtime_s",
            "properties": {"downtime_s": _seconds("how long it is down (> 0 seconds)", positive=True, default=0.5)},
        },
    },
}

_COUNT_BOUND = {"type": "integer", "minimum": 0, "description": "an integer >= 0"}
EXPECT: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": "what must hold at the end of the run (exit status 1 otherwise)",
    "properties": {
        "exit": {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {"type": "integer", "minimum": 0, "maximum": 255},
            ],
            "default": "ok",
            "description": "`ok`, an exception class name the program must end with, or an exit status (0-255)",
        },
        "max_makespan_s": _seconds("the run must end by this virtual time (seconds > 0)", positive=True),
        "min_tasks_finished": {**_COUNT_BOUND, "description": "at least this many task attempts finished"},
        "min_task_retries": {
            **_COUNT_BOUND,
            "description": "at least this many task retries (failed attempts tried again)",
        },
        "max_task_retries": {**_COUNT_BOUND, "description": "at most this many task retries"},
        "min_actor_restarts": {**_COUNT_BOUND, "description": "at least this many actor restarts"},
        "max_actor_restarts": {**_COUNT_BOUND, "description": "at most this many actor restarts"},
        "min_objects_reconstructed": {**_COUNT_BOUND, "description": "at least this many objects rebuilt from lineage"},
        "max_objects_reconstructed": {**_COUNT_BOUND, "description": "at most this many objects rebuilt from lineage"},
        "output_contains": {
            "type": "array",
            "maxItems": 100,
            "items": {"type": "string", "minLength": 1, "description": "a text"},
            "description": "texts that must each appear in some line the program printed",
        },
    },
}

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "detray scenario",
    "type": "object",
    "additionalProperties": False,
    "required": ["cluster", "workload"],
    "description": "a scenario: a cluster, a program, durations, faults and expectations",
    "properties": {
        "name": {
            "type": "string",
            "minLength": 1,
            "description": "the scenario's name (default: the file name without .yaml)",
        },
        "description": {"type": "string", "description": "free text, shown nowhere but the file"},
        "seed": {
            "type": "integer",
            "minimum": 0,
            "maximum": 2**63 - 1,
            "default": 0,
            "description": "the run seed (an integer >= 0); --seed overrides it",
        },
        "cluster": CLUSTER,
        "workload": WORKLOAD,
        "durations": DURATIONS,
        "faults": {
            "type": "array",
            "maxItems": FAULT_ENTRIES_MAX,
            "default": [],
            "items": FAULT,
            "description": "faults to inject, in virtual time",
        },
        "expect": EXPECT,
    },
}


def described_keys(schema: dict[str, Any] = SCHEMA, prefix: str = "") -> list[str]:
    """Every fixed key of the schema as a dotted path (``cluster.network.latency_ms``; a key the user
    names is ``<name>``: ``durations.<name>.normal.mean_s``), for the docs test."""
    keys: list[str] = []
    todo: list[tuple[str, dict[str, Any]]] = [(prefix, schema)]
    while todo:
        path, node = todo.pop()
        for key, sub in node.get("properties", {}).items():
            full = f"{path}.{key}" if path else key
            keys.append(full)
            todo.append((full, sub))
        for branch in node.get("anyOf", []):
            todo.append((path, branch))
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and ("properties" in extra or "anyOf" in extra):
            todo.append((f"{path}.<name>", extra))
        items = node.get("items")
        if isinstance(items, dict):
            todo.append((path, items))
    return sorted(set(keys))
