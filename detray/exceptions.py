"""The exceptions a Ray user catches, and the mapping from the core's error kinds to them.

Owns: the ``ray.exceptions``-compatible class tree (names, bases, constructor
signatures and attributes follow Ray 2.x), ``RayTaskError``'s dual-type trick,
``from_failure`` (``detray.core.errors.Failure`` -> exception), and the
qualified names of exception types that ``retry_exceptions`` is decided on.

Must not: decide anything (the core decides; this module only names the
outcome), import a driver, or read clocks and randomness.

Theory of operation:

* Every class pickles (exceptions cross process boundaries inside stored
  objects): ``RayError.__reduce__`` saves ``(class, args, __dict__)`` and
  rebuilds without calling ``__init__``, so constructor signatures are free.
* A task's exception travels as a plain ``RayTaskError`` holding ``cause``
  (the user's exception) and the remote traceback text. ``get`` raises
  ``error.as_instanceof_cause()``: an instance of a class derived from both
  ``RayTaskError`` and the cause's class, built once per cause class and
  cached, so ``except ValueError`` and ``except RayTaskError`` both catch it.
  When the cause's class cannot be subclassed or instantiated that way,
  the plain ``RayTaskError`` is raised and ``.cause`` carries the original.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from detray import settings
from detray.core.errors import ErrorKind, Failure

__all__ = [
    "ActorDiedError",
    "ActorPlacementGroupRemoved",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "AsyncioActorExit",
    "CrossLanguageError",
    "GetTimeoutError",
    "IntendedActorExit",
    "LocalRayletDiedError",
    "NodeDiedError",
    "ObjectFetchTimedOutError",
    "ObjectFreedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectReconstructionFailedLineageEvictedError",
    "ObjectReconstructionFailedMaxAttemptsExceededError",
    "ObjectStoreFullError",
    "OutOfDiskError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "PendingCallsLimitExceeded",
    "PlasmaObjectNotAvailable",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "ReferenceCountingAssertionError",
    "RuntimeEnvSetupError",
    "TaskCancelledError",
    "TaskPlacementGroupRemoved",
    "TaskUnschedulableError",
    "UnserializableException",
    "WorkerCrashedError",
    "as_raised",
    "error_type_names",
    "from_failure",
    "is_intended_exit",
    "qualified_name",
]


def _restore_error(cls: type[BaseException], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class RayError(Exception):
    """Super class of all ray exception types."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_error, (type(self), self.args, dict(self.__dict__)))


class CrossLanguageError(RayError):
    """Raised from another language (detray runs Python only; kept for ``except`` clauses)."""


class RaySystemError(RayError):
    """Indicates that the runtime encountered a system error (for example it is not started)."""

    def __init__(self, client_exc: object, traceback_str: str | None = None) -> None:
        super().__init__(client_exc)
        self.client_exc = client_exc
        self.traceback_str = traceback_str

    def __str__(self) -> str:
        message = f"System error: {self.client_exc}"
        if self.traceback_str:
            message += f"\ntraceback: {self.traceback_str}"
        return message


class TaskCancelledError(RayError):
    """Raised when this task is cancelled."""

    def __init__(self, task_id: str | None = None, error_message: str | None = None) -> None:
        super().__init__(task_id, error_message)
        self.task_id = task_id
        self.error_message = error_message

    def __str__(self) -> str:
        message = f"Task: {self.task_id} was cancelled. " if self.task_id else ""
        if self.error_message:
            message += self.error_message
        return message or "This task or its dependency was cancelled."


# --- the task error and its dual types ---------------------------------------------

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep
_DUAL_TYPES: dict[type[BaseException], type[RayTaskError]] = {}


