"""``as_completed`` and ``map_unordered``: results as they finish (Ray's ``ray.util`` helpers).

Owns: the two iterators over ``wait``. Built only on the public API, so
they behave the same on every driver.

Ray's rules kept: both are generators, so nothing runs (and ``map_unordered``
submits nothing) until the first ``next()``; results come in batches of
``chunk_size`` refs that ``wait`` found ready, in submission order within a
batch; other keyword arguments (``timeout``, ``fetch_local``) go to ``wait``
and a ``timeout`` only lets a smaller batch out early, it never raises;
``map_unordered`` keeps at most ``backpressure_size`` tasks in flight
(``None``: no limit). A task's error is raised when its batch is fetched.
Added: the arguments are checked when the iterator is made, not at its
first ``next()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

__all__ = ["as_completed", "map_unordered"]

DEFAULT_CHUNK_SIZE = 10
DEFAULT_BACKPRESSURE_SIZE = 100


def as_completed(
    refs: Sequence[Any], *, chunk_size: int = DEFAULT_CHUNK_SIZE, yield_obj_refs: bool = False, **kwargs: Any
) -> Iterator[Any]:
    """Yield the results of ``refs`` (or the refs, ``yield_obj_refs=True``) as they become ready.

    Each step waits for ``min(chunk_size, refs left)`` refs with ``wait(...,
    **kwargs)`` and yields those.
    """
    from detray.object_ref import ObjectRef

    _check_chunk_size("as_completed", chunk_size, kwargs)
    if isinstance(refs, ObjectRef) or not isinstance(refs, Sequence):
        raise TypeError(f"as_completed(): refs must be a list of ObjectRef, got {type(refs).__name__}")
    pending = list(refs)
    for ref in pending:
        if not isinstance(ref, ObjectRef):
            raise TypeError(f"as_completed(): refs must be a list of ObjectRef, got an item {ref!r}")
    if len(set(pending)) != len(pending):
        raise ValueError("as_completed(): refs must not hold the same ObjectRef twice")
    return _as_completed(pending, chunk_size, yield_obj_refs, kwargs)


def map_unordered(
    fn: Any,
    items: Iterable[Any],
    *,
    backpressure_size: int | None = DEFAULT_BACKPRESSURE_SIZE,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    yield_obj_refs: bool = False,
    **kwargs: Any,
) -> Iterator[Any]:
    """Run ``fn.remote(item)`` for each item; yield the results as they finish.

    When ``backpressure_size`` tasks are in flight, wait for a batch of
    ``chunk_size`` of them (yielding it) before submitting more.
    """
    from detray.remote_function import RemoteFunction

    if not isinstance(fn, RemoteFunction):
        raise TypeError(
            f"map_unordered(): fn must be a remote function (decorated with @remote), got {fn!r}"
        )
    if backpressure_size is not None:
        if isinstance(backpressure_size, bool) or not isinstance(backpressure_size, int):
            raise TypeError(
                "map_unordered(): backpressure_size must be a positive int or None, "
                f"got {type(backpressure_size).__name__}"
            )
        if backpressure_size <= 0:
            raise ValueError(f"map_unordered(): backpressure_size must be positive, got {backpressure_size}")
    _check_chunk_size("map_unordered", chunk_size, kwargs)
    if not isinstance(items, Iterable):
        raise TypeError(f"map_unordered(): items must be iterable, got {type(items).__name__}")
    return _map_unordered(fn, items, backpressure_size, chunk_size, yield_obj_refs, kwargs)


def _as_completed(
    pending: list[Any], chunk_size: int, yield_obj_refs: bool, wait_kwargs: dict[str, Any]
) -> Iterator[Any]:
    while pending:
        batch, pending = _next_batch(pending, chunk_size, yield_obj_refs, wait_kwargs)
        yield from batch


def _map_unordered(
    fn: Any,
    items: Iterable[Any],
    backpressure_size: int | None,
    chunk_size: int,
    yield_obj_refs: bool,
    wait_kwargs: dict[str, Any],
) -> Iterator[Any]:
    in_flight: list[Any] = []
    for item in items:
        in_flight.append(fn.remote(item))
        if backpressure_size is not None and len(in_flight) >= backpressure_size:
            batch, in_flight = _next_batch(in_flight, chunk_size, yield_obj_refs, wait_kwargs)
            yield from batch
    yield from _as_completed(in_flight, chunk_size, yield_obj_refs, wait_kwargs)


def _next_batch(
    pending: list[Any], chunk_size: int, yield_obj_refs: bool, wait_kwargs: dict[str, Any]
) -> tuple[list[Any], list[Any]]:
    """(results or refs of the ready batch, refs still pending)."""
    from detray.api import get, wait

    ready, rest = wait(pending, num_returns=min(chunk_size, len(pending)), **wait_kwargs)
    return (ready if yield_obj_refs else get(ready)), rest


def _check_chunk_size(where: str, chunk_size: int, wait_kwargs: dict[str, Any]) -> None:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"{where}(): chunk_size must be an int >= 1, got {type(chunk_size).__name__}")
    if chunk_size < 1:
        raise ValueError(f"{where}(): chunk_size must be >= 1, got {chunk_size}")
    if "num_returns" in wait_kwargs:
        raise ValueError(f"{where}(): use the chunk_size argument instead of num_returns")
    unknown = set(wait_kwargs) - {"timeout", "fetch_local"}
    if unknown:
        raise TypeError(
            f"{where}(): unexpected keyword arguments {sorted(unknown)}; "
            "only wait()'s timeout and fetch_local are passed on"
        )
