"""detray's real runtime: processes, shared memory and a Redis control plane.

``start`` (called by ``detray.init()`` without ``mode="sim"``) starts a
private cluster on this machine: a Redis server, a raylet process hosting the
core, worker processes and a shared-memory object store (``cluster``). The
modules: ``raylet`` (the node's process), ``worker`` (a worker process),
``runtime`` (the API in a driver or worker), ``client`` (the connection to the
raylet), ``protocol`` (messages), ``object_store`` with ``shm_client``,
``shm_files``, ``shm_layout`` (the store), ``channel`` (authenticated
connections), ``processes`` (children that die with their parent),
``redis_server`` (a private Redis), ``zygote`` (workers forked from a
pre-imported process), ``session`` (how ``detray status`` finds a running
cluster) and ``status`` (what it prints). See docs/real.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detray.runtime import InitOptions


def start(options: InitOptions) -> Any:
    """Start a private cluster on this machine for ``detray.init`` (the ``Driver`` protocol)."""
    from detray.real.cluster import start as start_cluster

    return start_cluster(options)