class RayTaskError(RayError):
    """Indicates that a task threw an exception during execution.

    The error is stored as each of the task's return values; ``get`` raises
    ``as_instanceof_cause()``, which is also an instance of the user's
    exception type when that type can be subclassed (else ``.cause`` holds it).
    """

    def __init__(
        self,
        function_name: str,
        traceback_str: str,
        cause: BaseException | None,
        proctitle: str | None = None,
        pid: int | None = None,
        ip: str | None = None,
        actor_repr: str | None = None,
        actor_id: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.proctitle = proctitle or f"ray::{function_name}"
        self.pid = pid if pid is not None else os.getpid()
        self.ip = ip or ""
        self.actor_repr = actor_repr
        self._actor_id = actor_id
        self.args = (function_name, traceback_str, cause, proctitle, pid, ip)

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        function_name: str,
        *,
        pid: int | None = None,
        node: str | None = None,
        actor_repr: str | None = None,
        actor_id: str | None = None,
    ) -> RayTaskError:
        """Wrap an exception raised by user code running as ``function_name``.

        Frames of detray's own modules are dropped from the traceback text. A
        ``RayTaskError`` raised by the task (it called ``get`` on a failed
        object) is unwrapped to its cause, so errors do not nest. A cause that
        cannot be pickled is replaced by a ``RayError`` describing it (Ray's rule).
        """
        cause: BaseException = exc.cause if isinstance(exc, RayTaskError) and exc.cause else exc
        try:
            # A round trip: some exceptions pickle but cannot be rebuilt (an __init__
            # that needs more arguments than ``args`` holds).
            pickle.loads(cloudpickle.dumps(cause, protocol=settings.PICKLE_PROTOCOL))
        except Exception as pickle_error:  # noqa: BLE001 - any failure means "cannot travel"
            cause = RayError(
                f"The original cause of the RayTaskError ({type(cause).__name__}: {cause}) "
                f"isn't serializable: {pickle_error}. Overwriting the cause to a RayError."
            )
        return cls(
            function_name,
            format_traceback(exc),
            cause,
            pid=pid,
            ip=node,
            actor_repr=actor_repr,
            actor_id=actor_id,
        )

    def as_instanceof_cause(self) -> RayTaskError:
        """An exception that is an instance of both ``RayTaskError`` and the cause's class.

        Returns ``self`` when there is no cause, when the cause's class is
        already a base of ``RayTaskError``, or when it cannot be subclassed.
        """
        cause = self.cause
        if cause is None or type(self) is not RayTaskError:
            return self
        cause_cls = type(cause)
        if issubclass(RayTaskError, cause_cls):
            return self
        dual_cls = _dual_type(cause_cls)
        if dual_cls is None:
            return self
        try:
            dual = dual_cls.__new__(dual_cls)
        except Exception:  # noqa: BLE001 - a cause type with a demanding __new__
            return self
        dual.__dict__.update(self.__dict__)
        dual.args = cause.args
        dual.__cause__ = None
        return dual

    def __reduce__(self) -> tuple[Any, ...]:
        state = dict(self.__dict__)
        return (_restore_task_error, (state, type(self) is not RayTaskError))

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        # A cause class may define __reduce_ex__; ours must win for dual types.
        return self.__reduce__()

    def __str__(self) -> str:
        header = f"{self.proctitle}() (pid={self.pid}"
        if self.ip:
            header += f", ip={self.ip}"
        if self.actor_repr:
            header += f", actor_id={self._actor_id}, repr={self.actor_repr}"
        header += ")"
        lines = self.traceback_str.strip().splitlines() if self.traceback_str else []
        if lines and lines[0].startswith("Traceback "):
            lines = lines[1:]
        if not lines and self.cause is not None:
            lines = [f"{type(self.cause).__name__}: {self.cause}"]
        return "\n".join([header, *lines])


def _dual_type(cause_cls: type[BaseException]) -> type[RayTaskError] | None:
    dual = _DUAL_TYPES.get(cause_cls)
    if dual is not None:
        return dual
    name = f"RayTaskError({cause_cls.__name__})"
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "__getattr__": _delegate_to_cause,
        "__str__": RayTaskError.__str__,
        "__repr__": _dual_repr,
        "__reduce__": RayTaskError.__reduce__,
        "__reduce_ex__": RayTaskError.__reduce_ex__,
    }
    try:
        dual = type(name, (RayTaskError, cause_cls), namespace)
    except Exception:  # noqa: BLE001 - final classes, layout or metaclass conflicts
        return None
    if len(_DUAL_TYPES) < settings.DUAL_EXCEPTION_TYPES_MAX:
        _DUAL_TYPES[cause_cls] = dual
    return dual


