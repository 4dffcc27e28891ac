"""``detray simulate`` tests: run the CLI in-process and hand back its exit status and output."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _simulate_support import FIXTURES, CliRun

import detray
from detray import cli


@pytest.fixture
def simulate(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., CliRun]]:
    """``simulate("tiny.yaml", "--seed", "1")``: ``detray simulate`` in this process.

    A bare file name is looked up in ``fixtures/``; any other path is used as is.
    """

    def run(scenario: str | Path, *options: str) -> CliRun:
        path = Path(scenario)
        if not path.is_absolute() and path.parent == Path("."):
            path = FIXTURES / path
        capsys.readouterr()
        code = cli.main(["simulate", str(path), *options])
        out, err = capsys.readouterr()
        assert not detray.is_initialized(), "detray simulate left a runtime running"
        return CliRun(code, out, err)

    yield run
    if detray.is_initialized():
        detray.shutdown()
