"""Exceptions a Ray user catches: the dual task error, timeouts, pickling, core failures."""

from __future__ import annotations

import pickle
import threading

import cloudpickle
import pytest

from detray import exceptions as ex
from detray.core.errors import ErrorKind, failure
from detray.serialization import serialize


class QuotaExceeded(Exception):
    def __init__(self, message: str, quota: int) -> None:
        super().__init__(message, quota)
        self.quota = quota


class Unsubclassable(Exception):
    def __init_subclass__(cls, **kwargs: object) -> None:
        raise TypeError("this exception type is final")


class NeedsArgumentInNew(Exception):
    def __new__(cls, code: int) -> NeedsArgumentInNew:
        error = super().__new__(cls, code)
        error.code = code  # type: ignore[attr-defined]
        return error


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001
        return caught


def _task_error(cause: BaseException, function_name: str = "f") -> ex.RayTaskError:
    return ex.RayTaskError.from_exception(_raised(cause), function_name, pid=42, node="node-00001")


def _round_trip(error: BaseException, dumps: object = pickle.dumps) -> BaseException:
    return pickle.loads(dumps(error))  # type: ignore[operator]


# --- the dual type ---------------------------------------------------------------------------


def test_a_task_error_is_caught_by_the_original_exception_type() -> None:
    raised = ex.as_raised(_task_error(ValueError("boom")))

    with pytest.raises(ValueError) as caught:
        raise raised
    assert isinstance(caught.value, ex.RayTaskError)
    assert isinstance(caught.value, ex.RayError)
    assert isinstance(caught.value.cause, ValueError)
    assert caught.value.args == ("boom",)


def test_a_task_error_shows_the_function_the_remote_traceback_and_the_cause() -> None:
    raised = ex.as_raised(_task_error(ValueError("boom"), "compute"))

    text = str(raised)
    assert text.startswith("ray::compute() (pid=42, ip=node-00001)")
    assert "in _raised" in text  # the remote frame
    assert "ValueError: boom" in text
    assert "Traceback (most recent call last)" not in text
    assert type(raised).__name__ == "RayTaskError(ValueError)"


def test_dual_types_are_built_once_per_cause_type() -> None:
    first = ex.as_raised(_task_error(KeyError("a")))
    second = ex.as_raised(_task_error(KeyError("b")))

    assert type(first) is type(second)
    assert type(first) is not type(ex.as_raised(_task_error(IndexError("c"))))


def test_the_causes_attributes_are_reachable_on_the_dual_instance() -> None:
    raised = ex.as_raised(_task_error(QuotaExceeded("over quota", 7)))

    assert isinstance(raised, QuotaExceeded)
    assert raised.quota == 7  # type: ignore[attr-defined]
    with pytest.raises(AttributeError):
        raised.no_such_attribute  # type: ignore[attr-defined]  # noqa: B018


@pytest.mark.parametrize("cause", [Unsubclassable("final"), NeedsArgumentInNew(3)])
def test_a_cause_type_that_cannot_be_subclassed_gives_a_plain_task_error_with_cause(
    cause: BaseException,
) -> None:
    raised = ex.as_raised(_task_error(cause))

    assert type(raised) is ex.RayTaskError
    assert raised.cause is not None and type(raised.cause) is type(cause)
    assert not isinstance(raised, type(cause))


def test_a_task_error_raised_by_a_task_is_unwrapped_to_its_original_cause() -> None:
    inner = ex.as_raised(_task_error(ValueError("deep"), "inner"))

    outer = ex.RayTaskError.from_exception(_raised(inner), "outer")

    assert type(outer.cause) is ValueError
    assert isinstance(ex.as_raised(outer), ValueError)
    assert "ray::outer()" in str(outer)


def test_an_unpicklable_cause_is_replaced_by_a_ray_error_that_describes_it() -> None:
    class HoldsLock(Exception):
        pass

    cause = HoldsLock("locked")
    cause.lock = threading.Lock()  # type: ignore[attr-defined]

    error = _task_error(cause)

    assert type(error.cause) is ex.RayError
    assert "HoldsLock: locked" in str(error.cause)
    assert "isn't serializable" in str(error.cause)


