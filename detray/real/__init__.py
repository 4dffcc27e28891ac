"""detray's real runtime: processes, shared memory and a Redis control plane (in progress).

Only building blocks exist so far (``detray.real.redis_server``). This package
defines no ``start`` yet on purpose: ``detray.init`` looks for a callable
``start`` here to decide that the real runtime exists.
"""
