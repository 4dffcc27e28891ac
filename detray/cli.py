"""The ``detray`` command line.

Owns: argument parsing and exit codes of ``detray <command>``. Each command
lives in its own module; this file only dispatches.

``detray simulate SCENARIO.yaml [--seed N] [--trace FILE.jsonl]
[--chrome-trace FILE.json] [--check-determinism] [--quiet]`` exits with
``EXIT_OK`` (0) when the run ends and every expectation holds,
``EXIT_FAILED`` (1) when an expectation fails (a deadlock included),
``EXIT_BAD_INPUT`` (2) on a bad scenario or bad arguments, and
``EXIT_NOT_DETERMINISTIC`` (3) when ``--check-determinism`` finds the two
runs' traces differ. See ``docs/scenarios.md``.

``detray status [--address HOST:PORT] [--password P | --password-file F]
[--cluster-id ID] [--json]`` shows the nodes, resources, workers, objects,
actors and tasks of running clusters, read from their control plane
(``detray/real/status.py``; ``docs/real.md``): exit 0 with a report, 1 when
no cluster is running, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import detray

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_DETERMINISTIC = 3
EXIT_INTERRUPTED = 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="detray", description="A Ray-style runtime, built simulation-first.")
    parser.add_argument("--version", action="version", version=f"detray {detray.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="tell the core's story: map-reduce, a node dies, lineage rebuilds the result")
    simulate = commands.add_parser(
        "simulate",
        help="run a scenario file: a program on a simulated cluster, with faults and expectations",
        description="Run SCENARIO (YAML: cluster, workload script, durations, faults, expect; see docs/scenarios.md). "
        "Exit status: 0 every expectation held, 1 one failed (or the run deadlocked), 2 bad input, "
        "3 --check-determinism found the runs differ.",
    )
    simulate.add_argument("scenario", metavar="SCENARIO.yaml", help="the scenario file")
    simulate.add_argument("--seed", type=int, default=None, help="run seed (overrides the file's `seed`)")
    simulate.add_argument("--trace", metavar="FILE.jsonl", type=Path, help="write the trace (one JSON line per event)")
    simulate.add_argument(
        "--chrome-trace",
        metavar="FILE.json",
        type=Path,
        help="write the run in Chrome trace-event format (open in Perfetto or chrome://tracing)",
    )
    simulate.add_argument(
        "--check-determinism",
        action="store_true",
        help="run again in a fresh process with another PYTHONHASHSEED and compare the traces (exit 3 if they differ)",
    )
    simulate.add_argument(
        "--quiet", action="store_true", help="no progress display and none of the program's output (the summary stays)"
    )
    status = commands.add_parser(
        "status",
        help="show the nodes, resources, workers, objects and actors of running clusters",
        description="Show what the control plane (Redis) of running detray clusters holds. Without --address: the "
        "clusters this user's drivers started (their session files). Exit status: 0 a report, 1 no cluster is "
        "running, 2 bad arguments.",
    )
    status.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="the cluster's Redis (default: the clusters this user's drivers started, from their session files)",
    )
    secret = status.add_mutually_exclusive_group()
    secret.add_argument(
        "--password", help="the Redis password (other users see it in `ps`: prefer --password-file or $REDISCLI_AUTH)"
    )
    secret.add_argument("--password-file", metavar="FILE", type=Path, help="a file holding the Redis password")
    status.add_argument("--cluster-id", metavar="ID", help="show only this cluster")
    status.add_argument("--json", action="store_true", help="print JSON (for scripts) instead of a report")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        from detray import demo

        return demo.run()
    if args.command == "simulate":
        try:
            return _simulate(args)
        except KeyboardInterrupt:
            print("detray simulate: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
    if args.command == "status":
        from detray.real import status as status_command

        return status_command.command(args)
    parser.print_help(sys.stderr)
    return EXIT_BAD_INPUT


def _bad_output(option: str, path: Path | None) -> str | None:
    if path is None:
        return None
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        return f"detray simulate: {option} {path} is a directory; give a file name"
    if not parent.is_dir():
        return f"detray simulate: {option} {path}: the directory {parent} does not exist"
    return None


def _simulate(args: argparse.Namespace) -> int:
    from detray.scenario import ScenarioError, load

    try:
        scenario = load(args.scenario)
    except ScenarioError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    problems = [
        problem
        for problem in (_bad_output("--trace", args.trace), _bad_output("--chrome-trace", args.chrome_trace))
        if problem
    ]
    if args.trace is not None and args.chrome_trace is not None and args.trace.resolve() == args.chrome_trace.resolve():
        problems.append("detray simulate: --trace and --chrome-trace name the same file; give two files")
    if args.seed is not None and args.seed < 0:
        problems.append(f"detray simulate: --seed is {args.seed}; a seed is an integer >= 0")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return EXIT_BAD_INPUT
    if detray.is_initialized():
        print(
            "detray simulate: a detray runtime is already running in this process; shut it down first", file=sys.stderr
        )
        return EXIT_BAD_INPUT

    from detray.scenario import report, run

    seed = scenario.seed if args.seed is None else args.seed
    workdir = Path(tempfile.mkdtemp(prefix="detray-determinism-")) if args.check_determinism else None
    trace_path = args.trace
    if trace_path is None and workdir is not None:
        trace_path = workdir / "trace-here.jsonl"
    keep_workdir = False
    try:
        result = run.run_scenario(
            scenario, seed=seed, trace_path=trace_path, chrome_trace_path=args.chrome_trace, quiet=args.quiet
        )
        if args.trace is None:
            result.trace_path = None  # a file of our own, not asked for
        sys.stdout.flush()
        report.render(result, sys.stdout, terminal=sys.stdout.isatty())
        sys.stdout.flush()
        failures = report.failure_text(result)
        if failures:
            sys.stderr.write(failures)
        status = EXIT_OK if result.passed else EXIT_FAILED
        if workdir is not None and trace_path is not None:
            try:
                checked = run.check_determinism(scenario, seed=seed, first_trace=trace_path, workdir=workdir)
            except (RuntimeError, OSError, subprocess.SubprocessError) as error:
                print(f"detray simulate: --check-determinism could not compare: {error}", file=sys.stderr)
                return EXIT_FAILED
            if checked:
                print(f"determinism: the same trace in a fresh process ({checked.lines[0]} lines)")
            else:
                keep_workdir = True
                print(f"detray simulate: {scenario.name} is {checked}", file=sys.stderr)
                status = EXIT_NOT_DETERMINISTIC
        return status
    finally:
        if workdir is not None and not keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
