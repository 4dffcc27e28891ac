"""Options of remote functions, actors and actor methods: validation, normal form, specs.

Owns: the tables of options ``remote``/``.options()``/``method`` accept (names,
types, value rules, what detray does not support), their conversion into the
normal forms the driver protocol receives (``TaskOptions``, ``ActorOptions``,
``MethodOptions``, all resource amounts in fixed point), what is being called
(``FunctionDescriptor``, ``ActorClassMeta``), and the builders of
``detray.core.specs`` from a normal form plus the ids a runtime assigns.

Must not: assign ids, touch payloads (functions, arguments), or talk to a
runtime. Everything here is pure and runs at decoration or ``.options()``
time, so ``.remote()`` does no validation work.

Error channels follow Ray: an unknown option is a ``ValueError``, a wrong type
a ``TypeError``, a bad value a ``ValueError``; each names the option and the
function, class or method. An option detray does not support raises
``NotImplementedError`` naming it (listed in ``UNSUPPORTED_OPTIONS``).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from detray.core import resources as res
from detray.core import specs
from detray.core.ids import ActorID, JobID, NodeID, ObjectID, TaskID, WorkerID
from detray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

DEFAULT_ASYNC_MAX_CONCURRENCY = 1000
"""Ray's default ``max_concurrency`` for async actors (sync actors: 1)."""

# --- what is called --------------------------------------------------------------------


class FunctionDescriptor:
    """A remote function or actor class, with its pickled form computed once.

    ``function_id`` is a digest of the pickled bytes: the key of the function
    table, equal for the same code in every run.
    """

    __slots__ = ("function", "module", "qualname", "_pickled", "_function_id")

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.module: str = getattr(function, "__module__", None) or "__main__"
        self.qualname: str = getattr(function, "__qualname__", None) or repr(function)
        self._pickled: bytes | None = None
        self._function_id: str | None = None

    @property
    def name(self) -> str:
        return self.qualname

    def pickled(self) -> bytes:
        """The cloudpickled function or class (computed on first use, then cached)."""
        if self._pickled is None:
            from detray.serialization import pickle_function

            self._pickled = pickle_function(self.function, self.qualname)
        return self._pickled

    def function_id(self) -> str:
        if self._function_id is None:
            digest = hashlib.blake2b(self.pickled(), digest_size=16).hexdigest()
            self._function_id = f"{self.qualname}:{digest}"
        return self._function_id

    def __reduce__(self) -> tuple[Any, ...]:
        return (FunctionDescriptor, (self.function,))

    def __repr__(self) -> str:
        return f"FunctionDescriptor({self.module}.{self.qualname})"


# --- normal forms handed to a runtime -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOptions:
    """A remote function's options after validation (what ``Runtime.submit_task`` gets)."""

    name: str
    """Task name: the ``name`` option, else the function's qualified name."""
    num_returns: int = 1
    resources: Mapping[str, int] = field(default_factory=lambda: {res.CPU: res.UNIT})
    """Held while running, fixed point (default one CPU)."""
    strategy: specs.SchedulingStrategy = specs.DEFAULT_STRATEGY
    max_retries: int = specs.DEFAULT_MAX_RETRIES
    retry_exceptions: bool | tuple[str, ...] = False
    """``True``, or qualified names of the exception types that may be retried."""
    max_calls: int | None = None
    """Worker reuse limit (``None``: the driver's default, Ray: unlimited for CPU tasks)."""
    env_vars: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class MethodOptions:
    """An actor method's options (defaults from ``@method``, overridden by ``.options()``)."""

    name: str
    """``Class.method``."""
    num_returns: int = 1
    max_task_retries: int | None = None
    """``None``: the actor's ``max_task_retries``."""
    retry_exceptions: bool | tuple[str, ...] | None = None
    """``None``: not retried on application errors (Ray's default)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorClassMeta:
    """What a handle needs to know about its actor's class (picklable, no code)."""

    class_name: str
    module: str
    methods: Mapping[str, MethodOptions]
    is_async: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorOptions:
    """An actor's options after validation (what ``Runtime.create_actor`` gets)."""

    class_name: str
    resources: Mapping[str, int] = field(default_factory=dict)
    """Held for the actor's lifetime, fixed point."""
    placement_resources: Mapping[str, int] | None = None
    """Must fit to place the actor (``None``: same as ``resources``)."""
    strategy: specs.SchedulingStrategy = specs.DEFAULT_STRATEGY
    max_restarts: int = specs.DEFAULT_MAX_RESTARTS
    max_task_retries: int = specs.DEFAULT_MAX_TASK_RETRIES
    max_concurrency: int = 1
    max_pending_calls: int = -1
    name: str | None = None
    namespace: str | None = None
    """``None``: the job's namespace."""
    detached: bool = False
    get_if_exists: bool = False
    is_async: bool = False
    env_vars: Mapping[str, str] = field(default_factory=dict)


