"""The ``driver`` fixture: every API test runs once per driver.

Params are the drivers that exist: ``["sim"]`` for now; the real runtime adds
``"real"`` here. Each test starts detray itself with ``driver.init(...)``
(``detray.init(mode=...)`` with the test's resources) and the fixture shuts
it down afterwards, whatever happened. Core invariants are checked after
every simulator step.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import detray

DRIVERS = ["sim", "real"]


class Driver:
    """Starts detray on one driver with a one-node cluster of the given resources."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def init(self, num_cpus: float = 4, num_gpus: float = 0, **kwargs: Any) -> Any:
        return detray.init(mode=self.mode, num_cpus=num_cpus, num_gpus=num_gpus, **kwargs)

    def __repr__(self) -> str:
        return self.mode


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Driver]:
    monkeypatch.setenv("DETRAY_SIM_CHECK_INVARIANTS", "1")
    if detray.is_initialized():
        detray.shutdown()
    yield Driver(request.param)
    if detray.is_initialized():
        detray.shutdown()
