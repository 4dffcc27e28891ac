"""Error kinds the core decides, and the one exception the core itself raises.

Owns: ``ErrorKind`` (why an object or task failed, as data) and ``Failure``
(a kind plus the facts a user needs: ids, sizes, the remote error's text).
``detray/exceptions.py`` turns a ``Failure`` into the exception class a Ray
user catches; the core never builds user-facing exception objects.

``InvalidTransition`` is the second error channel: a truly impossible event
(not a late or duplicate one, which is dropped and counted) crashes loudly
with the story of the ids involved.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ErrorKind(enum.Enum):
    """Why a task or object failed. Values are stable strings used in traces."""

    TASK_ERROR = "task_error"
    """The user's code raised; the payload carries the pickled exception."""
    WORKER_CRASHED = "worker_crashed"
    NODE_DIED = "node_died"
    OBJECT_LOST = "object_lost"
    """No copy left and no lineage to rebuild it (a put, an actor output, retries spent)."""
    OWNER_DIED = "owner_died"
    ACTOR_DIED = "actor_died"
    TASK_CANCELLED = "task_cancelled"
    TASK_UNSCHEDULABLE = "task_unschedulable"
    """Hard node affinity to a dead or unknown node."""
    OBJECT_STORE_FULL = "object_store_full"
    ACTOR_UNSCHEDULABLE = "actor_unschedulable"


@dataclass(frozen=True, slots=True, kw_only=True)
class Failure:
    """A decided failure: its kind, a one-line reason, and details as data."""

    kind: ErrorKind
    message: str
    details: tuple[tuple[str, str], ...] = field(default=())
    """Sorted (name, value) pairs: ids, sizes, counts, for the exception to show."""

    def detail(self, name: str) -> str | None:
        for key, value in self.details:
            if key == name:
                return value
        return None


def failure(kind: ErrorKind, message: str, **details: object) -> Failure:
    return Failure(
        kind=kind,
        message=message,
        details=tuple(sorted((k, str(v)) for k, v in details.items())),
    )


class InvalidTransition(AssertionError):
    """An event that cannot happen in the current state (a bug, not a late message)."""

    def __init__(self, message: str, story: list[str] | None = None) -> None:
        lines = [message]
        if story:
            lines.append("story:")
            lines.extend(f"  {line}" for line in story)
        super().__init__("\n".join(lines))
        self.story = story or []
