"""Errors the simulator raises into user code when a run cannot go on.

Owns: ``DeadlockError`` (nothing can progress while user code waits) and
``SimulationLimitError`` (a limit on virtual time or events was reached).
Both are ``RayError``s so ``except RayError`` in a driver sees them; their
messages name what is blocked and why.
"""

from __future__ import annotations

from detray.exceptions import RayError


class DeadlockError(RayError):
    """No event is pending and user code waits: the run can never progress.

    ``blocked`` lists, per waiting piece of user code, the refs it waits for
    and why each is not ready (infeasible resources, lost, partitioned...).
    """

    def __init__(self, message: str, blocked: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.blocked = blocked

    def __str__(self) -> str:
        return self.message


class SimulationLimitError(RayError):
    """The run reached its virtual-time or event-count limit (a runaway program?)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class WorkerKilled(BaseException):
    """Raised inside user code whose simulated worker process died: it unwinds
    (``finally`` runs) and whatever it tries to submit afterwards is refused.
    A ``BaseException`` so ``except Exception`` in user code does not stop it."""