# --- option tables -------------------------------------------------------------------------

_INT = (int,)
_OPT_INT = (int, type(None))
_NUMBER = (int, float, type(None))
_OPT_STR = (str, type(None))
_OPT_DICT = (dict, type(None))


@dataclass(frozen=True, slots=True)
class _Option:
    types: tuple[type, ...]
    check: Callable[[Any], str | None] | None = None
    unsupported: str | None = None
    """Why detray does not support it: any value outside ``neutral`` raises NotImplementedError."""
    neutral: tuple[Any, ...] = (None,)


def _counting(name: str, minimum: int) -> _Option:
    def check(value: Any) -> str | None:
        if value is not None and value < minimum:
            if minimum == -1:
                return f"'{name}' only accepts None, 0, -1 or a positive integer (-1 is infinity)"
            return f"'{name}' only accepts None or an integer >= {minimum}"
        return None

    return _Option(_OPT_INT, check)


def _check_num_returns(value: Any) -> str | None:
    if isinstance(value, str):
        return None  # "dynamic"/"streaming": rejected as unsupported below
    if value is not None and value < 0:
        return "'num_returns' only accepts a non-negative integer"
    return None


def _check_lifetime(value: Any) -> str | None:
    if value not in (None, "detached", "non_detached"):
        return "actor 'lifetime' must be one of 'detached', 'non_detached' and None"
    return None


