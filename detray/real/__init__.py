"""detray's real runtime: processes, shared memory and a Redis control plane (in progress).

Only building blocks exist so far: ``redis_server`` (a private Redis for a
cluster or a test) and ``object_store`` (the node's shared-memory object
store, with ``shm_client``, ``shm_files``, ``shm_layout``); see docs/real.md. This package
defines no ``start`` yet on purpose: ``detray.init`` looks for a callable
``start`` here to decide that the real runtime exists.
"""
