"""Simulator tests: invariants checked after every step, and no runtime left behind."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import detray


@pytest.fixture(autouse=True)
def _sim_hygiene(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("DETRAY_SIM_CHECK_INVARIANTS", "1")
    yield
    if detray.is_initialized():
        detray.shutdown()