class _NeedsTwoArguments(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a}-{b}")


def test_a_cause_that_pickles_but_cannot_be_rebuilt_is_replaced_too() -> None:
    # Regression (found by the simulator): pickling alone passed, get() then failed
    # with a TypeError from the cause's __init__ instead of raising the task's error.
    error = _task_error(_NeedsTwoArguments(1, 2))

    assert type(error.cause) is ex.RayError
    assert "_NeedsTwoArguments: 1-2" in str(error.cause)
    assert pickle.loads(pickle.dumps(error)).cause is not None


def test_the_traceback_leaves_out_detrays_own_frames() -> None:
    try:
        serialize(threading.Lock())
    except TypeError as error:
        text = ex.format_traceback(error)
    assert "detray/serialization.py" not in text
    assert "test_exceptions.py" in text
    assert "TypeError: could not serialize value" in text


# --- timeouts and the class tree ------------------------------------------------------------------


def test_get_timeout_error_is_a_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        raise ex.GetTimeoutError("Get timed out: some object(s) not ready.")
    assert issubclass(ex.GetTimeoutError, ex.RayError)


@pytest.mark.parametrize(
    ("subclass", "base"),
    [
        (ex.OwnerDiedError, ex.ObjectLostError),
        (ex.ObjectReconstructionFailedError, ex.ObjectLostError),
        (ex.ObjectReconstructionFailedMaxAttemptsExceededError, ex.ObjectLostError),
        (ex.ObjectFetchTimedOutError, ex.ObjectLostError),
        (ex.ActorDiedError, ex.RayActorError),
        (ex.ActorUnavailableError, ex.RayActorError),
        (ex.ReferenceCountingAssertionError, AssertionError),
    ],
)
def test_the_class_tree_matches_rays(subclass: type, base: type) -> None:
    assert issubclass(subclass, base)
    assert issubclass(subclass, ex.RayError)


def test_an_actor_that_failed_in_init_says_so() -> None:
    died = ex.ActorDiedError(_task_error(RuntimeError("bad config"), "Model.__init__"))

    assert died.actor_init_failed
    assert "creation task" in str(died)
    assert "bad config" in str(died)


# --- pickling ------------------------------------------------------------------------------------

EXAMPLES: list[BaseException] = [
    ex.RayError("plain"),
    ex.RaySystemError("not started"),
    ex.TaskCancelledError("00000001abcd", "by the user"),
    ex.WorkerCrashedError("worker node-00001/w00002 exited"),
    ex.RayActorError("Aabc", "gone"),
    ex.ActorDiedError(actor_id="Aabc", error_msg="killed"),
    ex.ActorUnavailableError("restarting", "Aabc"),
    ex.ActorUnschedulableError("node-00009 is dead"),
    ex.NodeDiedError("node-00002 died"),
    ex.OutOfMemoryError("node-00002 is out of memory"),
    ex.TaskUnschedulableError("node-00009 is dead"),
    ex.RuntimeEnvSetupError("bad env"),
    ex.GetTimeoutError("Get timed out"),
    ex.ObjectStoreFullError("needs 10 bytes, 5 free"),
    ex.ObjectLostError("obj.r1", "driver", detail="(node=node-00001)"),
    ex.OwnerDiedError("obj.r1", "w1"),
    ex.ObjectReconstructionFailedMaxAttemptsExceededError("obj.r1"),
    ex.UnserializableException("trace"),
]


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: type(e).__name__)
def test_every_exception_survives_pickling(error: BaseException, dumps: object) -> None:
    copy = _round_trip(error, dumps)

    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.__dict__ == error.__dict__


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_task_errors_survive_pickling_plain_and_dual(dumps: object) -> None:
    plain = _task_error(QuotaExceeded("over", 3), "f")
    dual = ex.as_raised(plain)

    plain_copy = _round_trip(plain, dumps)
    dual_copy = _round_trip(dual, dumps)

    assert type(plain_copy) is ex.RayTaskError
    assert str(plain_copy) == str(plain)
    assert isinstance(plain_copy.cause, QuotaExceeded)  # type: ignore[attr-defined]
    assert isinstance(dual_copy, QuotaExceeded) and isinstance(dual_copy, ex.RayTaskError)
    assert dual_copy.quota == 3  # type: ignore[attr-defined]
    assert str(dual_copy) == str(dual)


