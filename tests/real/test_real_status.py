"""Inspecting a live cluster (issue 6, point 4): session files and ``detray status``.

Session files: private (0600 in a 0700 directory of ours), read back
whole, stale ones (driver gone, or its pid reused) ignored and removed, an
unsafe directory refused. ``detray status``: against one real cluster
(module-scoped: ``detray.init(num_cpus=2)``, tasks and a named actor run
first) it shows the node, its resources, the actor and its state, the task
records, both as a report and as JSON, found through the session file or
through ``--address`` and a password file; it exits 1 when no cluster runs
and 2 on bad arguments, and never prints the password. The node stats a
raylet publishes are checked on fakeredis, where no raylet overwrites them.
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pytest

import detray
from detray import cli, controlplane
from detray.real import session as sessions
from detray.real import status
from .real_helpers import local_cluster, running_cluster, wait_for

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 20.0
CLI_TIMEOUT_S = 60.0
NUM_CPUS = 2
TASKS = 5
ACTOR_NAME = "status_probe"


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _write(folder: Path, cluster_id: str, **fields: Any) -> Path:
    """A session file for a cluster that need not exist (no server is contacted)."""
    fields = {"redis_host": "127.0.0.1", "redis_port": 6399, "redis_password": "pw", **fields}
    return sessions.write(cluster_id=cluster_id, directory=folder, **fields)


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- session files ---------------------------------------------------------------------------------


def test_a_session_file_is_private_and_reads_back(tmp_path: Path) -> None:
    folder = tmp_path / "sessions"  # does not exist yet: write creates it, 0700
    path = sessions.write(
        cluster_id="c0ffee01", redis_host="127.0.0.1", redis_port=6399, redis_password="s3cret-pw", directory=folder
    )
    assert path.parent == folder
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in folder.iterdir()] == [path.name]  # no temporary file left

    found = sessions.find_live(folder)
    assert len(found) == 1
    live = found[0]
    assert (live.cluster_id, live.redis_address, live.redis_password) == ("c0ffee01", "127.0.0.1:6399", "s3cret-pw")
    assert live.driver_pid == os.getpid() and live.is_live()
    assert "s3cret-pw" not in repr(live) and "s3cret-pw" not in json.dumps(live.public())

    sessions.remove(path)
    sessions.remove(path)  # already gone: fine
    assert sessions.find_live(folder) == []


def test_stale_sessions_are_ignored_and_removed(tmp_path: Path) -> None:
    folder = _private_dir(tmp_path / "sessions")
    gone = _write(folder, "deadbeef", driver_pid=_dead_pid())
    reused = _write(folder, "feedface")
    document = json.loads(reused.read_text())
    document["driver_start_ticks"] += 1  # our pid, but "another process" started at another time
    reused.write_text(json.dumps(document))
    alive = _write(folder, "a11ce")
    malformed = folder / "session-broken.json"
    malformed.write_text("{not json")
    os.chmod(malformed, 0o600)

    assert [s.cluster_id for s in sessions.find_live(folder)] == ["a11ce"]
    assert not gone.exists() and not reused.exists()
    assert alive.exists()
    assert malformed.exists()  # not known to be stale: left alone


def test_an_unsafe_session_directory_is_refused_or_tightened(tmp_path: Path) -> None:
    real = _private_dir(tmp_path / "real")
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(sessions.SessionError, match="not a directory"):
        _write(link, "c1")
    with pytest.raises(sessions.SessionError):
        sessions.find_live(link)

    wide = tmp_path / "wide"
    wide.mkdir()
    os.chmod(wide, 0o755)
    _write(wide, "c1")
    assert stat.S_IMODE(os.stat(wide).st_mode) == 0o700

    if os.getuid() == 0:  # only root can hand a directory to another user
        foreign = _private_dir(tmp_path / "foreign")
        os.chown(foreign, 54321, 54321)
        with pytest.raises(sessions.SessionError, match="belongs to uid 54321"):
            _write(foreign, "c1")
        foreign_file = _write(_private_dir(tmp_path / "mine"), "c2")
        os.chown(foreign_file, 54321, 54321)
        assert sessions.read(foreign_file) is None  # a file another user planted is not trusted


def test_the_session_directory_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(sessions.SESSION_DIR_ENV, str(tmp_path / "override"))
    assert sessions.session_dir() == tmp_path / "override"
    monkeypatch.delenv(sessions.SESSION_DIR_ENV)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert sessions.session_dir() == tmp_path / "detray"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert sessions.session_dir() == Path("/tmp") / f"detray-{os.getuid()}"


# --- a live cluster --------------------------------------------------------------------------------


@dataclass
class Live:
    rt: Any
    cluster_id: str
    port: int
    password: str
    actor_id: str
    session_dir: Path
    session_path: Path


def _run_cli(*argv: str, session_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != status.PASSWORD_ENV}
    env[sessions.SESSION_DIR_ENV] = str(session_dir)
    return subprocess.run(
        [sys.executable, "-m", "detray.cli", "status", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=CLI_TIMEOUT_S,
    )


@detray.remote
def add_one(x: int) -> int:
    return x + 1


@detray.remote
class Probe:
    def ping(self) -> str:
        return "pong"


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    folder = _private_dir(tmp_path_factory.mktemp("status-sessions") / "s")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(sessions.SESSION_DIR_ENV, str(folder))  # also where cluster.py writes, once it does
        with running_cluster(mode="real", num_cpus=NUM_CPUS) as rt:
            assert detray.get([add_one.remote(i) for i in range(TASKS)]) == list(range(1, TASKS + 1))
            probe = Probe.options(name=ACTOR_NAME).remote()
            assert detray.get(probe.ping.remote()) == "pong"
            cluster = local_cluster(rt)
            path = sessions.write(
                cluster_id=cluster.cluster_id,
                redis_host=cluster.redis.host,
                redis_port=cluster.redis.port,
                redis_password=cluster.redis.password,
            )
            try:
                actor_id = cluster.plane.lookup_actor_name("default", ACTOR_NAME)
                assert actor_id is not None
                wait_for(  # task records arrive by write-behind: the calls above, and the actor's creation
                    lambda: [r.get("state") for _, r in controlplane.iter_task_records(cluster.plane)]
                    == ["FINISHED"] * (TASKS + 2),
                    WAIT_S,
                    "the finished task records reach Redis",
                )
                yield Live(rt, cluster.cluster_id, cluster.redis.port, cluster.redis.password, actor_id, folder, path)
            finally:
                del probe
                sessions.remove(path)


def test_status_reads_nodes_resources_actors_and_tasks_from_redis(live: Live) -> None:
    report = status.gather(local_cluster(live.rt).plane)
    assert report.cluster_id == live.cluster_id and report.running
    (node,) = report.nodes
    assert node.state == "ALIVE" and node.address.startswith("unix:")
    assert node.resources["CPU"] == NUM_CPUS and node.resources["memory"] > 0
    (actor,) = [a for a in report.actors if a.actor_id == live.actor_id]
    assert (actor.state, actor.name, actor.namespace, actor.restarts) == ("ALIVE", ACTOR_NAME, "default", 0)
    assert actor.worker is not None and actor.node == node.node_id
    assert report.actors_by_state.get("ALIVE", 0) >= 1
    assert report.tasks_by_name["add_one"] == TASKS and report.tasks_by_name["Probe.ping"] == 1
    assert report.tasks_by_state == {"FINISHED": TASKS + 2} and report.tasks_total == TASKS + 2
    assert {f.rpartition(":")[0] for f in report.functions} >= {"add_one", "Probe"}

    out = io.StringIO()
    status.render([report], out, terminal=False)
    text = out.getvalue()
    assert f"cluster: {live.cluster_id}\n" in text
    assert f"node {node.node_id}: ALIVE" in text
    assert re.search(rf"node {node.node_id} resources: CPU (\d+(\.\d+)?/)?{NUM_CPUS}, memory ", text)
    assert f"actor {live.actor_id}: ALIVE, " in text and f"name {ACTOR_NAME} (namespace default)" in text
    # workers and objects: the raylet's stats hash, or a plain "not published" until it writes one
    workers = re.search(rf"node {node.node_id} workers: (.*)\n", text)
    assert workers is not None
    assert workers.group(1) == status.NOT_PUBLISHED or re.fullmatch(r"\d+ alive \(.*\), \d+ blocked", workers.group(1))

    rich = io.StringIO()
    status.render([report], rich, terminal=True)
    assert live.cluster_id in rich.getvalue() and "status_pro" in rich.getvalue()  # 80 columns: names fold


def test_the_cli_finds_the_cluster_through_its_session_file(live: Live) -> None:
    result = _run_cli(session_dir=live.session_dir)
    assert result.returncode == status.EXIT_OK, result.stderr
    assert f"cluster: {live.cluster_id}" in result.stdout
    assert f"driver: pid {os.getpid()}, started " in result.stdout
    assert f"CPU {NUM_CPUS}" in result.stdout or f"/{NUM_CPUS}," in result.stdout
    assert f"actor {live.actor_id}: ALIVE" in result.stdout
    assert live.password not in result.stdout + result.stderr


def test_the_cli_json_output_parses(live: Live) -> None:
    result = _run_cli("--json", session_dir=live.session_dir)
    assert result.returncode == status.EXIT_OK, result.stderr
    assert live.password not in result.stdout
    document = json.loads(result.stdout)
    assert document["errors"] == []
    (cluster,) = [c for c in document["clusters"] if c["cluster_id"] == live.cluster_id]
    assert cluster["session"]["driver_pid"] == os.getpid()
    assert cluster["nodes"][0]["state"] == "ALIVE" and cluster["nodes"][0]["resources"]["CPU"] == NUM_CPUS
    states = {a["actor_id"]: a["state"] for a in cluster["actors"]}
    assert states[live.actor_id] == "ALIVE"


def test_the_cli_reads_an_address_with_a_password_file(live: Live, tmp_path: Path) -> None:
    empty = _private_dir(tmp_path / "no-sessions")  # the password must come from the file
    secret = tmp_path / "password"
    secret.write_text(live.password + "\n")
    os.chmod(secret, 0o600)
    address = f"127.0.0.1:{live.port}"
    result = _run_cli("--address", address, "--password-file", str(secret), "--json", session_dir=empty)
    assert result.returncode == status.EXIT_OK, result.stderr
    (cluster,) = [c for c in json.loads(result.stdout)["clusters"] if c["cluster_id"] == live.cluster_id]
    assert cluster["session"] is None and cluster["redis_address"] == address

    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password")
    result = _run_cli("--address", address, "--password-file", str(wrong), session_dir=empty)
    assert result.returncode == status.EXIT_NO_CLUSTER
    assert "refused the password" in result.stderr
    assert "not-the-password" not in result.stdout + result.stderr

    result = _run_cli("--address", address, "--cluster-id", "nosuch", session_dir=live.session_dir)
    assert result.returncode == status.EXIT_NO_CLUSTER  # the password comes from the session that names the address
    assert f"no cluster nosuch at {address}" in result.stderr and live.cluster_id in result.stderr


# --- no cluster, bad arguments ---------------------------------------------------------------------


def test_the_cli_exits_1_when_no_cluster_runs(tmp_path: Path) -> None:
    folder = _private_dir(tmp_path / "sessions")
    stale = _write(folder, "deadbeef", driver_pid=_dead_pid())
    result = _run_cli(session_dir=folder)
    assert result.returncode == status.EXIT_NO_CLUSTER
    assert "no detray cluster is running for this user" in result.stderr and result.stdout == ""
    assert not stale.exists()
    result = _run_cli("--json", session_dir=folder)
    assert result.returncode == status.EXIT_NO_CLUSTER and json.loads(result.stdout)["clusters"] == []

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    result = _run_cli("--address", f"127.0.0.1:{free_port}", "--password", "pw", session_dir=folder)
    assert result.returncode == status.EXIT_NO_CLUSTER
    assert f"127.0.0.1:{free_port} is unreachable" in result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        ["--address", "no-port-here"],
        ["--address", "127.0.0.1:70000", "--password", "pw"],
        ["--password", "pw"],  # a password without an address
        ["--address", "127.0.0.1:6399", "--password-file", "/nonexistent/detray-password"],
        ["--address", "127.0.0.1:6399"],  # no password anywhere
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(sessions.SESSION_DIR_ENV, str(_private_dir(tmp_path / "s")))
    monkeypatch.delenv(status.PASSWORD_ENV, raising=False)
    assert cli.main(["status", *argv]) == status.EXIT_BAD_INPUT
    assert capsys.readouterr().err.startswith("detray status: ")


def test_password_and_password_file_together_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--address", "127.0.0.1:6399", "--password", "pw", "--password-file", "f"])
    assert exited.value.code == status.EXIT_BAD_INPUT
    assert "not allowed with argument" in capsys.readouterr().err


# --- the node stats hash and the key layout (fakeredis: no raylet overwrites them) --------------------


def _fake_cluster(server: fakeredis.FakeServer, cluster_id: str) -> controlplane.ControlPlane:
    plane = controlplane.ControlPlane(fakeredis.FakeRedis(server=server), cluster_id)
    plane.put_node(
        controlplane.NodeRecord(node_id="node-00000", incarnation=1, resources={"CPU": 2.0, "GPU": 1.0}, state="ALIVE")
    )
    return plane


def test_published_node_stats_are_shown_and_summed() -> None:
    plane = _fake_cluster(fakeredis.FakeServer(), "c1")
    stats = {
        "time_s": 1_700_000_000.5,
        "pid": 4242,
        "workers_alive": 4,
        "workers_warm": 1,
        "workers_idle": 1,
        "workers_busy": 1,
        "workers_actor": 1,
        "workers_blocked": 0,
        "objects_inline": 3,
        "objects_inline_bytes": 2048,
        "store_objects": 2,
        "store_objects_spilled": 1,
        "store_used_bytes": 100 << 20,
        "store_capacity_bytes": 1 << 30,
        "store_disk_bytes": 50 << 20,
        "resources_available": json.dumps({"CPU": 1.0, "GPU": 1.0}),
    }
    controlplane.put_node_stats(plane, "node-00000", stats, ttl_s=30.0)
    report = status.gather(plane)
    assert report.workers == {name: stats[name] for name in status.WORKER_FIELDS}
    assert report.objects is not None and report.objects["store_used_bytes"] == 100 << 20
    node_stats = report.nodes[0].stats
    assert node_stats is not None and node_stats["resources_available"] == {"CPU": 1.0, "GPU": 1.0}

    out = io.StringIO()
    status.render([report], out, terminal=False)
    text = out.getvalue()
    assert "workers: 4 alive (1 warm, 1 idle, 1 busy, 1 actor), 0 blocked\n" in text
    assert "node node-00000 resources: CPU 1/2, GPU 1/1\n" in text
    assert "objects: 3 inline (2.0 KiB); store: 2 (1 spilled), 100.0 MiB used of 1.0 GiB, 50.0 MiB on disk\n" in text
    json.dumps(report.to_json())  # JSON-able as it is

    ttl_ms = plane.client.pttl(controlplane.node_stats_key(plane.keys, "node-00000"))
    assert 0 < ttl_ms <= 30_000  # a raylet that stops reporting leaves no stale figures
    controlplane.put_node_stats(plane, "node-00000", {}, ttl_s=1.0)  # nothing to publish: the hash goes
    assert controlplane.get_node_stats(plane, "node-00000") is None


def test_clusters_are_found_by_their_node_table_only() -> None:
    server = fakeredis.FakeServer()
    plane = _fake_cluster(server, "c1")
    _fake_cluster(server, "odd:id")
    plane.claim_actor_name("ns", "nodes", "A1")  # detray:c1:actor_name:ns:nodes must not look like a cluster
    assert controlplane.find_cluster_ids(plane) == (["c1", "odd:id"], False)
    assert controlplane.find_cluster_ids(plane, limit=1) == (["c1"], True)


def test_docs_describe_the_node_stats_hash() -> None:
    doc = (REPO / "docs" / "real.md").read_text()
    assert "`detray:{c}:node_stats:{node_id}`" in doc
    for name, meaning in status.NODE_STATS_FIELDS.items():
        assert f"| `{name}` | {meaning} |" in doc, name