def _delegate_to_cause(self: RayTaskError, name: str) -> Any:
    # Only reached when normal lookup fails: the cause's own attributes.
    if name.startswith("__") or name == "cause":
        raise AttributeError(name)
    cause = self.__dict__.get("cause")
    if cause is None:
        raise AttributeError(name)
    return getattr(cause, name)


def _dual_repr(self: RayTaskError) -> str:
    return f"{type(self).__name__}({self.cause!r})"


def _restore_task_error(state: dict[str, Any], dual: bool) -> RayTaskError:
    error = RayTaskError.__new__(RayTaskError)
    error.__dict__.update(state)
    error.args = (
        state.get("function_name"),
        state.get("traceback_str"),
        state.get("cause"),
        None,
        state.get("pid"),
        state.get("ip"),
    )
    return error.as_instanceof_cause() if dual else error


def format_traceback(exc: BaseException) -> str:
    """The traceback text of ``exc`` without detray's own frames."""
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    kept: list[str] = []
    for chunk in lines:
        if chunk.startswith('  File "') and chunk[8:].startswith(_PACKAGE_DIR):
            continue
        kept.append(chunk)
    return "".join(kept)


# --- actors ---------------------------------------------------------------------------


class RayActorError(RayError):
    """Indicates that the actor has outages unexpectedly before finishing a task."""

    BASE_ERROR_MSG = "The actor experienced an error before finishing this task."

    def __init__(
        self,
        actor_id: str | None = None,
        error_msg: str = BASE_ERROR_MSG,
        actor_init_failed: bool = False,
        preempted: bool = False,
    ) -> None:
        super().__init__(actor_id, error_msg)
        self.actor_id = actor_id
        self.error_msg = error_msg
        self._actor_init_failed = actor_init_failed
        self._preempted = preempted

    @property
    def actor_init_failed(self) -> bool:
        return self._actor_init_failed

    @property
    def preempted(self) -> bool:
        return self._preempted

    def __str__(self) -> str:
        return self.error_msg


class ActorDiedError(RayActorError):
    """Indicates that the actor died unexpectedly before finishing a task.

    ``cause`` is the ``RayTaskError`` of ``__init__`` when the actor died
    because its constructor raised; ``actor_id`` and ``error_msg`` describe
    a system failure (worker or node death, ``kill``).
    """

    BASE_ERROR_MSG = "The actor died unexpectedly before finishing this task."

    def __init__(
        self,
        cause: RayTaskError | None = None,
        *,
        actor_id: str | None = None,
        error_msg: str | None = None,
    ) -> None:
        init_failed = isinstance(cause, RayTaskError)
        if init_failed:
            message = f"The actor died because of an error raised in its creation task, {cause}"
            actor_id = actor_id or getattr(cause, "_actor_id", None)
        else:
            message = error_msg or self.BASE_ERROR_MSG
        super().__init__(actor_id, message, init_failed)
        self.cause = cause

    @staticmethod
    def from_task_error(task_error: RayTaskError) -> ActorDiedError:
        return ActorDiedError(task_error)


class ActorUnavailableError(RayActorError):
    """Raised when the actor is temporarily unavailable but may be available later."""

    def __init__(self, error_message: str, actor_id: str | None) -> None:
        message = (
            f"The actor {actor_id} is unavailable: {error_message}. "
            "The task may or may not have been executed on the actor."
        )
        super().__init__(actor_id, message)


class ActorUnschedulableError(RayError):
    """Raised when the actor cannot be scheduled (for example affinity to a dead node)."""

    def __init__(self, error_message: str) -> None:
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        return f"The actor is not schedulable: {self.error_message}"


