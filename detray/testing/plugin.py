"""detray's pytest plugin (registered through the ``pytest11`` entry point).

Owns: the ``detray_cluster`` and ``detray_seed`` fixtures, the ``detray``
marker, the options ``--detray-seed``, ``--detray-seeds`` and
``--detray-mode``, the replay command printed under a failing test, and the
fault-coverage summary at the end of the session. Must not: change tests
that do not ask for detray (no marker, no fixture: nothing happens).

A test asks for a simulated cluster with the fixture; the marker shapes it::

    @pytest.mark.detray(nodes=[{"count": 4, "resources": {"CPU": 4, "GPU": 1}}],
                        faults=[KillNode(at_s=0.5, node=2)])
    def test_training_survives(detray_cluster):
        ...  # plain detray code; the cluster is up, and shut down after the test

Marker keywords: ``nodes`` (the ``cluster['nodes']`` list), or ``cluster``
(the whole description), ``faults`` (``detray.sim.faults`` objects),
``durations``, ``seed`` (pins the seed), ``check_invariants`` (default
True: the core's invariants are checked after every simulated step).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from typing import Any

import pytest

from detray.testing import harness

_SEED_KEY = pytest.StashKey[int]()
_FAILED: list[tuple[str, int]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("detray", "detray: simulated clusters and fault injection")
    group.addoption(
        "--detray-seed", type=int, default=None, metavar="N",
        help="seed of every simulated cluster (default 0); replays a failing seed",
    )
    group.addoption(
        "--detray-seeds", type=int, default=None, metavar="K",
        help="run each test that uses a detray cluster under K seeds (from --detray-seed, default 0)",
    )
    group.addoption(
        "--detray-mode", choices=("sim", "real"), default="sim",
        help="run detray tests on the simulator (default) or on the real runtime",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "detray(nodes=None, cluster=None, faults=(), durations=None, seed=None, check_invariants=True): "
        "shape the simulated cluster of the detray_cluster fixture",
    )
    seeds = config.getoption("--detray-seeds")
    if seeds is not None and seeds < 1:
        raise pytest.UsageError(f"--detray-seeds must be >= 1, got {seeds}")
    if config.getoption("--detray-mode") == "real":
        if not _real_runtime_available():
            raise pytest.UsageError(
                "--detray-mode real: this installation of detray has no real runtime "
                "(docs/compatibility.md); run the tests on the simulator (the default)"
            )


def _real_runtime_available() -> bool:
    from detray.api import _load_driver

    try:
        _load_driver("real")
    except NotImplementedError:
        return False
    return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    seeds = metafunc.config.getoption("--detray-seeds")
    if seeds is None or "detray_seed" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("detray")
    if marker is not None and marker.kwargs.get("seed") is not None:
        return  # the test pins its seed
    base = metafunc.config.getoption("--detray-seed") or 0
    values = list(range(base, base + seeds))
    metafunc.parametrize("detray_seed", values, ids=[f"seed={s}" for s in values], indirect=True)


@pytest.fixture
def detray_seed(request: pytest.FixtureRequest) -> int:
    """The seed of this test's simulated cluster (``--detray-seed``, ``--detray-seeds``,
    or the marker's ``seed``)."""
    marker = request.node.get_closest_marker("detray")
    if marker is not None and marker.kwargs.get("seed") is not None:
        seed = int(marker.kwargs["seed"])
    elif hasattr(request, "param"):
        seed = int(request.param)
    else:
        seed = request.config.getoption("--detray-seed") or 0
    request.node.stash[_SEED_KEY] = seed
    return seed


