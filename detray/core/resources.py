"""Resource quantities in fixed point, and per-node accounting with GPU ids.

Owns: conversion of user quantities (``num_cpus=0.5``) to integer units of
1/10,000 (as Ray does), so that sums and differences are exact; the arithmetic
on resource maps; and ``NodeResources``, the ledger of one node (total,
available, and which GPU instances hold how much).

Must not: read a clock, draw randomness, or know about tasks beyond a request.

Theory of operation: a request is a ``dict[str, int]`` of units. ``available``
never goes below zero and never exceeds ``total``; ``total - available`` is
exactly the sum of what allocations hold. GPUs are also tracked per instance:
a fractional request is packed onto the lowest-numbered GPU with room (Ray
packs fractional GPUs), a whole request takes the lowest-numbered free GPUs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

UNIT = 10_000
"""Units per whole resource: 0.0001 is the finest granularity."""

CPU = "CPU"
GPU = "GPU"
MEMORY = "memory"
OBJECT_STORE_MEMORY = "object_store_memory"

Units = dict[str, int]
"""A resource map in fixed-point units, for example ``{"CPU": 5000}`` for half a CPU."""


class ResourceError(ValueError):
    """A resource quantity from the user is invalid; the message names it."""


def to_units(name: str, quantity: float) -> int:
    """Convert a user quantity of resource ``name`` to fixed-point units.

    Raises ``ResourceError`` naming the resource for negative, non-finite or
    too-fine values (finer than 1/10,000), and for GPU requests above one that
    are not whole numbers (Ray's rule).
    """
    if isinstance(quantity, bool) or not isinstance(quantity, (int, float)):
        raise ResourceError(
            f"resource {name!r}: quantity must be a number, got {type(quantity).__name__}"
        )
    if not math.isfinite(quantity) or quantity < 0:
        raise ResourceError(f"resource {name!r}: quantity must be finite and >= 0, got {quantity}")
    scaled = quantity * UNIT
    units = round(scaled)
    if abs(scaled - units) > 1e-6 * max(1.0, abs(scaled)):
        raise ResourceError(
            f"resource {name!r}: {quantity} is finer than 1/{UNIT}; round it to 4 decimals"
        )
    if name == GPU and units > UNIT and units % UNIT:
        raise ResourceError(f"resource 'GPU': a request above 1 must be whole, got {quantity}")
    return units


def units_of(quantities: Mapping[str, float]) -> Units:
    """Convert a map of user quantities; zero entries are dropped."""
    out: Units = {}
    for name in sorted(quantities):
        units = to_units(name, quantities[name])
        if units:
            out[name] = units
    return out


def to_float(units: int) -> float:
    return units / UNIT


def as_floats(units: Mapping[str, int]) -> dict[str, float]:
    return {name: units[name] / UNIT for name in sorted(units)}


def fits(request: Mapping[str, int], available: Mapping[str, int]) -> bool:
    """True when every requested quantity is available."""
    for name, amount in request.items():
        if amount > available.get(name, 0):
            return False
    return True


def add(into: Units, amounts: Mapping[str, int]) -> None:
    for name, amount in amounts.items():
        into[name] = into.get(name, 0) + amount


def subtract(into: Units, amounts: Mapping[str, int]) -> None:
    for name, amount in amounts.items():
        into[name] = into.get(name, 0) - amount


def utilization(total: Mapping[str, int], available: Mapping[str, int]) -> float:
    """Ray's "critical resource utilization": the highest used fraction of any resource."""
    worst = 0.0
    for name, cap in total.items():
        if cap > 0:
            used = (cap - available.get(name, 0)) / cap
            if used > worst:
                worst = used
    return worst


@dataclass(slots=True)
class Allocation:
    """What one holder (a task attempt or actor worker) holds on a node."""

    units: Units
    gpu_ids: tuple[int, ...] = ()
    gpu_units: tuple[int, ...] = ()
    """Units taken from each GPU in ``gpu_ids`` (same order)."""


@dataclass(slots=True)
class NodeResources:
    """The ledger of one node: total, available, and per-GPU-instance room."""

    total: Units
    available: Units = field(default_factory=dict)
    gpu_free: list[int] = field(default_factory=list)
    """Free units on each GPU instance, by GPU id."""

    @classmethod
    def of(cls, total: Mapping[str, int]) -> NodeResources:
        gpus = total.get(GPU, 0)
        if gpus % UNIT:
            raise ResourceError(f"a node's GPU count must be whole, got {gpus / UNIT}")
        return cls(
            total=dict(total), available=dict(total), gpu_free=[UNIT] * (gpus // UNIT)
        )

    def feasible(self, request: Mapping[str, int]) -> bool:
        """True when the request could ever fit on this node (ignoring current load)."""
        return fits(request, self.total)

    def can_allocate(self, request: Mapping[str, int]) -> bool:
        available = self.available
        for name, amount in request.items():
            if amount > available.get(name, 0):
                return False
        gpus = request.get(GPU, 0)
        return not gpus or self._pick_gpus(gpus) is not None

    def allocate(self, request: Mapping[str, int]) -> Allocation:
        """Take ``request``; the caller checked ``can_allocate``."""
        available = self.available
        gpus = request.get(GPU, 0)
        if not gpus:  # the common case: no GPU instance to pick
            for name, amount in request.items():
                left = available.get(name, 0) - amount
                assert left >= 0, (request, available)
                available[name] = left
            return Allocation(dict(request))
        picked = self._pick_gpus(gpus)
        assert picked is not None and fits(request, available), (request, available)
        subtract(available, request)
        for gpu, taken in picked:
            self.gpu_free[gpu] -= taken
        return Allocation(
            units=dict(request),
            gpu_ids=tuple([gpu for gpu, _ in picked]),
            gpu_units=tuple([taken for _, taken in picked]),
        )

    def release(self, allocation: Allocation) -> None:
        available = self.available
        for name, amount in allocation.units.items():
            available[name] = available.get(name, 0) + amount
        if allocation.gpu_ids:
            for gpu, taken in zip(allocation.gpu_ids, allocation.gpu_units):
                self.gpu_free[gpu] += taken
            allocation.gpu_ids = ()
            allocation.gpu_units = ()
        allocation.units = {}

    def release_part(self, allocation: Allocation, name: str) -> int:
        """Give back the ``name`` part of an allocation (a blocked worker's CPUs)."""
        assert name != GPU, "GPU instances are never released partially"
        amount = allocation.units.pop(name, 0)
        self.available[name] = self.available.get(name, 0) + amount
        return amount

    def reacquire_part(self, allocation: Allocation, name: str, amount: int) -> int:
        """Take back up to ``amount`` of ``name`` (never more than is available)."""
        taken = min(amount, self.available.get(name, 0))
        if taken:
            self.available[name] -= taken
            allocation.units[name] = allocation.units.get(name, 0) + taken
        return taken

    def _pick_gpus(self, units: int) -> list[tuple[int, int]] | None:
        if units == 0:
            return []
        if units < UNIT:
            for gpu, free in enumerate(self.gpu_free):
                if free >= units:
                    return [(gpu, units)]
            return None
        wanted = units // UNIT
        whole = [gpu for gpu, free in enumerate(self.gpu_free) if free == UNIT]
        if len(whole) < wanted:
            return None
        return [(gpu, UNIT) for gpu in whole[:wanted]]