class AsyncioActorExit(RayError):
    """Raised when an asyncio actor intentionally exits via exit_actor()."""


class IntendedActorExit(SystemExit):
    """What ``exit_actor()`` raises in a synchronous or threaded actor.

    A ``SystemExit`` (code 0) as in Ray, so ``except Exception`` in user code
    does not swallow it; in an async actor ``exit_actor()`` raises
    ``AsyncioActorExit`` instead (a ``SystemExit`` would stop the event loop).
    The worker turns either into the actor's intentional exit.
    """

    is_ray_terminate = True
    ray_terminate_msg = "exit_actor() is called."

    def __init__(self) -> None:
        super().__init__(0)


def is_intended_exit(exc: BaseException) -> bool:
    """Whether ``exc`` is ``exit_actor()``'s signal (sync or async actor)."""
    return isinstance(exc, (IntendedActorExit, AsyncioActorExit))


class PendingCallsLimitExceeded(RayError):
    """Raised when the pending actor calls exceed the ``max_pending_calls`` option."""


class ActorPlacementGroupRemoved(RayError):
    def __str__(self) -> str:
        return "The placement group corresponding to this Actor has been removed."


# --- tasks, workers, nodes ---------------------------------------------------------


class WorkerCrashedError(RayError):
    """Indicates that the worker died unexpectedly while executing a task."""

    def __str__(self) -> str:
        base = "The worker died unexpectedly while executing this task."
        detail = " ".join(str(arg) for arg in self.args)
        return f"{base} {detail}" if detail else base


class LocalRayletDiedError(RayError):
    def __str__(self) -> str:
        return "The task's local raylet died."


class NodeDiedError(RayError):
    """Indicates that the node is either dead or unreachable."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class OutOfMemoryError(RayError):
    """Indicates that the node is running out of memory and is close to full."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class TaskUnschedulableError(RayError):
    """Raised when the task cannot be scheduled (for example hard affinity to a dead node)."""

    def __init__(self, error_message: str) -> None:
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        return f"The task is not schedulable: {self.error_message}"


class TaskPlacementGroupRemoved(RayError):
    def __str__(self) -> str:
        return "The placement group corresponding to this task has been removed."


class RuntimeEnvSetupError(RayError):
    """Raised when a runtime environment fails to be set up."""

    def __init__(self, error_message: str | None = None) -> None:
        super().__init__(error_message)
        self.error_message = error_message

    def __str__(self) -> str:
        lines = ["Failed to set up runtime environment."]
        if self.error_message:
            lines.append(self.error_message)
        return "\n".join(lines)


class GetTimeoutError(RayError, TimeoutError):
    """Indicates that a call to ``get`` timed out (also a ``TimeoutError``)."""


class PlasmaObjectNotAvailable(RayError):
    """Called when an object was not available within the given timeout."""


class UnserializableException(RayError):
    """A task's exception could not be pickled; its text is kept."""

    def __init__(self, original_stack_trace: str) -> None:
        super().__init__(original_stack_trace)
        self.original_stack_trace = original_stack_trace

    def __str__(self) -> str:
        return (
            "Failed to deserialize exception. Refer to the original stack trace below:\n"
            + self.original_stack_trace
        )


# --- objects ---------------------------------------------------------------------------


class ObjectStoreFullError(RayError):
    """Indicates that the object store is full (the message names the sizes)."""

    def __str__(self) -> str:
        return super().__str__() + (
            "\nTip: objects still in scope stay pinned (they spill to disk only where spilling "
            "is enabled), and the arguments of queued and running tasks stay in memory until "
            "those tasks end."
        )


class OutOfDiskError(RayError):
    def __str__(self) -> str:
        return super().__str__() + (
            "\nThe object cannot be created because the object store is full and the "
            "local disk is over capacity."
        )


