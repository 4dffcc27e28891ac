"""Scheduling strategy objects users pass as ``scheduling_strategy=`` (``ray.util.scheduling_strategies``).

Owns: the user-facing strategy classes with Ray's constructor signatures.
``detray/options.py`` turns them into the core's ``detray.core.specs``
strategies. Placement groups and label selection are not supported: their
classes exist so that imports keep working, and constructing one raises
``NotImplementedError`` naming it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_SCHEDULING_STRATEGY",
    "SPREAD_SCHEDULING_STRATEGY",
    "NodeAffinitySchedulingStrategy",
    "NodeLabelSchedulingStrategy",
    "PlacementGroupSchedulingStrategy",
]

DEFAULT_SCHEDULING_STRATEGY = "DEFAULT"
SPREAD_SCHEDULING_STRATEGY = "SPREAD"


class NodeAffinitySchedulingStrategy:
    """Run on the node ``node_id``; with ``soft=True`` fall back to the default policy
    when that node is dead or cannot take the task; with ``soft=False`` the task
    fails with ``TaskUnschedulableError`` when the node is dead.

    ``node_id`` is a node id as ``get_runtime_context().get_node_id()`` or
    ``nodes()[i]["NodeID"]`` report it.
    """

    __slots__ = ("node_id", "soft", "_spill_on_unavailable", "_fail_on_unavailable")

    def __init__(
        self,
        node_id: str,
        soft: bool,
        _spill_on_unavailable: bool = False,
        _fail_on_unavailable: bool = False,
    ) -> None:
        if not isinstance(node_id, str):
            raise TypeError(
                f"NodeAffinitySchedulingStrategy: node_id must be a str, got {type(node_id).__name__}"
            )
        if not isinstance(soft, bool):
            raise TypeError(
                f"NodeAffinitySchedulingStrategy: soft must be a bool, got {type(soft).__name__}"
            )
        if _spill_on_unavailable or _fail_on_unavailable:
            raise NotImplementedError(
                "NodeAffinitySchedulingStrategy(_spill_on_unavailable/_fail_on_unavailable) "
                "is not supported by detray"
            )
        self.node_id = node_id
        self.soft = soft
        self._spill_on_unavailable = _spill_on_unavailable
        self._fail_on_unavailable = _fail_on_unavailable

    def __repr__(self) -> str:
        return f"NodeAffinitySchedulingStrategy(node_id={self.node_id!r}, soft={self.soft})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, NodeAffinitySchedulingStrategy)
            and other.node_id == self.node_id
            and other.soft == self.soft
        )

    def __hash__(self) -> int:
        return hash((self.node_id, self.soft))

    def __reduce__(self) -> tuple[Any, ...]:
        return (NodeAffinitySchedulingStrategy, (self.node_id, self.soft))


class PlacementGroupSchedulingStrategy:
    """Not supported: placement groups are not implemented by detray."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "PlacementGroupSchedulingStrategy: placement groups are not supported by detray"
        )


class NodeLabelSchedulingStrategy:
    """Not supported: node labels are not implemented by detray."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(
            "NodeLabelSchedulingStrategy: node label scheduling is not supported by detray"
        )
