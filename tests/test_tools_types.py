"""The tools users run (detray simulate, detray.testing) and the real runtime's modules
type-check under mypy's strict mode too (the core has its own check in tests/core)."""

from __future__ import annotations

from pathlib import Path

from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("detray/scenario", "detray/testing", "detray/real", "detray/cli.py")


def test_tools_and_real_runtime_are_clean_under_strict_mypy() -> None:
    stdout, stderr, status = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", *(str(ROOT / p) for p in CHECKED)]
    )
    assert status == 0, f"mypy found problems in {', '.join(CHECKED)}:\n{stdout}{stderr}"
