"""Named settings of detray's public API layer (sizes, limits, environment names).

Owns: the constants the API, the serializer and both drivers read, each with
its unit last and the reason for its value. Code reads them as
``settings.NAME`` at call time (never copies them at import), so a test or a
driver can change one with ``monkeypatch.setattr(settings, "NAME", ...)``.

Must not: import anything from detray, read the environment at import time
(the helpers below read it when called), or hold mutable state.
"""

from __future__ import annotations

import os

INLINE_THRESHOLD_BYTES = 100 * 1024
"""A serialized value at most this large travels inline with the task or reply;
larger ones go to the object store. Ray's ``max_direct_call_object_size``
(100 KiB)."""

PICKLE_PROTOCOL = 5
"""Protocol 5 gives out-of-band buffers (PEP 574): numpy data can live in shared
memory and be mapped without a copy."""

UNPICKLABLE_SEARCH_NODES_MAX = 2_000
"""When a value cannot be pickled, at most this many of its parts are tried one
by one to name the culprit; beyond it the message names the deepest part found."""

UNPICKLABLE_SEARCH_DEPTH_MAX = 50
"""How deep the culprit search descends into containers and attributes."""

DUAL_EXCEPTION_TYPES_MAX = 1_024
"""Dynamic ``RayTaskError(<cause type>)`` classes cached at most (one per cause type)."""

# --- environment variables ----------------------------------------------------

MODE_ENV = "DETRAY_MODE"
"""``sim`` runs programs on the simulated cluster; anything else (or unset) the real runtime."""

SEED_ENV = "DETRAY_SEED"
"""Run seed of the simulator when ``init`` is not given one."""

AUTO_CONNECT_ENV = "DETRAY_ENABLE_AUTO_CONNECT"
"""Set to ``0`` to make API calls before ``init`` fail instead of starting a runtime
(Ray's ``RAY_ENABLE_AUTO_CONNECT``)."""

MODE_SIM = "sim"
MODE_REAL = "real"
MODES = (MODE_SIM, MODE_REAL)
DEFAULT_MODE = MODE_REAL
DEFAULT_SEED = 0


def mode_from_env() -> str:
    """The mode asked for by ``DETRAY_MODE`` (default: the real runtime)."""
    value = os.environ.get(MODE_ENV, "").strip().lower()
    return value or DEFAULT_MODE


def seed_from_env() -> int:
    """The seed asked for by ``DETRAY_SEED`` (default 0); a non-integer is a ValueError naming it."""
    raw = os.environ.get(SEED_ENV, "").strip()
    if not raw:
        return DEFAULT_SEED
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV}={raw!r} is not an integer seed") from None


def auto_connect_enabled() -> bool:
    return os.environ.get(AUTO_CONNECT_ENV, "") != "0"


IGNORED_INIT_KEYWORDS = frozenset(
    {
        "include_dashboard",
        "dashboard_host",
        "dashboard_port",
        "configure_logging",
        "logging_level",
        "logging_format",
        "log_to_driver",
        "_system_config",
        "_temp_dir",
        "_metrics_export_port",
        "_node_ip_address",
        "job_config",
        "storage",
        "_enable_object_reconstruction",
        "_plasma_directory",
        "object_spilling_directory",
    }
)
"""Ray ``init`` keywords both drivers accept and ignore (dashboard, logging and storage knobs)."""