class ObjectLostError(RayError):
    """Indicates that the object is lost from distributed memory (node failure or system error).

    ``detail`` (detray's addition, keyword-only) carries the decided reason
    and the facts behind it (ids, sizes).
    """

    def __init__(
        self,
        object_ref_hex: str,
        owner_address: str | None = None,
        call_site: str = "",
        *,
        detail: str = "",
    ) -> None:
        super().__init__(object_ref_hex, owner_address, call_site)
        self.object_ref_hex = object_ref_hex
        self.owner_address = owner_address
        self.call_site = call_site
        self.detail = detail

    def _base_str(self) -> str:
        message = f"Failed to retrieve object {self.object_ref_hex}."
        if self.call_site:
            message += f" The ObjectRef was created at: {self.call_site}"
        return message

    def _reason(self) -> str:
        return f"All copies of {self.object_ref_hex} have been lost due to node failure."

    def __str__(self) -> str:
        message = self._base_str() + "\n\n" + self._reason()
        if self.detail:
            message += f"\n{self.detail}"
        return message


class ObjectFetchTimedOutError(ObjectLostError):
    def _reason(self) -> str:
        return (
            f"Fetch for object {self.object_ref_hex} timed out because no locations were "
            "found for the object."
        )


class ReferenceCountingAssertionError(ObjectLostError, AssertionError):
    def _reason(self) -> str:
        return (
            "The object has already been deleted by the reference counting protocol. "
            "This should not happen."
        )


class ObjectFreedError(ObjectLostError):
    def _reason(self) -> str:
        return "The object was manually freed using the internal `free` call."


class OwnerDiedError(ObjectLostError):
    """Indicates that the owner of the object has died while there is still a reference to it."""

    def _reason(self) -> str:
        owner = f" ({self.owner_address})" if self.owner_address else ""
        return (
            f"The object's owner{owner} has exited. This is the Python worker that first "
            "created the ObjectRef via `.remote()` or `put()`."
        )


class ObjectReconstructionFailedError(ObjectLostError):
    def _reason(self) -> str:
        return (
            "The object cannot be reconstructed because it was created by an actor, "
            "a put() call, or its ObjectRef was created by a different worker."
        )


class ObjectReconstructionFailedMaxAttemptsExceededError(ObjectLostError):
    def _reason(self) -> str:
        return (
            "The object cannot be reconstructed because the maximum number of task "
            "retries has been exceeded. To prevent this error, set "
            "`@remote(max_retries=<num retries>)` (default 3)."
        )


class ObjectReconstructionFailedLineageEvictedError(ObjectLostError):
    def _reason(self) -> str:
        return "The object cannot be reconstructed because its lineage has been evicted."


# --- exception type names (retry_exceptions) ------------------------------------------


def qualified_name(cls: type[BaseException]) -> str:
    """``module.QualName`` of an exception class: the form ``retry_exceptions`` names travel in."""
    return f"{cls.__module__}.{cls.__qualname__}"


def error_type_names(exc: BaseException | type[BaseException]) -> tuple[str, ...]:
    """Qualified names of an exception's type and its bases, most derived first.

    This is ``TaskFailed.error_types``: a task may be retried when one of
    these names is in its ``retry_exceptions``. For a dual
    ``RayTaskError(ValueError)`` the names include ``builtins.ValueError``.
    """
    cls = exc if isinstance(exc, type) else type(exc)
    return tuple(
        qualified_name(base)
        for base in cls.__mro__
        if isinstance(base, type) and issubclass(base, BaseException)
    )


def as_raised(error: RayError) -> RayError:
    """The exception ``get`` raises for a stored error: a task error as its dual type."""
    if type(error) is RayTaskError:
        return error.as_instanceof_cause()
    return error


# --- failures decided by the core -> exceptions ------------------------------------------


def _facts(failure: Failure) -> str:
    if not failure.details:
        return ""
    return "(" + ", ".join(f"{name}={value}" for name, value in failure.details) + ")"


def _message(failure: Failure) -> str:
    facts = _facts(failure)
    return f"{failure.message} {facts}".strip() if facts else failure.message