# --- failures decided by the core --------------------------------------------------------------------

EXPECTED_CLASS = {
    ErrorKind.TASK_ERROR: ex.RayTaskError,
    ErrorKind.WORKER_CRASHED: ex.WorkerCrashedError,
    ErrorKind.NODE_DIED: ex.NodeDiedError,
    ErrorKind.OBJECT_LOST: ex.ObjectLostError,
    ErrorKind.OWNER_DIED: ex.OwnerDiedError,
    ErrorKind.ACTOR_DIED: ex.ActorDiedError,
    ErrorKind.TASK_CANCELLED: ex.TaskCancelledError,
    ErrorKind.TASK_UNSCHEDULABLE: ex.TaskUnschedulableError,
    ErrorKind.OBJECT_STORE_FULL: ex.ObjectStoreFullError,
    ErrorKind.ACTOR_UNSCHEDULABLE: ex.ActorUnschedulableError,
}


def test_every_error_kind_has_an_expected_class() -> None:
    assert set(EXPECTED_CLASS) == set(ErrorKind)


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.value)
def test_from_failure_maps_each_kind_and_names_the_facts(kind: ErrorKind) -> None:
    decided = failure(
        kind,
        "it went wrong",
        task="00000001abcdef",
        actor="A00000001abcdef",
        node="node-00003",
        size_bytes=2048,
        capacity_bytes=1024,
    )

    error = ex.from_failure(decided, "00000001abcdef.r1")

    assert type(error) is EXPECTED_CLASS[kind]
    text = str(error)
    assert "it went wrong" in text
    assert "node=node-00003" in text
    assert "size_bytes=2048" in text and "capacity_bytes=1024" in text
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == text


def test_object_lost_errors_name_the_object() -> None:
    error = ex.from_failure(failure(ErrorKind.OBJECT_LOST, "no copy left"), "00000001abcd.p1")

    assert isinstance(error, ex.ObjectLostError)
    assert error.object_ref_hex == "00000001abcd.p1"
    assert "Failed to retrieve object 00000001abcd.p1" in str(error)


@pytest.mark.parametrize(
    ("reason", "cls"),
    [
        ("not_reconstructable", ex.ObjectReconstructionFailedError),
        ("retries_exhausted", ex.ObjectReconstructionFailedMaxAttemptsExceededError),
        ("lineage_evicted", ex.ObjectReconstructionFailedLineageEvictedError),
        ("fetch_timed_out", ex.ObjectFetchTimedOutError),
        ("", ex.ObjectLostError),
    ],
)
def test_the_reason_of_a_lost_object_picks_the_subclass(reason: str, cls: type) -> None:
    error = ex.from_failure(failure(ErrorKind.OBJECT_LOST, "lost", reason=reason), "o.r1")

    assert type(error) is cls


def test_the_actor_died_error_names_the_actor() -> None:
    error = ex.from_failure(failure(ErrorKind.ACTOR_DIED, "worker died", actor="A0001"))

    assert isinstance(error, ex.ActorDiedError)
    assert error.actor_id == "A0001"
    assert "A0001" in str(error)


# --- retry_exceptions names ---------------------------------------------------------------------------


def test_error_type_names_list_the_type_and_its_bases_most_derived_first() -> None:
    names = ex.error_type_names(QuotaExceeded("x", 1))

    assert names[0] == f"{__name__}.QuotaExceeded"
    assert "builtins.Exception" in names and "builtins.BaseException" in names
    assert names.index("builtins.Exception") < names.index("builtins.BaseException")


def test_a_dual_task_error_is_retryable_as_its_cause_type() -> None:
    dual = ex.as_raised(_task_error(ValueError("x")))

    assert "builtins.ValueError" in ex.error_type_names(dual)
