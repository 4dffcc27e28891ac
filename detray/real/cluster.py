"""Starting and stopping a private one-machine cluster for ``detray.init()``.

Owns: the choices ``init`` leaves to the runtime (resources detected from
the machine, the object store's size, which ``init`` keywords are accepted),
the order of start-up (Redis, then the raylet, then this process's
connection) and of tear-down (the raylet stops its workers and removes its
store; then Redis), and the guarantee that a failed start leaves nothing
running. Must not: run the core (the raylet does) or serve API calls
(``RealRuntime`` does).

Theory of operation: the driver starts a password-protected Redis on a free
loopback port (``RedisServer``), makes a cluster token, and spawns the raylet
(``spawn_python_child``: the token and the Redis password travel through an
inherited pipe, never argv or the environment; the raylet gets SIGTERM when
this process dies, so even a SIGKILLed driver leaves no shared memory). The
raylet writes its node record, with its channel address, to Redis; the
driver waits for it, connects over the authenticated channel, and says hello.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import sys
import threading
import time
from detray import controlplane
from detray.core import ids
from detray.core.ids import JobID, NodeID, WorkerID
from detray.exceptions import RaySystemError
from detray.options import to_units
from detray.real import protocol as P
from detray.real import session
from detray.real.channel import connect, new_token
from detray.real.client import RayletConnection
from detray.real.processes import ChildProcess, spawn_python_child
from detray.real.redis_server import RedisServer
from detray.real.runtime import DEFAULT_NAMESPACE, Caller, RealRuntime
from detray.real.shm_client import StoreClient
from detray.runtime import InitOptions
from detray.settings import IGNORED_INIT_KEYWORDS

RAYLET_TARGET = "detray.real.raylet_main:main"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
OBJECT_STORE_FRACTION = 0.3
"""Of the machine's memory, as Ray's default (capped by /dev/shm's size)."""
OBJECT_STORE_MIN_BYTES = 64 << 20



def machine_memory_bytes() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def default_store_bytes() -> int:
    wanted = int(machine_memory_bytes() * OBJECT_STORE_FRACTION)
    try:
        shm = shutil.disk_usage("/dev/shm").free
        if shm >= OBJECT_STORE_MIN_BYTES:
            wanted = min(wanted, int(shm * 0.95))
    except OSError:
        pass
    return max(wanted, OBJECT_STORE_MIN_BYTES)


def node_resources(options: InitOptions) -> dict[str, int]:
    cpus = options.num_cpus if options.num_cpus is not None else float(os.cpu_count() or 1)
    gpus = options.num_gpus if options.num_gpus is not None else 0.0
    quantities: dict[str, float] = {"CPU": cpus}
    if gpus:
        quantities["GPU"] = gpus
    for name, amount in (options.resources or {}).items():
        if name in ("CPU", "GPU"):
            raise ValueError(f"init(resources=...): use num_cpus/num_gpus for {name}, not resources={{'{name}': ...}}")
        quantities[name] = amount
    quantities["memory"] = float(machine_memory_bytes())
    return to_units(quantities, "init()")


class LocalCluster:
    """The processes of a private cluster this driver started (see the module docstring)."""

    def __init__(self, options: InitOptions) -> None:
        extra = dict(options.extra)
        unknown = sorted(key for key in extra if key not in IGNORED_INIT_KEYWORDS)
        if unknown:
            raise TypeError(f"init() got unexpected keyword argument(s) {unknown} (detray's real runtime)")
        if options.address not in (None, "local"):
            raise NotImplementedError(
                f"init(address={options.address!r}): connecting to a running cluster is not supported yet; "
                "init() without an address starts a private cluster on this machine"
            )
        self.resources = node_resources(options)
        store_bytes = options.object_store_memory or default_store_bytes()
        self.token = new_token()
        self.cluster_id = secrets.token_hex(4)
        self.job = ids.job_id(1)
        self.node = ids.node_id(0)
        self.namespace = options.namespace or DEFAULT_NAMESPACE
        self.redis: RedisServer | None = None
        self.raylet: ChildProcess | None = None
        self.conn: RayletConnection | None = None
        self.plane: controlplane.ControlPlane | None = None
        self._stopped = False
        self.session_path: str | None = None
        self._lock = threading.Lock()
        try:
            self.redis = RedisServer().start()
            self.plane = self.redis.control_plane(self.cluster_id)
            config = {
                "node_id": self.node,
                "job": self.job,
                "namespace": self.namespace,
                "env_vars": dict(options.env_vars),
                "resources": self.resources,
                "object_store_bytes": int(store_bytes),
                "store_name": f"detray_{self.cluster_id}_{self.node.replace('-', '_')}",
                "redis_host": self.redis.host,
                "redis_port": self.redis.port,
                "redis_password": self.redis.password,
                "cluster_id": self.cluster_id,
                "cwd": os.getcwd(),
                "sys_path": list(sys.path),
            }
            self.raylet = spawn_python_child(
                RAYLET_TARGET,
                token=self.token,
                payload=config,
                name="detray-raylet",
                death_signal=signal.SIGTERM,
            )
            address = self._wait_for_raylet()
            channel = connect(address, self.token)
            self.printer = _Printer(options.log_to_driver)
            self.conn = RayletConnection(channel, self.printer.on_push)
            hello = self.conn.call(lambda req: (P.HELLO, req, "driver", os.getpid()), START_TIMEOUT_S)
            self.store = StoreClient(hello["store"])
            try:  # how `detray status` finds this cluster (readable by this user only)
                self.session_path = str(
                    session.write(
                        cluster_id=self.cluster_id,
                        redis_host=self.redis.host,
                        redis_port=self.redis.port,
                        redis_password=self.redis.password,
                    )
                )
            except OSError as exc:  # the cluster works without it
                print(f"detray warning: no session file ({exc}); `detray status` needs --address", file=sys.stderr)
        except BaseException:
            self.stop()
            raise

    def _wait_for_raylet(self) -> str:
        assert self.plane is not None and self.raylet is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        delay_s = 0.002
        while time.monotonic() < deadline:
            record = self.plane.get_node(self.node)
            if record is not None and record.state == "ALIVE" and record.address:
                return record.address
            if not self.raylet.running:
                raise RaySystemError(
                    f"the raylet exited during start-up (exit code {self.raylet.returncode}); its error is above"
                )
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.05)
        raise RaySystemError(f"the raylet did not come up within {START_TIMEOUT_S} s")

    def runtime(self) -> RealRuntime:
        assert self.conn is not None and self.plane is not None
        driver = WorkerID(f"{self.node}/driver")
        caller = Caller(driver, JobID(self.job), ids.driver_task_id(JobID(self.job)), name="driver")
        assert self.redis is not None
        info = {
            "address": f"127.0.0.1:{self.redis.port}",
            "redis_address": f"127.0.0.1:{self.redis.port}",
            "gcs_address": f"127.0.0.1:{self.redis.port}",
            "node_id": self.node,
            "mode": "real",
            "cluster_id": self.cluster_id,
            "webui_url": None,
            "session_dir": None if self.session_path is None else os.path.dirname(self.session_path),
        }
        return RealRuntime(
            self.conn,
            self.store,
            self.plane,
            node=NodeID(self.node),
            job=JobID(self.job),
            namespace=self.namespace,
            default_caller=caller,
            address_info=info,
            on_shutdown=self.stop,
        )

    def stop(self) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        if self.conn is not None and not self.conn.closed:
            try:
                self.conn.call(lambda req: (P.SHUTDOWN, req), STOP_TIMEOUT_S)
            except Exception:  # noqa: BLE001 -- the raylet may be gone already; it is stopped below
                pass
            self.conn.close()
        if self.raylet is not None:
            try:
                self.raylet.wait(STOP_TIMEOUT_S)
            except Exception:  # noqa: BLE001 -- stuck: stopped below
                pass
            self.raylet.stop(STOP_TIMEOUT_S)
        if self.plane is not None:
            try:
                self.plane.client.close()
            except Exception:  # noqa: BLE001
                pass
        if self.session_path is not None:
            session.remove(self.session_path)
        if self.redis is not None:
            self.redis.stop()


class _Printer:
    """Lines workers print, shown on the driver's own stdout/stderr."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def on_push(self, message: P.Message) -> None:
        if message[0] == P.PRINT and self.enabled:
            stream = sys.stderr if message[2] == "stderr" else sys.stdout
            try:
                print(message[1], file=stream, flush=True)
            except Exception:  # noqa: BLE001 -- a closed stream at exit
                pass


def start(options: InitOptions) -> RealRuntime:
    """``detray.init()`` on real processes: a private cluster on this machine."""
    return LocalCluster(options).runtime()

