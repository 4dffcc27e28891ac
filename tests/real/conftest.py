"""Fixtures for real-process tests: a private Redis server for a test module.

``redis_server`` is module-scoped: a module's tests share one server (each
uses its own cluster id, and the control plane prefixes every key with it),
so the suite does not pay a start and stop per test, yet no server outlives
the module that asked for it: a later module's leak checks never see a
server that is not theirs. Tests that stop or break a server start their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from detray.real.redis_server import RedisServer, RedisServerNotFound, find_executable


@pytest.fixture(scope="session")
def redis_executable() -> str:
    """The redis-server binary; skips (saying how to install one) only when there is none."""
    try:
        return find_executable()
    except RedisServerNotFound as exc:
        pytest.skip(f"real-process tests need a Redis server binary: {exc}")


@pytest.fixture(scope="module")
def redis_server(redis_executable: str) -> Iterator[RedisServer]:
    """A started server on 127.0.0.1, a free port and a random password; stopped after the module."""
    with RedisServer(executable=redis_executable) as server:
        yield server

