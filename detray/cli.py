"""The ``detray`` command line.

Owns: argument parsing and exit codes of ``detray <command>``. Each command
lives in its own module; this file only dispatches.
"""

from __future__ import annotations

import argparse
import sys

import detray


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="detray", description="A Ray-style runtime, built simulation-first.")
    parser.add_argument("--version", action="version", version=f"detray {detray.__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("demo", help="tell the core's story: map-reduce, a node dies, lineage rebuilds the result")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from detray import demo

        return demo.run()
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