@pytest.fixture
def detray_cluster(request: pytest.FixtureRequest, detray_seed: int) -> Iterator[Any]:
    """A simulated cluster (the running ``SimCluster``) for the test; shut down after it.

    ``detray`` calls in the test run on it. Its fault kinds and recovery paths
    count towards the session's coverage summary.
    """
    import detray
    import detray.sim

    if detray.is_initialized():
        raise RuntimeError("detray_cluster: a cluster is already running; shut it down first")
    marker = request.node.get_closest_marker("detray")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    unknown = sorted(set(kwargs) - {"nodes", "cluster", "faults", "durations", "seed", "check_invariants"})
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.detray: unknown keywords {unknown} on {request.node.nodeid}")
    if kwargs.get("nodes") is not None and kwargs.get("cluster") is not None:
        raise pytest.UsageError(f"@pytest.mark.detray: give nodes= or cluster=, not both ({request.node.nodeid})")
    cluster = kwargs.get("cluster") or {"nodes": kwargs.get("nodes") or harness.DEFAULT_CLUSTER["nodes"]}
    extra: dict[str, Any] = {"check_invariants": kwargs.get("check_invariants", True)}
    if kwargs.get("durations"):
        extra["durations"] = dict(kwargs["durations"])
    mode = request.config.getoption("--detray-mode")
    if mode == "real":
        faults = list(kwargs.get("faults") or ())
        _REAL_RUNS.append(len(faults))
        totals = real_resources(cluster)
        cpus = totals.pop("CPU", 1.0)
        gpus = totals.pop("GPU", 0.0)
        detray.init(num_cpus=cpus, num_gpus=gpus, resources=totals or None)
        try:
            yield RealCluster()
        finally:
            detray.shutdown()
        return
    detray.init(mode=mode, seed=detray_seed, cluster=cluster, faults=list(kwargs.get("faults") or ()), **extra)
    sim = detray.sim.current_cluster()
    try:
        yield sim
        _record(sim)
    finally:
        detray.shutdown()


_REAL_RUNS: list[int] = []
"""One entry per test run on the real runtime: how many faults its marker asked for (not injected)."""


def real_resources(cluster: Any) -> dict[str, float]:
    """The resources of a simulated cluster description, summed onto the one real node."""
    totals: dict[str, float] = {}
    for group in cluster.get("nodes") or ():
        count = int(group.get("count", 1))
        for name, amount in (group.get("resources") or {}).items():
            totals[name] = totals.get(name, 0.0) + count * float(amount)
    return totals


class RealCluster:
    """What ``detray_cluster`` yields with ``--detray-mode real``: the one machine's cluster."""

    mode = "real"

    def live_nodes(self) -> list[str]:
        import detray

        return [str(node["NodeID"]) for node in detray.nodes() if node["Alive"]]


def _record(sim: Any) -> None:
    stats = harness.collect_stats(sim)
    harness.record_coverage(harness.faults_injected(stats), harness.recovery_counts(stats))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    outcome: Any = yield
    report = outcome.get_result()
    seed = item.stash.get(_SEED_KEY, None)
    if seed is None or not report.failed:
        return
    command = replay_command(item, seed)
    report.sections.append(("detray", f"failed with seed {seed}; replay with:\n  {command}"))
    _FAILED.append((item.nodeid, seed))


def replay_command(item: pytest.Item, seed: int) -> str:
    """The command that runs ``item`` again with ``seed`` (without the seed parameter)."""
    nodeid = item.nodeid
    if "[" in nodeid and nodeid.endswith("]"):
        base, params = nodeid[:-1].split("[", 1)
        rest = "-".join(p for p in params.split("-") if not p.startswith("seed="))
        nodeid = f"{base}[{rest}]" if rest else base
    args = ["python", "-m", "pytest", nodeid, "--detray-seed", str(seed)]
    mode = item.config.getoption("--detray-mode")
    if mode != "sim":
        args += ["--detray-mode", mode]
    return shlex.join(args)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    runs = harness.SESSION_RUNS[0]
    if not runs and not _FAILED and not _REAL_RUNS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("detray")
    if _REAL_RUNS:
        write(
            f"{len(_REAL_RUNS)} run(s) on the real runtime (one machine, all marker nodes' resources summed); "
            f"faults not injected there: {sum(_REAL_RUNS)}"
        )
    if runs:
        injected = harness.SESSION_FAULTS
        write(f"{runs} simulated run(s). Fault kinds injected:")
        for kind in harness.FAULT_KINDS:
            count = injected.get(kind, 0)
            write(f"  {kind:<22} {count if count else 'never'}")
        write("Recovery paths that ran:")
        for label in harness.RECOVERY_STATS:
            count = harness.SESSION_RECOVERY.get(label, 0)
            write(f"  {label:<34} {count if count else 'never'}")
    for nodeid, seed in _FAILED:
        write(f"FAILED {nodeid} with seed {seed}")
