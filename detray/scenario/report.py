"""What ``detray simulate`` shows at the end of a run: the summary table and what failed.

Owns: the rows of the summary (scenario, seed, virtual makespan, wall time,
simulated tasks per wall second, per-node-group CPU and GPU utilization,
bytes moved, objects evicted/spilled/reconstructed, task retries, actor
restarts, faults injected, expectations, trace digest) and their rendering:
a rich table on a terminal, ``label: value`` lines otherwise (stable for
scripts and tests). Must not: run anything or decide the exit status.

Nodes are shown by the groups of the scenario file (identical nodes
together: mean, and the range when the group has several nodes); with more
than ``GROUPS_SHOWN_MAX`` groups, the busiest and the idlest are shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import IO

from rich import box
from rich.console import Console
from rich.table import Table

from detray.scenario.run import RunResult

GROUPS_SHOWN_MAX = 12


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _percent(values: Sequence[float]) -> str:
    if not values:
        return "-"
    mean = sum(values) / len(values)
    if len(values) == 1 or max(values) - min(values) < 0.0005:
        return f"{mean:.1%}"
    return f"{mean:.1%} ({min(values):.1%}-{max(values):.1%})"


def utilization_rows(result: RunResult) -> list[tuple[str, str, str]]:
    """(node group, CPU, GPU) per group of the scenario file; ``n/a`` when unknown."""
    usage = result.usage
    rows: list[tuple[float, str, str, str]] = []
    for group in result.scenario.node_groups:
        cpu: list[float] = []
        gpu: list[float] = []
        nodes = result.cluster.node_ids[group.first : group.first + group.count]
        for node in nodes:
            capacity = result.cluster.capacity.get(node, {})
            for resource, values in (("CPU", cpu), ("GPU", gpu)):
                share = None if usage is None else usage.utilization(node, capacity, result.makespan_s, resource)
                if share is not None:
                    values.append(share)
        has_gpu = group.resources.get("GPU", 0) > 0
        cpu_text = _percent(cpu) if usage is not None else "n/a"
        gpu_text = (_percent(gpu) if usage is not None else "n/a") if has_gpu else "-"
        label = f"nodes {group.label}" if group.count > 1 else f"node {group.label}"
        rows.append((sum(cpu) / len(cpu) if cpu else 0.0, label, cpu_text, gpu_text))
    if len(rows) > GROUPS_SHOWN_MAX:
        half = GROUPS_SHOWN_MAX // 2
        ranked = sorted(rows, key=lambda row: -row[0])
        hidden = len(rows) - 2 * half
        rows = ranked[:half] + [(0.0, f"... {hidden} more groups", "", "")] + ranked[-half:]
    return [(label, cpu, gpu) for _, label, cpu, gpu in rows]


def _faults(result: RunResult) -> str:
    by_kind = result.cluster.faults_by_kind
    if not by_kind:
        return str(result.faults_injected)
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(by_kind.items()))
    return f"{result.faults_injected} ({kinds})"


def summary_rows(result: RunResult) -> list[tuple[str, str]]:
    """The summary as (label, value) pairs, in display order."""
    facts = result.facts
    rate = facts.tasks_finished / result.wall_s if result.wall_s > 0 else 0.0
    met = sum(1 for check in result.checks if check.met)
    verdict = "all met" if result.passed else "NOT met"
    rows = [
        ("scenario", f"{result.scenario.name} ({result.scenario.path})"),
        ("seed", str(result.seed)),
        ("program", result.ending.describe()),
        ("virtual makespan", f"{result.makespan_s:.6g} s"),
        ("wall time", f"{result.wall_s:.3f} s"),
        ("simulated tasks per wall second", f"{rate:,.0f}"),
        ("nodes", f"{len(result.cluster.node_ids)} ({facts.nodes_down} went down, {facts.nodes_died} declared dead)"),
        (
            "tasks",
            f"{facts.tasks_started} attempts started, {facts.tasks_finished} finished, {facts.tasks_failed} failed",
        ),
        ("task retries", str(result.cluster.task_retries)),
        ("actor restarts", str(result.actor_restarts)),
        ("objects reconstructed", str(result.cluster.objects_reconstructed)),
        ("objects evicted", f"{facts.objects_evicted} ({_bytes(facts.bytes_evicted)})"),
        ("objects spilled", f"{facts.objects_spilled} ({_bytes(facts.bytes_spilled)})"),
        ("bytes moved", _bytes(result.cluster.bytes_moved)),
        ("faults injected", _faults(result)),
        ("expectations", f"{met}/{len(result.checks)} met: {verdict}"),
        ("trace digest", f"sha256:{result.trace_digest}" if result.trace_digest else "-"),
        ("trace lines", str(result.trace_lines)),
    ]
    if result.trace_path is not None:
        rows.append(("trace file", str(result.trace_path)))
    if result.chrome_trace_path is not None:
        rows.append(("chrome trace", str(result.chrome_trace_path)))
    return rows


def render(result: RunResult, file: IO[str], *, terminal: bool) -> None:
    """Write the summary: a rich table on a terminal, plain ``label: value`` lines otherwise."""
    rows = summary_rows(result)
    usage = utilization_rows(result)
    if not terminal:
        width = max(len(label) for label, _ in rows)
        for label, value in rows:
            file.write(f"{label + ':':<{width + 2}}{value}\n")
        for group, cpu, gpu in usage:
            file.write(f"utilization {group}: CPU {cpu}, GPU {gpu}\n")
        for check in result.checks:
            file.write(f"expect {'met' if check.met else 'FAILED'}: {check.what} ({check.detail})\n")
        return
    console = Console(file=file)
    table = Table(title=f"detray simulate: {result.scenario.name}", box=box.SIMPLE_HEAVY, show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        style = "green" if label == "expectations" and result.passed else "red" if label == "expectations" else ""
        table.add_row(label, value, style=style)
    console.print(table)
    nodes = Table(title="utilization (resources held / capacity x makespan)", box=box.SIMPLE)
    for column in ("node group", "CPU", "GPU"):
        nodes.add_column(column)
    for row in usage:
        nodes.add_row(*row)
    console.print(nodes)
    checks = Table(title="expectations", box=box.SIMPLE)
    for column in ("", "expectation", "found"):
        checks.add_column(column)
    for check in result.checks:
        checks.add_row("[green]met[/]" if check.met else "[red]FAILED[/]", check.what, check.detail)
    console.print(checks)


def failure_text(result: RunResult) -> str:
    """What to tell on stderr when expectations failed: each one, and the program's error in full."""
    failed = [check for check in result.checks if not check.met]
    if not failed:
        return ""
    lines = [f"detray simulate: {result.scenario.name}: {len(failed)} expectation(s) not met:"]
    lines.extend(f"  {check.what}: {check.detail}" for check in failed)
    ending = result.ending
    error = ending.exception
    if error is not None and not ending.matches(result.scenario.expect.exit):
        from detray.sim.errors import DeadlockError, SimulationLimitError

        if isinstance(error, (DeadlockError, SimulationLimitError)):
            if ending.program_traceback:
                lines.append("the program was blocked here:")
                lines.append(ending.program_traceback.rstrip())
            lines.append(f"{type(error).__name__}: {error}")
        elif not isinstance(error, SystemExit):
            lines.append("the program's traceback (its own frames):")
            if ending.program_traceback:
                lines.append(ending.program_traceback.rstrip())
            lines.append(f"{type(error).__name__}: {error}")
    return "\n".join(lines) + "\n"
