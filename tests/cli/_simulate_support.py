"""Helpers shared by the ``detray simulate`` tests (the fixture lives in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass(frozen=True)
class CliRun:
    """What one ``detray simulate`` call gave: exit status, stdout, stderr."""

    code: int
    out: str
    err: str


def summary_value(out: str, label: str) -> str:
    """The value of ``label:`` in the plain (not a terminal) summary."""
    for line in out.splitlines():
        if line.startswith(f"{label}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {label!r} line in the summary:\n{out}")