def _task_error(failure: Failure, object_ref_hex: str | None) -> RayError:
    function_name = failure.detail("function") or failure.detail("task") or "<unknown>"
    traceback_str = failure.detail("traceback") or _message(failure)
    return RayTaskError(function_name, traceback_str, None)


def _object_lost(failure: Failure, object_ref_hex: str | None) -> RayError:
    reason = failure.detail("reason") or ""
    cls: type[ObjectLostError] = _OBJECT_LOST_BY_REASON.get(reason, ObjectLostError)
    obj = object_ref_hex or failure.detail("object") or "<unknown>"
    return cls(obj, failure.detail("owner"), detail=_message(failure))


def _owner_died(failure: Failure, object_ref_hex: str | None) -> RayError:
    obj = object_ref_hex or failure.detail("object") or "<unknown>"
    return OwnerDiedError(obj, failure.detail("owner"), detail=_message(failure))


_INTENDED_EXIT_MSG = "The actor is dead because it exited intentionally (it is not restarted)."


def _actor_died(failure: Failure, object_ref_hex: str | None) -> RayError:
    actor = failure.detail("actor")
    intended = failure.detail("cause") == "intended_exit"
    lines = [_INTENDED_EXIT_MSG if intended else ActorDiedError.BASE_ERROR_MSG, _message(failure)]
    if actor:
        lines.append(f"\tactor_id: {actor}")
    return ActorDiedError(actor_id=actor, error_msg="\n".join(lines))


def _cancelled(failure: Failure, object_ref_hex: str | None) -> RayError:
    return TaskCancelledError(failure.detail("task"), _message(failure))


_OBJECT_LOST_BY_REASON: dict[str, type[ObjectLostError]] = {
    "not_reconstructable": ObjectReconstructionFailedError,
    "retries_exhausted": ObjectReconstructionFailedMaxAttemptsExceededError,
    "lineage_evicted": ObjectReconstructionFailedLineageEvictedError,
    "fetch_timed_out": ObjectFetchTimedOutError,
    "freed": ObjectFreedError,
}
"""``Failure.details["reason"]`` of an OBJECT_LOST failure -> the specific subclass."""

_FROM_KIND: dict[ErrorKind, Callable[[Failure, str | None], RayError]] = {
    ErrorKind.TASK_ERROR: _task_error,
    ErrorKind.WORKER_CRASHED: lambda f, _: WorkerCrashedError(_message(f)),
    ErrorKind.NODE_DIED: lambda f, _: NodeDiedError(_message(f)),
    ErrorKind.OBJECT_LOST: _object_lost,
    ErrorKind.OWNER_DIED: _owner_died,
    ErrorKind.ACTOR_DIED: _actor_died,
    ErrorKind.TASK_CANCELLED: _cancelled,
    ErrorKind.TASK_UNSCHEDULABLE: lambda f, _: TaskUnschedulableError(_message(f)),
    ErrorKind.OBJECT_STORE_FULL: lambda f, _: ObjectStoreFullError(_message(f)),
    ErrorKind.ACTOR_UNSCHEDULABLE: lambda f, _: ActorUnschedulableError(_message(f)),
}
assert set(_FROM_KIND) == set(ErrorKind), sorted(k.value for k in set(ErrorKind) - set(_FROM_KIND))


def from_failure(failure: Failure, object_ref_hex: str | None = None) -> RayError:
    """The exception a user catches for a failure the core decided.

    The message carries ``failure.message`` and every detail (ids, sizes).
    Recognised details: ``object``, ``owner``, ``actor``, ``task``,
    ``function``, ``traceback``, and for OBJECT_LOST ``reason`` (one of
    ``not_reconstructable``, ``retries_exhausted``, ``lineage_evicted``,
    ``fetch_timed_out``, ``freed``) choosing the ``ObjectLostError`` subclass.
    A TASK_ERROR normally arrives as the stored ``RayTaskError`` itself; this
    mapping only covers a failure that carries no pickled exception.
    """
    return _FROM_KIND[failure.kind](failure, object_ref_hex)