def _check_retry_exceptions(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if all(isinstance(item, type) and issubclass(item, BaseException) for item in value):
        return None
    return "'retry_exceptions' must be either a boolean or a list of exception types"


_GENERATORS = "generator tasks (num_returns='dynamic'/'streaming') are not supported by detray"
_PLACEMENT_GROUPS = "placement groups are not supported by detray"

_COMMON: dict[str, _Option] = {
    "num_cpus": _Option(_NUMBER),
    "num_gpus": _Option(_NUMBER),
    "memory": _Option(_NUMBER),
    "resources": _Option(_OPT_DICT),
    "name": _Option(_OPT_STR),
    "runtime_env": _Option(_OPT_DICT),
    "scheduling_strategy": _Option((type(None), str, NodeAffinitySchedulingStrategy)),
    "accelerator_type": _Option(_OPT_STR, unsupported="accelerator types are not supported"),
    "label_selector": _Option(_OPT_DICT, unsupported="label selectors are not supported"),
    "fallback_strategy": _Option(
        (list, type(None)), unsupported="fallback strategies are not supported"
    ),
    "placement_group": _Option(
        (type(None), str, object), unsupported=_PLACEMENT_GROUPS, neutral=(None, "default")
    ),
    "placement_group_bundle_index": _Option(_INT, unsupported=_PLACEMENT_GROUPS, neutral=(-1,)),
    "placement_group_capture_child_tasks": _Option(
        (bool, type(None)), unsupported=_PLACEMENT_GROUPS, neutral=(None, False)
    ),
    "enable_task_events": _Option((bool,)),
    "_metadata": _Option(_OPT_DICT),
}

TASK_OPTIONS: dict[str, _Option] = {
    **_COMMON,
    "num_returns": _Option((int, str, type(None)), _check_num_returns),
    "max_retries": _counting("max_retries", -1),
    "retry_exceptions": _Option((bool, list, tuple), _check_retry_exceptions),
    "max_calls": _counting("max_calls", 0),
    "object_store_memory": _Option(
        _OPT_INT, lambda v: None if v is None else "'object_store_memory' is not settable for tasks"
    ),
    "_generator_backpressure_num_objects": _Option(_OPT_INT, unsupported=_GENERATORS),
}
"""Options of ``@remote`` functions and their ``.options()`` (Ray 2.x names)."""

ACTOR_OPTIONS: dict[str, _Option] = {
    **_COMMON,
    "max_restarts": _counting("max_restarts", -1),
    "max_task_retries": _counting("max_task_retries", -1),
    "max_concurrency": _counting("max_concurrency", 1),
    "max_pending_calls": _counting("max_pending_calls", -1),
    "namespace": _Option(_OPT_STR),
    "lifetime": _Option(_OPT_STR, _check_lifetime),
    "get_if_exists": _Option((bool,)),
    "object_store_memory": _counting("object_store_memory", 0),
    "allow_out_of_order_execution": _Option((bool,)),
    "concurrency_groups": _Option(
        (list, dict, type(None)), unsupported="actor concurrency groups are not supported"
    ),
}
"""Options of ``@remote`` classes and their ``.options()`` (Ray 2.x names)."""

METHOD_OPTIONS: dict[str, _Option] = {
    "num_returns": _Option((int, str, type(None)), _check_num_returns),
    "name": _Option(_OPT_STR),
    "max_task_retries": _counting("max_task_retries", -1),
    "retry_exceptions": _Option((bool, list, tuple, type(None)), _check_retry_exceptions),
    "enable_task_events": _Option((bool,)),
    "concurrency_group": _Option(_OPT_STR, unsupported="actor concurrency groups are not supported"),
    "tensor_transport": _Option(_OPT_STR, unsupported="tensor transports are not supported"),
    "_generator_backpressure_num_objects": _Option(_OPT_INT, unsupported=_GENERATORS),
}
"""Options of ``@method`` and of ``handle.method.options()``."""

UNSUPPORTED_OPTIONS: dict[str, str] = {
    name: option.unsupported
    for table in (TASK_OPTIONS, ACTOR_OPTIONS, METHOD_OPTIONS)
    for name, option in table.items()
    if option.unsupported
} | {
    "num_returns='dynamic'/'streaming'": _GENERATORS,
    "runtime_env keys other than env_vars": "only runtime_env={'env_vars': {...}} is supported",
    "max_calls in .options()": "as in Ray, max_calls can only be set in @remote",
}
"""Ray options detray rejects with NotImplementedError (docs/compatibility.md cites this)."""

ACCEPTED_WITHOUT_EFFECT = ("_metadata", "enable_task_events", "allow_out_of_order_execution")
"""Accepted for compatibility; they change nothing (order is kept, events are always traced).
Actors' ``object_store_memory`` is accepted and ignored too (Ray deprecated it: it reserves nothing)."""


def _type_names(types: tuple[type, ...]) -> str:
    names = ["None" if t is type(None) else t.__name__ for t in types if t is not object]
    return " or ".join(names)


def validate(
    options: Mapping[str, Any], table: Mapping[str, _Option], where: str, *, in_options: bool
) -> None:
    """Check user options against ``table``; ``where`` names the function, class or method."""
    for key, value in options.items():
        option = table.get(key)
        if option is None:
            raise ValueError(
                f"Invalid option keyword {key!r} for {where}. Valid ones are {sorted(table)}."
            )
        if not isinstance(value, option.types) or (
            isinstance(value, bool) and bool not in option.types
        ):
            raise TypeError(
                f"{where}: the type of option {key!r} must be {_type_names(option.types)}, "
                f"but received {type(value).__name__}"
            )
        if option.check is not None:
            problem = option.check(value)
            if problem:
                raise ValueError(f"{where}: {problem}, got {value!r}")
        if option.unsupported and value not in option.neutral:
            raise NotImplementedError(f"{where}: option {key!r}: {option.unsupported}")
    if in_options and "max_calls" in options:
        raise ValueError(f"{where}: setting 'max_calls' is not supported in '.options()'")
    num_returns = options.get("num_returns")
    if isinstance(num_returns, str):
        if num_returns in ("dynamic", "streaming"):
            raise NotImplementedError(f"{where}: num_returns={num_returns!r}: {_GENERATORS}")
        raise ValueError(f"{where}: 'num_returns' only accepts a non-negative integer")


# --- conversions ---------------------------------------------------------------------------


def resource_quantities(options: Mapping[str, Any], where: str) -> dict[str, float]:
    """The user's quantities by resource name (``num_cpus`` -> ``CPU`` ...), unconverted."""
    quantities: dict[str, float] = {}
    for option, resource in (("num_cpus", res.CPU), ("num_gpus", res.GPU), ("memory", res.MEMORY)):
        if options.get(option) is not None:
            quantities[resource] = options[option]
    for name, quantity in (options.get("resources") or {}).items():
        if not isinstance(name, str):
            raise TypeError(f"{where}: resource names must be str, got {type(name).__name__}")
        if name in (res.CPU, res.GPU):
            raise ValueError(
                f"{where}: use the 'num_cpus' and 'num_gpus' keywords instead of "
                f"{name!r} in 'resources'"
            )
        if isinstance(quantity, bool) or not isinstance(quantity, (int, float)):
            raise TypeError(
                f"{where}: the quantity of resource {name!r} must be a number, "
                f"got {type(quantity).__name__}"
            )
        quantities[name] = quantity
    return quantities


def to_units(quantities: Mapping[str, float], where: str) -> dict[str, int]:
    """Fixed-point units (``detray.core.resources.units_of``); a bad quantity names itself."""
    try:
        return res.units_of(quantities)
    except res.ResourceError as error:
        raise res.ResourceError(f"{where}: {error}") from None


def strategy_of(value: Any, where: str) -> specs.SchedulingStrategy:
    if value is None or value == "DEFAULT":
        return specs.DEFAULT_STRATEGY
    if value == "SPREAD":
        return specs.SpreadStrategy()
    if isinstance(value, NodeAffinitySchedulingStrategy):
        return specs.NodeAffinityStrategy(node=NodeID(value.node_id), soft=value.soft)
    raise ValueError(
        f"{where}: invalid scheduling_strategy {value!r}; use 'DEFAULT', 'SPREAD' "
        "or NodeAffinitySchedulingStrategy(node_id, soft)"
    )


def env_vars_of(runtime_env: Mapping[str, Any] | None, where: str) -> dict[str, str]:
    """The ``env_vars`` of a runtime_env; any other key is not supported."""
    if not runtime_env:
        return {}
    others = sorted(key for key in runtime_env if key != "env_vars")
    if others:
        raise NotImplementedError(
            f"{where}: runtime_env keys {others} are not supported by detray "
            "(only 'env_vars' is)"
        )
    env_vars = runtime_env.get("env_vars") or {}
    if not isinstance(env_vars, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env_vars.items()
    ):
        raise TypeError(f"{where}: runtime_env['env_vars'] must be a dict of str to str")
    return dict(env_vars)


def retry_exceptions_of(value: Any) -> bool | tuple[str, ...]:
    if isinstance(value, bool):
        return value
    from detray.exceptions import qualified_name

    return tuple(qualified_name(cls) for cls in value)


def task_options(function_name: str, options: Mapping[str, Any]) -> TaskOptions:
    """Validate a remote function's merged options and put them in normal form."""
    where = f"remote function {function_name}()"
    validate(options, TASK_OPTIONS, where, in_options=False)
    quantities = resource_quantities(options, where)
    quantities.setdefault(res.CPU, 1)  # Ray: tasks take one CPU unless told otherwise
    num_returns = options.get("num_returns")
    max_retries = options.get("max_retries")
    return TaskOptions(
        name=options.get("name") or function_name,
        num_returns=1 if num_returns is None else num_returns,
        resources=to_units(quantities, where),
        strategy=strategy_of(options.get("scheduling_strategy"), where),
        max_retries=specs.DEFAULT_MAX_RETRIES if max_retries is None else max_retries,
        retry_exceptions=retry_exceptions_of(options.get("retry_exceptions", False)),
        max_calls=options.get("max_calls"),
        env_vars=env_vars_of(options.get("runtime_env"), where),
    )


def actor_resources(
    options: Mapping[str, Any], where: str
) -> tuple[dict[str, int], dict[str, int] | None]:
    """Held and placement resources of an actor, by Ray's rule.

    Nothing specified (``memory`` aside): the actor holds no CPU while alive
    but needs one CPU free to be placed. Any of ``num_cpus``, ``num_gpus``,
    ``resources`` specified: everything is held for the actor's lifetime,
    with one CPU unless ``num_cpus`` says otherwise, and placement needs the same.
    """
    quantities = resource_quantities(options, where)
    if set(quantities) <= {res.MEMORY}:
        held = to_units(quantities, where)
        placement = dict(held)
        placement[res.CPU] = placement.get(res.CPU, 0) + res.UNIT
        return held, placement
    quantities.setdefault(res.CPU, 1)
    return to_units(quantities, where), None


def actor_options(class_name: str, options: Mapping[str, Any], *, is_async: bool) -> ActorOptions:
    """Validate an actor class's merged options and put them in normal form."""
    where = f"actor class {class_name}"
    validate(options, ACTOR_OPTIONS, where, in_options=False)
    if options.get("get_if_exists") and not options.get("name"):
        raise ValueError(f"{where}: the actor name must be specified to use 'get_if_exists'")
    if options.get("name") == "":
        raise ValueError(f"{where}: the actor name must be a non-empty string")
    held, placement = actor_resources(options, where)
    max_concurrency = options.get("max_concurrency")
    if max_concurrency is None:
        max_concurrency = DEFAULT_ASYNC_MAX_CONCURRENCY if is_async else 1
    max_restarts = options.get("max_restarts")
    max_task_retries = options.get("max_task_retries")
    max_pending_calls = options.get("max_pending_calls")
    return ActorOptions(
        class_name=class_name,
        resources=held,
        placement_resources=placement,
        strategy=strategy_of(options.get("scheduling_strategy"), where),
        max_restarts=specs.DEFAULT_MAX_RESTARTS if max_restarts is None else max_restarts,
        max_task_retries=(
            specs.DEFAULT_MAX_TASK_RETRIES if max_task_retries is None else max_task_retries
        ),
        max_concurrency=max_concurrency,
        max_pending_calls=-1 if max_pending_calls is None else max_pending_calls,
        name=options.get("name"),
        namespace=options.get("namespace"),
        detached=options.get("lifetime") == "detached",
        get_if_exists=bool(options.get("get_if_exists", False)),
        is_async=is_async,
        env_vars=env_vars_of(options.get("runtime_env"), where),
    )


def method_options(
    qualname: str, options: Mapping[str, Any], defaults: MethodOptions | None = None
) -> MethodOptions:
    """Validate ``@method`` / ``handle.m.options()`` options over ``defaults``."""
    where = f"actor method {qualname}()"
    validate(options, METHOD_OPTIONS, where, in_options=False)
    base = defaults or MethodOptions(name=qualname)
    num_returns = options.get("num_returns", base.num_returns)
    retry = options.get("retry_exceptions")
    return MethodOptions(
        name=options.get("name") or base.name,
        num_returns=1 if num_returns is None else num_returns,
        max_task_retries=options.get("max_task_retries", base.max_task_retries),
        retry_exceptions=base.retry_exceptions if retry is None else retry_exceptions_of(retry),
    )


# --- specs for the core (ids come from the runtime) -------------------------------------------


_TASK_SPEC_FIELDS = (
    "task_id", "job_id", "owner", "name", "kind", "args", "return_ids", "resources",
    "placement_resources", "strategy", "max_retries", "retry_exceptions", "actor_id", "caller_seq",
)  # fmt: skip
assert set(_TASK_SPEC_FIELDS) == {f.name for f in dataclasses.fields(specs.TaskSpec) if f.init}, (
    "task_spec sets every field of TaskSpec.__init__"
)
(
    _set_task_id, _set_job_id, _set_owner, _set_name, _set_kind, _set_args, _set_return_ids, _set_resources,
    _set_placement_resources, _set_strategy, _set_max_retries, _set_retry_exceptions, _set_actor_id, _set_caller_seq,
) = (getattr(specs.TaskSpec, name).__set__ for name in _TASK_SPEC_FIELDS)  # the slots' own setters  # fmt: skip
_new = object.__new__
_NORMAL = specs.TaskKind.NORMAL


def task_spec(
    options: TaskOptions,
    task_id: TaskID,
    job_id: JobID,
    owner: WorkerID,
    args: tuple[ObjectID, ...],
    return_ids: tuple[ObjectID, ...],
) -> specs.TaskSpec:
    """The core's spec of a normal task (``args``: top-level ref arguments only).

    The ``TaskSpec(task_id=..., name=options.name, kind=NORMAL, ...,
    retry_exceptions=options.retry_exceptions)`` that the frozen dataclass's
    ``__init__`` and ``__post_init__`` make: every ``__init__`` field set through
    its slot, then ``__post_init__`` (half the cost: one per submitted task; tests
    compare both ways). The simulator passes the ids by position (keyword matching
    costs a small call a third more).
    """
    spec: specs.TaskSpec = _new(specs.TaskSpec)
    _set_task_id(spec, task_id)
    _set_job_id(spec, job_id)
    _set_owner(spec, owner)
    _set_name(spec, options.name)
    _set_kind(spec, _NORMAL)
    _set_args(spec, args)
    _set_return_ids(spec, return_ids)
    _set_resources(spec, options.resources)
    _set_placement_resources(spec, None)
    _set_strategy(spec, options.strategy)
    _set_max_retries(spec, options.max_retries)
    _set_retry_exceptions(spec, options.retry_exceptions)
    _set_actor_id(spec, None)
    _set_caller_seq(spec, 0)
    spec.__post_init__()  # the derived fields, by the class's own rule
    return spec


def actor_spec(
    options: ActorOptions,
    *,
    creation_task_id: TaskID,
    job_id: JobID,
    owner: WorkerID,
    args: tuple[ObjectID, ...],
    default_namespace: str,
    return_ids: tuple[ObjectID, ...] = (),
) -> specs.ActorSpec:
    """The core's spec of an actor and its creation task.

    The creation task itself is not retried (``max_retries=0``): restarts are
    the actor's budget, ``max_restarts``.
    """
    from detray.core.ids import actor_id

    actor = actor_id(creation_task_id)
    creation = specs.TaskSpec(
        task_id=creation_task_id,
        job_id=job_id,
        owner=owner,
        name=f"{options.class_name}.__init__",
        kind=specs.TaskKind.ACTOR_CREATION,
        args=args,
        return_ids=return_ids,
        resources=options.resources,
        placement_resources=options.placement_resources,
        strategy=options.strategy,
        max_retries=0,
        actor_id=actor,
    )
    return specs.ActorSpec(
        actor_id=actor,
        creation=creation,
        max_restarts=options.max_restarts,
        max_task_retries=options.max_task_retries,
        name=options.name,
        namespace=default_namespace if options.namespace is None else options.namespace,
        detached=options.detached,
        max_concurrency=options.max_concurrency,
        is_async=options.is_async,
    )


def actor_task_spec(
    options: MethodOptions,
    *,
    actor: ActorID,
    actor_max_task_retries: int,
    task_id: TaskID,
    job_id: JobID,
    owner: WorkerID,
    args: tuple[ObjectID, ...],
    return_ids: tuple[ObjectID, ...],
    caller_seq: int,
) -> specs.TaskSpec:
    """The core's spec of an actor task (it holds no resources: the actor does)."""
    max_retries = (
        actor_max_task_retries if options.max_task_retries is None else options.max_task_retries
    )
    return specs.TaskSpec(
        task_id=task_id,
        job_id=job_id,
        owner=owner,
        name=options.name,
        kind=specs.TaskKind.ACTOR_TASK,
        args=args,
        return_ids=return_ids,
        resources={},
        max_retries=max_retries,
        retry_exceptions=options.retry_exceptions or False,
        actor_id=actor,
        caller_seq=caller_seq,
    )

