"""The lineage oracle: a faulty run must agree with a run without faults, or fail for a
reason its faults explain.

Owns: ``reference(program)`` (the program once, without faults, on one node
with one CPU: tasks run one at a time in submission order, as plain
sequential code would run them), ``check(outcome, reference)`` (raises
``OracleError`` naming the first object whose value differs, or the error
no injected fault explains, with a scenario that replays the run) and
``explain(outcome)``. Must not: run anything but the reference.

What "explained" means (Ray's documented failure semantics):

- a value: every object a ``get`` returned in both runs holds equal values
  (object ids are the same in every run of a program, and a rebuilt object
  keeps its id), and so does the program's result;
- an error the reference run raised too (same type): the program's own;
- otherwise an error whose cause is a fault that was injected: worker or
  node deaths for ``WorkerCrashedError``, ``NodeDiedError``,
  ``OwnerDiedError``; ``ActorDiedError`` / ``RayActorError`` only when an
  actor's restarts were spent; ``ObjectLostError`` only for an object
  without lineage (a ``put``, an actor task's output) after a fault that
  loses copies, its ``ObjectReconstructionFailed*`` variants when rebuilding
  failed; ``GetTimeoutError`` only after a fault that delays (partitions,
  slow nodes, deaths, notification faults). Deadlocks and simulation limits
  are never explained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from detray import exceptions as X
from detray.core.ids import ObjectID, creating_task, is_put
from detray.testing.harness import Outcome, run

REFERENCE_CLUSTER: dict[str, Any] = {"nodes": [{"count": 1, "resources": {"CPU": 1}}]}

_DEATHS = frozenset({"KillNode", "KillWorker", "Partition"})
_COPY_LOSSES = frozenset({"KillNode", "EvictCopies", "Partition", "KillWorker"})
_DELAYS = frozenset(
    {
        "KillNode", "KillWorker", "Partition", "SlowNode", "DelayNotification",
        "LoseNotification", "RestartControlPlane", "RestartNode",
    }
)


class OracleError(AssertionError):
    """A faulty run disagreed with the reference, or failed for no injected reason."""


def reference(
    program: Callable[[], Any],
    *,
    cluster: Mapping[str, Any] | None = None,
    durations: Mapping[str, Any] | None = None,
) -> Outcome:
    """Run ``program`` once without faults. By default on one node with one CPU, so tasks
    run one at a time in submission order; give ``cluster`` when the program needs more
    (GPUs, custom resources, node affinity)."""
    outcome = run(
        program,
        cluster=cluster if cluster is not None else REFERENCE_CLUSTER,
        faults=(),
        seed=0,
        durations=durations,
    )
    if outcome.error is not None and _unexplainable(outcome.error):
        raise OracleError(f"the reference run itself failed: {outcome.error!r}") from outcome.error
    return outcome


def _unexplainable(error: BaseException) -> bool:
    from detray.sim.errors import DeadlockError, SimulationLimitError

    return isinstance(error, (DeadlockError, SimulationLimitError))


def check(outcome: Outcome, ref: Outcome, *, program: Callable[[], Any] | None = None) -> None:
    """Raise ``OracleError`` unless ``outcome`` agrees with ``ref`` or its error is
    explained by the faults injected; the message carries a scenario that replays it."""
    problem = _problem(outcome, ref)
    if problem is None:
        return
    from detray.testing.replay import scenario_yaml

    raise OracleError(
        f"{problem}\n\nfaults injected: {dict(outcome.faults_injected) or 'none'}\n"
        f"replay with `detray simulate` (save as replay.yaml):\n\n"
        f"{scenario_yaml(outcome, program=program)}"
    )


def _problem(outcome: Outcome, ref: Outcome) -> str | None:
    mismatch = _first_mismatch(outcome, ref)
    if mismatch is not None:
        return mismatch
    error = outcome.error
    if error is None:
        if ref.error is not None:
            return f"the reference run raised {ref.error!r}, this run returned {outcome.result!r}"
        if not values_equal(outcome.result, ref.result):
            return f"the program returned {outcome.result!r}, the reference returned {ref.result!r}"
        return None
    if ref.error is not None and type(ref.error) is type(error):
        return None
    reason = explain(outcome)
    if reason is None:
        return f"the run raised {type(error).__name__}: {error}\nwhich no injected fault explains"
    return None


def _first_mismatch(outcome: Outcome, ref: Outcome) -> str | None:
    from detray.sim.objects import read

    for obj, stored in outcome.values.items():
        if obj not in ref.values:
            continue
        theirs = ref.values[obj]
        if stored is None or theirs is None:
            continue  # bytes gone before the get read them: the error path, judged below
        if stored.serialized.inband == theirs.serialized.inband and list(
            stored.serialized.buffers
        ) == list(theirs.serialized.buffers):
            continue
        if stored.is_error or theirs.is_error:
            continue  # an error value: judged as the run's error
        mine, expected = read(stored), read(theirs)
        if not values_equal(mine, expected):
            return (
                f"get({obj}) returned {_short(mine)} but the reference run got {_short(expected)} "
                f"(task {creating_task(obj)})"
            )
    return None


def explain(outcome: Outcome) -> str | None:
    """Why the faults injected can cause ``outcome.error`` (None: they cannot)."""
    error = outcome.error
    if error is None:
        return "no error"
    if isinstance(error, X.RayTaskError) and isinstance(error.cause, X.RayError):
        error = error.cause
    injected = {kind for kind, count in outcome.faults_injected.items() if count}
    if isinstance(error, (X.ObjectReconstructionFailedError, X.ObjectReconstructionFailedMaxAttemptsExceededError)):
        return _needs(injected, _COPY_LOSSES, "rebuilding a lost object failed")
    if isinstance(error, X.OwnerDiedError):
        return _needs(injected, _DEATHS, "the object's owner died")
    if isinstance(error, X.ObjectFetchTimedOutError):
        return _needs(injected, _DELAYS, "the fetch timed out")
    if isinstance(error, X.ObjectLostError):
        obj = ObjectID(error.object_ref_hex)
        if not is_put(obj) and obj in outcome.rebuildable:
            return None  # it had lineage: detray must have rebuilt it
        return _needs(injected, _COPY_LOSSES, f"{obj} had no lineage and its copies were lost")
    if isinstance(error, X.ActorDiedError) or type(error) is X.RayActorError:
        if outcome.actors_dead_after_restarts == 0:
            return None
        return _needs(injected, _DEATHS, "an actor died after spending its restarts")
    if isinstance(error, X.ActorUnavailableError):
        return _needs(injected, _DEATHS, "an actor was restarting")
    if isinstance(error, (X.WorkerCrashedError, X.NodeDiedError, X.LocalRayletDiedError)):
        return _needs(injected, _DEATHS, "a worker or node died and the retries were spent")
    if isinstance(error, (X.TaskUnschedulableError, X.ActorUnschedulableError)):
        return _needs(injected, frozenset({"KillNode", "Partition"}), "the node it was pinned to died")
    if isinstance(error, X.GetTimeoutError):
        return _needs(injected, _DELAYS, "faults delayed the result past the timeout")
    return None


def _needs(injected: set[str], kinds: frozenset[str], why: str) -> str | None:
    present = sorted(injected & kinds)
    if not present:
        return None
    return f"{why} ({', '.join(present)} injected)"


def values_equal(a: Any, b: Any) -> bool:
    """Equality that understands numpy arrays inside containers."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (
            isinstance(a, np.ndarray)
            and isinstance(b, np.ndarray)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and bool(np.array_equal(a, b))
        )
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:
        return False


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
