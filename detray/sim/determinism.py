"""Checking that a simulated run is reproducible: the same trace twice, across processes.

Owns: ``check_determinism`` (run a program twice on the same cluster and
seed, the second time in a fresh Python process with another
``PYTHONHASHSEED``, and compare the traces line by line) and the
command-line entry used for the second run (``python -m
detray.sim.determinism``). Must not: change the program's behaviour beyond
forcing the scenario (seed, cluster, trace path: ``detray.sim.scenario``).

A *target* is a path to a script (run as ``__main__``), ``"module:function"``
(imported and called), or a function defined in an importable module. The
program may call ``detray.init`` itself (the scenario's seed and cluster win)
or not at all (the first API call starts the simulator, ``DETRAY_MODE=sim``
is set for the run).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detray.sim.trace import digest_lines, first_difference

FRESH_HASH_SEED = "4242"
OTHER_HASH_SEED = "1717"
DEFAULT_TIMEOUT_S = 600.0


@dataclass(frozen=True, slots=True)
class DeterminismReport:
    """The outcome of ``check_determinism``; truthy when both traces are identical."""

    identical: bool
    lines: tuple[int, int]
    digests: tuple[str, str]
    difference: tuple[int, str | None, str | None] | None
    traces: tuple[str, str] | None
    """Paths of both traces when they differ (kept to inspect), or when the caller gave
    ``workdir``; None when identical traces in a directory of our own were removed."""
    """Paths of the two trace files."""

    def __bool__(self) -> bool:
        return self.identical

    def __str__(self) -> str:
        if self.identical:
            return f"deterministic: {self.lines[0]} trace lines, digest {self.digests[0]}"
        assert self.difference is not None
        index, first, second = self.difference
        return "\n".join(
            [
                f"NOT deterministic: the traces part at line {index} "
                f"({self.lines[0]} vs {self.lines[1]} lines)",
                f"  this process:  {first if first is not None else '<trace ended>'}",
                f"  fresh process: {second if second is not None else '<trace ended>'}",
                f"  traces: {self.traces[0]} {self.traces[1]}" if self.traces else "",
            ]
        )


def target_of(target: Any) -> str:
    """The target as a string a fresh process can run."""
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    if callable(target):
        module = getattr(target, "__module__", None)
        name = getattr(target, "__qualname__", None)
        if not module or module == "__main__" or not name or "<" in name:
            raise ValueError(
                f"check_determinism: {target!r} must be defined at the top level of an importable "
                "module (a fresh process imports it), or pass a script path"
            )
        return f"{module}:{name}"
    raise TypeError(f"check_determinism: target must be a script path, 'module:function' or a function, got {target!r}")


@contextlib.contextmanager
def _sim_mode() -> Iterator[None]:
    previous = os.environ.get("DETRAY_MODE")
    os.environ["DETRAY_MODE"] = "sim"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("DETRAY_MODE", None)
        else:
            os.environ["DETRAY_MODE"] = previous


def run_target(target: str, *, seed: int, cluster: Any, trace_path: str) -> None:
    """Run ``target`` once on the simulator with this seed, cluster and trace path."""
    import detray
    from detray.sim import scenario

    if detray.is_initialized():
        raise RuntimeError("check_determinism: shut the running detray runtime down first")
    with _sim_mode(), scenario(seed=seed, cluster=cluster, trace_path=trace_path):
        try:
            if target.endswith(".py") or os.path.sep in target:
                runpy.run_path(target, run_name="__main__")
            else:
                module_name, _, function_name = target.partition(":")
                if not function_name:
                    raise ValueError(f"check_determinism: target {target!r} is neither a .py path nor 'module:function'")
                function: Any = importlib.import_module(module_name)
                for part in function_name.split("."):
                    function = getattr(function, part)
                if not detray.is_initialized():
                    detray.init(mode="sim")
                function()
        except SystemExit as stop:
            if stop.code not in (None, 0):
                raise
        finally:
            if detray.is_initialized():
                detray.shutdown()


def check_determinism(
    target: Any,
    cluster: Any = None,
    seed: int = 0,
    *,
    workdir: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> DeterminismReport:
    """Run ``target`` here, then in a fresh process with another ``PYTHONHASHSEED``;
    compare the traces. ``cluster`` (a cluster description) and ``seed`` override
    what the program asks for. Returns a ``DeterminismReport`` (truthy when identical;
    ``str()`` shows the first differing line of each run)."""
    name = target_of(target)
    directory = Path(workdir or tempfile.mkdtemp(prefix="detray-determinism-"))
    directory.mkdir(parents=True, exist_ok=True)
    first_path = str(directory / "trace-here.jsonl")
    second_path = str(directory / "trace-fresh.jsonl")
    cluster_json = json.dumps(_describe(cluster))
    run_target(name, seed=seed, cluster=json.loads(cluster_json), trace_path=first_path)
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = OTHER_HASH_SEED if env.get("PYTHONHASHSEED") == FRESH_HASH_SEED else FRESH_HASH_SEED
    env["DETRAY_MODE"] = "sim"
    extra_path = os.pathsep.join(p for p in sys.path if p)
    env["PYTHONPATH"] = extra_path
    command = [
        sys.executable,
        "-m",
        "detray.sim.determinism",
        "--target",
        name,
        "--seed",
        str(seed),
        "--cluster-json",
        cluster_json,
        "--trace",
        second_path,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0:
        raise RuntimeError(
            f"check_determinism: the fresh process failed (exit {done.returncode}):\n{done.stderr[-4000:]}"
        )
    with open(first_path, encoding="ascii") as first, open(second_path, encoding="ascii") as second:
        difference = first_difference(first, second)
    with open(first_path, encoding="ascii") as first:
        first_lines = first.read().splitlines()
    with open(second_path, encoding="ascii") as second:
        second_lines = second.read().splitlines()
    traces: tuple[str, str] | None = (first_path, second_path)
    if difference is None and workdir is None:
        shutil.rmtree(directory, ignore_errors=True)  # nothing to inspect: leave nothing behind
        traces = None
    return DeterminismReport(
        identical=difference is None,
        lines=(len(first_lines), len(second_lines)),
        digests=(digest_lines(first_lines), digest_lines(second_lines)),
        difference=difference,
        traces=traces,
    )


def _describe(cluster: Any) -> Any:
    if cluster is None or isinstance(cluster, dict):
        return cluster
    from detray.sim.config import parse_cluster

    return parse_cluster(cluster).describe()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a program once on the simulator and write its trace.")
    parser.add_argument("--target", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cluster-json", default="null")
    parser.add_argument("--trace", required=True)
    args = parser.parse_args(argv)
    run_target(args.target, seed=args.seed, cluster=json.loads(args.cluster_json), trace_path=args.trace)
    return 0


if __name__ == "__main__":
    sys.exit(main())
