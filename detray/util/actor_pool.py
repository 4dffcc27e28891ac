"""``ActorPool``: run work over a fixed set of actors (Ray's ``ray.util.ActorPool``).

Owns: the pool's bookkeeping (idle actors, pending submissions, results in
submission order or as they finish). Built only on the public API (``wait``,
``get``), so it behaves the same on every driver; no background threads
(Ray's prefetch thread is left out: the simulator runs user code on one baton).

Ray's rules kept: ``get_next``/``get_next_unordered`` raise ``StopIteration``
when nothing is pending and the built-in ``TimeoutError`` on timeout (with
``ignore_if_timedout=True`` the timed-out submission is dropped and its actor
returned to the pool); an actor method's exception is raised by the call that
fetches its result and the actor stays in the pool, unless the actor died
(``ActorDiedError``), which removes it; ``map``/``map_unordered`` first discard
the results still pending from earlier submissions. Added: ``submit`` checks
that ``fn`` returned an ``ObjectRef`` (or a list of them) and says so if not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

V = TypeVar("V")

__all__ = ["ActorPool"]


class ActorPool:
    """Operate on a fixed pool of actors: ``pool.map(lambda a, v: a.f.remote(v), values)``."""

    def __init__(self, actors: Iterable[Any]) -> None:
        self._idle_actors: list[Any] = list(actors)
        self._future_to_actor: dict[Any, tuple[int, Any]] = {}
        self._index_to_future: dict[int, Any] = {}
        self._next_task_index = 0
        self._next_return_index = 0
        self._pending_submits: list[tuple[Callable[[Any, Any], Any], Any]] = []

    def map(self, fn: Callable[[Any, V], Any], values: Iterable[V]) -> Iterator[Any]:
        """Results of ``fn(actor, value)`` for each value, in order (an iterator)."""
        self._drain(ordered=True)
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next()

        return results()

    def map_unordered(self, fn: Callable[[Any, V], Any], values: Iterable[V]) -> Iterator[Any]:
        """Like ``map``, results as they finish."""
        self._drain(ordered=False)
        for value in values:
            self.submit(fn, value)

        def results() -> Iterator[Any]:
            while self.has_next():
                yield self.get_next_unordered()

        return results()

    def submit(self, fn: Callable[[Any, V], Any], value: V) -> None:
        """Run ``fn(actor, value)`` on an idle actor, or queue it until one is free."""
        if not callable(fn):
            raise TypeError(
                f"ActorPool.submit(): fn must be callable as fn(actor, value), got {type(fn).__name__}"
            )
        if not self._idle_actors:
            self._pending_submits.append((fn, value))
            return
        actor = self._idle_actors.pop()
        try:
            future = fn(actor, value)
            _check_future(future)
        except BaseException:
            self._idle_actors.append(actor)
            raise
        key = tuple(future) if isinstance(future, list) else future
        self._future_to_actor[key] = (self._next_task_index, actor)
        self._index_to_future[self._next_task_index] = future
        self._next_task_index += 1

    def has_next(self) -> bool:
        """Whether a submitted result has not been returned yet."""
        return bool(self._future_to_actor)

    def get_next(self, timeout: float | None = None, ignore_if_timedout: bool = False) -> Any:
        """The next result in submission order (``TimeoutError`` after ``timeout`` seconds)."""
        from detray.api import wait

        if not self.has_next():
            raise StopIteration("No more results to get")
        if self._next_return_index >= self._next_task_index:
            raise ValueError("It is not allowed to call get_next() after get_next_unordered().")
        future = self._index_to_future[self._next_return_index]
        timed_out = False
        if timeout is not None:
            ready, _ = wait(_as_list(future), num_returns=len(_as_list(future)), timeout=timeout)
            if len(ready) < len(_as_list(future)):
                if not ignore_if_timedout:
                    raise TimeoutError("Timed out waiting for result")
                timed_out = True
        del self._index_to_future[self._next_return_index]
        self._next_return_index += 1
        key = tuple(future) if isinstance(future, list) else future
        _, actor = self._future_to_actor.pop(key)
        if timed_out:
            self._return_actor(actor)
            raise TimeoutError(f"Timed out waiting for result. The task {future} has been ignored.")
        return self._get_result(future, actor)

    def get_next_unordered(
        self, timeout: float | None = None, ignore_if_timedout: bool = False
    ) -> Any:
        """Any finished result (``TimeoutError`` after ``timeout`` seconds)."""
        from detray.api import wait

        if not self.has_next():
            raise StopIteration("No more results to get")
        keys = list(self._future_to_actor)
        by_ref: dict[Any, Any] = {}
        for key in keys:
            by_ref.setdefault(key[0] if isinstance(key, tuple) else key, key)
        ready, _ = wait(list(by_ref), num_returns=1, timeout=timeout)
        if ready:
            key = by_ref[ready[0]]
        elif ignore_if_timedout:
            key = keys[0]
        else:
            raise TimeoutError("Timed out waiting for result")
        index, actor = self._future_to_actor.pop(key)
        future = self._index_to_future.pop(index)
        self._next_return_index = max(self._next_return_index, index + 1)
        if not ready:
            self._return_actor(actor)
            raise TimeoutError(f"Timed out waiting for result. The task {future} has been ignored.")
        return self._get_result(future, actor)

    def has_free(self) -> bool:
        """Whether an actor is idle and no submission waits for one."""
        return bool(self._idle_actors) and not self._pending_submits

    def pop_idle(self) -> Any:
        """Remove an idle actor from the pool and return it (``None`` unless ``has_free()``)."""
        return self._idle_actors.pop() if self.has_free() else None

    def push(self, actor: Any) -> None:
        """Add an actor to the pool (``ValueError`` if it is in the pool already); it takes a
        waiting submission at once if there is one."""
        busy = [entry[1] for entry in self._future_to_actor.values()]
        if actor in self._idle_actors or actor in busy:
            raise ValueError("Actor already belongs to current ActorPool")
        self._return_actor(actor)

    def _get_result(self, future: Any, actor: Any) -> Any:
        from detray.api import get
        from detray.exceptions import ActorDiedError

        alive = True
        try:
            return get(future)
        except ActorDiedError:
            alive = False
            raise
        finally:
            self._return_actor(actor, alive=alive)

    def _return_actor(self, actor: Any, alive: bool = True) -> None:
        if alive:
            self._idle_actors.append(actor)
        if self._pending_submits and self._idle_actors:
            self.submit(*self._pending_submits.pop(0))

    def _drain(self, *, ordered: bool) -> None:
        """Discard every pending result (what ``map``/``map_unordered`` do first).

        Ordered: results not ready are dropped at once (their actors return to
        the pool and run the next calls after them). Unordered: wait for each
        pending result, as Ray does by polling; blocking here waits the same
        without spinning. An error among them is raised, as in Ray.
        """
        while self.has_next():
            try:
                if not ordered:
                    self.get_next_unordered()
                elif self._next_return_index < self._next_task_index:
                    self.get_next(timeout=0, ignore_if_timedout=True)
                else:
                    # After get_next_unordered() the ordered cursor may have passed every
                    # submission still pending: those can only be reached unordered.
                    self.get_next_unordered(timeout=0, ignore_if_timedout=True)
            except TimeoutError:
                pass


def _check_future(future: Any) -> None:
    from detray.object_ref import ObjectRef

    refs = future if isinstance(future, list) else [future]
    if not refs or not all(isinstance(ref, ObjectRef) for ref in refs):
        raise TypeError(
            "ActorPool: fn(actor, value) must return an ObjectRef (or a non-empty list of them), "
            f"for example 'lambda a, v: a.method.remote(v)'; it returned {future!r}"
        )


def _as_list(future: Any) -> list[Any]:
    return list(future) if isinstance(future, list) else [future]
