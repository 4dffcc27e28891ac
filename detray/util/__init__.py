"""``detray.util``: the parts of ``ray.util`` detray provides.

Provided: ``scheduling_strategies`` (``NodeAffinitySchedulingStrategy``,
``"SPREAD"``/``"DEFAULT"``), ``ActorPool``, ``queue`` (``Queue``, ``Empty``,
``Full``; loaded on first use, like ``import detray.util.queue``),
``as_completed`` and ``map_unordered``. Placement groups and the other
``ray.util`` modules are not: using them raises ``NotImplementedError``
naming them (``detray.api.NOT_IMPLEMENTED``), and ``hasattr`` reports False.
"""

from __future__ import annotations

import importlib
from typing import Any, NoReturn

from detray.util import scheduling_strategies
from detray.util.actor_pool import ActorPool
from detray.util.helpers import as_completed, map_unordered

__all__ = [
    "ActorPool",
    "as_completed",
    "map_unordered",
    "placement_group",
    "queue",
    "remove_placement_group",
    "scheduling_strategies",
]


def _unsupported(name: str) -> NoReturn:
    from detray.api import not_supported

    raise not_supported(f"detray.util.{name}", f"ray.util.{name}")


def placement_group(*args: Any, **kwargs: Any) -> NoReturn:
    """Not supported: placement groups are not implemented by detray."""
    _unsupported("placement_group")


def remove_placement_group(*args: Any, **kwargs: Any) -> NoReturn:
    _unsupported("remove_placement_group")


def get_current_placement_group(*args: Any, **kwargs: Any) -> None:
    """Always ``None``: no task runs in a placement group under detray."""
    return None


_SUBMODULES = ("queue",)
"""Provided submodules loaded on first attribute access (``detray.util.queue``)."""

_UNSUPPORTED = (
    "placement_group_table",
    "multiprocessing",
    "collective",
    "state",
    "list_named_actors",
    "get_node_ip_address",
    "inspect_serializability",
)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _UNSUPPORTED:
        _unsupported(name)
    raise AttributeError(f"module 'detray.util' has no attribute {name!r}")
