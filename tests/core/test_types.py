"""The core type-checks cleanly under mypy's strict mode (configured in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path


from mypy import api as mypy_api

ROOT = Path(__file__).resolve().parents[2]


def test_core_is_clean_under_strict_mypy() -> None:
    stdout, stderr, status = mypy_api.run(
        ["--config-file", str(ROOT / "pyproject.toml"), "--no-incremental", str(ROOT / "detray" / "core")]
    )
    assert status == 0, f"mypy found problems in detray/core:\n{stdout}{stderr}"
