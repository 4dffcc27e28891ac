"""Actors as users see them: ``@remote`` classes, handles, method calls, ``@method``.

Owns: ``ActorClass`` (``Cls.remote(...)``, ``Cls.options(...)``),
``ActorHandle`` (``handle.method.remote(...)``, picklable so it can be passed
to tasks, counted by the runtime like refs), ``ActorMethod`` and the
``method`` decorator (per-method ``num_returns`` and retry options), the
checks a call makes at ``.remote()`` (``MethodCall``: arguments bound to the
method's signature, generators refused without ``num_returns``),
``exit_actor`` (Ray's ``ray.actor.exit_actor``) and the methods every actor
has without defining them (``__ray_ready__``, ``__ray_terminate__``: a
handle offers them, a worker runs them through ``builtin_method``).

Must not: assign ids or run anything: creation and calls go to the current
runtime (``detray.runtime.require()``), which owns actor state. Must not let a
handle be part of a reference cycle (nothing it holds refers back to it): the
actor ends when its last handle goes (Ray's rule), which must not wait for the
cyclic garbage collector.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

from detray import runtime as _runtime_mod
from detray import serialization
from detray.core.ids import ActorID
from detray.exceptions import AsyncioActorExit, IntendedActorExit
from detray.object_ref import mark_actor_task, shape_returns
from detray.options import (
    ACTOR_OPTIONS,
    METHOD_OPTIONS,
    ActorClassMeta,
    FunctionDescriptor,
    MethodOptions,
    actor_options,
    method_options,
    validate,
)
from detray.remote_function import ArgumentCheck, generator_kind, streaming_refusal

__all__ = [
    "BUILTIN_METHODS",
    "ActorClass",
    "ActorHandle",
    "ActorMethod",
    "MethodCall",
    "builtin_method",
    "class_meta",
    "exit_actor",
    "method",
]

_METHOD_OPTIONS_ATTR = "__detray_method_options__"

F = TypeVar("F", bound=Callable[..., Any])


def method(*args: Any, **kwargs: Any) -> Any:
    """Annotate an actor method with options: ``@detray.method(num_returns=2)``.

    Accepts ``num_returns``, ``name``, ``max_task_retries``,
    ``retry_exceptions`` (Ray's ``ray.method``); bare ``@detray.method`` is allowed.
    """
    if args:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            setattr(args[0], _METHOD_OPTIONS_ATTR, {})
            return args[0]
        raise TypeError(
            "method() takes only keyword options, for example '@detray.method(num_returns=2)'"
        )
    validate(kwargs, METHOD_OPTIONS, "@method", in_options=False)

    def annotate(function: F) -> F:
        setattr(function, _METHOD_OPTIONS_ATTR, dict(kwargs))
        return function

    return annotate


def exit_actor() -> NoReturn:
    """Intentionally exit the current actor (Ray's ``ray.actor.exit_actor``).

    Raises the exit signal in the calling method: ``IntendedActorExit`` (a
    ``SystemExit``) in a synchronous or threaded actor, ``AsyncioActorExit`` on
    an event loop (async actors). The worker turns it into the actor's
    intentional exit: the actor is never restarted, the call that called this
    fails with ``RayActorError`` (its caller sees the death, not a value),
    queued and later calls fail too, calls running at once on a threaded or
    async actor finish first. ``TypeError`` outside an actor (the driver, a task).
    """
    runtime = _runtime_mod.current()
    context = None if runtime is None else runtime.get_runtime_context()
    if context is None or context.get_actor_id() is None:
        where = "a task" if context is not None and context.get_task_id() is not None else "the driver"
        raise TypeError(
            f"exit_actor API is called on a non-actor worker ({where}). Call it inside an actor "
            "method to exit that actor; use kill(handle) to end an actor from outside."
        )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise IntendedActorExit() from None
    raise AsyncioActorExit()


def _ray_ready(self: Any) -> bool:
    return True


def _ray_terminate(self: Any) -> NoReturn:
    exit_actor()


BUILTIN_METHODS: dict[str, Callable[[Any], Any]] = {
    "__ray_ready__": _ray_ready,
    "__ray_terminate__": _ray_terminate,
}
"""Methods every actor has (Ray's): ``__ray_ready__`` returns True once the actor is
created; ``__ray_terminate__`` exits it gracefully after the calls queued before it."""


def builtin_method(instance: Any, name: str, missing: AttributeError) -> Callable[..., Any]:
    """The bound built-in method ``name`` of ``instance``, whose class does not define it;
    re-raises ``missing`` (the failed lookup) for any other name."""
    function = BUILTIN_METHODS.get(name)
    if function is None:
        raise missing
    return types.MethodType(function, instance)


def _is_method(member: Any) -> bool:
    return inspect.isfunction(member) or inspect.ismethod(member)


def class_meta(cls: type) -> ActorClassMeta:
    """The methods of ``cls`` callable through a handle (inherited ones too), and whether
    it is an async actor (any ``async def`` method: Ray's rule)."""
    methods: dict[str, MethodOptions] = {}
    is_async = False
    for name, member in inspect.getmembers(cls, _is_method):
        if name == "__init__":
            continue
        function = getattr(member, "__func__", member)
        if inspect.iscoroutinefunction(function) or inspect.isasyncgenfunction(function):
            is_async = True
        qualname = f"{cls.__qualname__}.{name}"
        annotated = getattr(function, _METHOD_OPTIONS_ATTR, None) or {}
        methods[name] = method_options(qualname, annotated)
    return ActorClassMeta(
        class_name=cls.__qualname__, module=cls.__module__, methods=methods, is_async=is_async
    )


@dataclass(frozen=True, slots=True)
class MethodCall:
    """What ``handle.method.remote()`` checks before submitting, read from the class.

    Kept by the handles ``Cls.remote()`` returns in the process that has the class;
    never pickled (a handle passed to a task or found with ``get_actor`` has none,
    and its calls' mistakes come back from the actor at ``get``).
    """

    qualname: str
    """``Class.method``, as errors name it."""
    arguments: ArgumentCheck | None
    """The method's signature as the caller sees it (no ``self``); None: unreadable."""
    generator: str | None
    """``generator_kind`` of the method."""
    annotated_returns: bool
    """``@method(num_returns=...)`` gave it an integer ``num_returns``."""


def class_calls(cls: type, meta: ActorClassMeta) -> dict[str, MethodCall]:
    """A ``MethodCall`` for every method of ``meta`` and every built-in method."""
    calls: dict[str, MethodCall] = {}
    for name in meta.methods:
        member = getattr(cls, name)
        function = getattr(member, "__func__", member)
        annotated = getattr(function, _METHOD_OPTIONS_ATTR, None) or {}
        if isinstance(inspect.getattr_static(cls, name, None), staticmethod) or inspect.ismethod(member):
            arguments = ArgumentCheck.of(member)  # a static method, or a class method bound to cls
        else:
            arguments = ArgumentCheck.of(function, skip_first=True)  # run bound to the instance
        calls[name] = MethodCall(
            f"{meta.class_name}.{name}",
            arguments,
            generator_kind(function),
            annotated.get("num_returns") is not None,
        )
    for name, builtin in BUILTIN_METHODS.items():
        if name not in calls:
            arguments = ArgumentCheck.of(builtin, skip_first=True)
            calls[name] = MethodCall(f"{meta.class_name}.{name}", arguments, None, False)
    return calls


class ActorClass:
    """A class decorated with ``@remote``: ``Cls.remote(*args)`` creates an actor.

    Class attributes of the user's class (constants, static methods) stay
    reachable through it; calling it directly is a ``TypeError``.
    """

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._descriptor = FunctionDescriptor(cls)
        self._meta = class_meta(cls)
        self._calls = class_calls(cls, self._meta)
        self._raw_options = dict(options)
        self._options = actor_options(cls.__qualname__, self._raw_options, is_async=self._meta.is_async)
        self._arguments = ArgumentCheck.of(cls)
        self.__name__ = cls.__name__
        self.__qualname__ = cls.__qualname__
        self.__module__ = cls.__module__
        self.__doc__ = cls.__doc__

    @property
    def __ray_actor_class__(self) -> type:
        return self._cls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = self._cls.__name__
        raise TypeError(
            f"Actors cannot be instantiated directly. Instead of '{name}()', use '{name}.remote()'."
        )

    def remote(self, *args: Any, **kwargs: Any) -> ActorHandle:
        """Create the actor; returns its handle at once (creation happens asynchronously)."""
        if self._arguments is not None:
            self._arguments.check(args, kwargs, f"{self._cls.__qualname__}.__init__")
        runtime = _runtime_mod.require()
        actor_id = runtime.create_actor(self._descriptor, self._meta, args, kwargs, self._options)
        return ActorHandle(actor_id, self._meta, self._calls)

    def options(self, **kwargs: Any) -> ActorClass:
        """A copy with these options overriding the decorator's (``name``, ``lifetime``, ...)."""
        where = f"actor class {self._cls.__qualname__}"
        validate(kwargs, ACTOR_OPTIONS, where, in_options=True)
        merged = {**self._raw_options, **kwargs}
        clone = object.__new__(ActorClass)
        clone.__dict__.update(self.__dict__)
        clone._raw_options = merged
        clone._options = actor_options(self._cls.__qualname__, merged, is_async=self._meta.is_async)
        return clone

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{self._cls.__qualname__}.bind(): Ray DAGs are not supported by detray")

    def __getattr__(self, name: str) -> Any:
        cls = self.__dict__.get("_cls")
        if cls is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(cls, name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (ActorClass, (self._cls, self._raw_options))

    def __repr__(self) -> str:
        return f"ActorClass({self._cls.__module__}.{self._cls.__qualname__})"


class ActorHandle:
    """A handle to an actor: ``handle.method.remote(...)`` calls a method.

    Picklable (pass it to tasks and other actors); compared and hashed by
    actor id. While handles exist the runtime keeps a non-detached actor alive.
    ``handle.method`` is a new ``ActorMethod`` each time: a cached one would refer
    back to the handle, and the cycle would keep the actor alive until the cyclic
    garbage collector ran (never, while the program blocks in ``get``).
    """

    __slots__ = ("_actor_id", "_meta", "_calls", "_runtime", "_token", "__weakref__")

    def __init__(
        self, actor_id: str, meta: ActorClassMeta, calls: Mapping[str, MethodCall] | None = None
    ) -> None:
        self._actor_id = ActorID(actor_id)
        self._meta = meta
        self._calls = calls
        runtime = _runtime_mod._current
        self._runtime = runtime
        self._token = None if runtime is None else runtime.add_actor_handle(self._actor_id)

    def __del__(self) -> None:
        try:
            runtime = self._runtime
            if runtime is not None:
                runtime.remove_actor_handle(self._actor_id, self._token)
        except Exception:  # noqa: BLE001 - a finalizer must never raise
            pass

    def __getattr__(self, name: str) -> ActorMethod:
        if name in ActorHandle.__slots__:
            raise AttributeError(name)
        options = self._meta.methods.get(name)
        if options is None:
            if name not in BUILTIN_METHODS:
                raise AttributeError(f"'{self._meta.class_name}' actor has no method '{name}'")
            options = method_options(f"{self._meta.class_name}.{name}", {})
        return ActorMethod(self, name, options, False)

    @property
    def actor_id(self) -> ActorID:
        return self._actor_id

    @property
    def class_name(self) -> str:
        return self._meta.class_name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorHandle) and other._actor_id == self._actor_id

    def __hash__(self) -> int:
        return hash(self._actor_id)

    def __repr__(self) -> str:
        return f"Actor({self._meta.class_name}, {self._actor_id})"

    def __copy__(self) -> ActorHandle:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ActorHandle:
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        serialization.record_actor(self._actor_id)
        return (_rebuild_actor_handle, (self._actor_id, self._meta))


def _rebuild_actor_handle(actor_id: str, meta: ActorClassMeta) -> ActorHandle:
    return ActorHandle(actor_id, meta)


class ActorMethod:
    """``handle.method``: ``.remote(...)`` submits a call, ``.options(...)`` overrides options.

    Holds its handle (so ``m = handle.f; del handle; m.remote()`` works); the handle
    does not hold it back.
    """

    __slots__ = ("_handle", "_name", "_options", "_returns_given")

    def __init__(
        self, handle: ActorHandle, name: str, options: MethodOptions, returns_given: bool
    ) -> None:
        self._handle = handle
        self._name = name
        self._options = options
        self._returns_given = returns_given  # .options() set an integer num_returns

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit the call; returns an ``ObjectRef`` (a list for ``num_returns > 1``, ``None``
        for ``num_returns=0``). Arguments that do not fit the method raise ``TypeError`` here."""
        handle = self._handle
        calls = handle._calls
        if calls is not None:
            call = calls.get(self._name)
            if call is not None:
                self._check(call, args, kwargs)
        runtime = _runtime_mod.require()
        refs = runtime.submit_actor_task(handle._actor_id, self._name, args, kwargs, self._options)
        return shape_returns(mark_actor_task(refs), self._options.num_returns)

    def _check(self, call: MethodCall, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if call.generator is not None:
            refusal = streaming_refusal(
                call.generator,
                call.annotated_returns or self._returns_given,
                call.qualname,
                f"@method(num_returns=N) on the method or .{self._name}.options(num_returns=N) "
                "on the call",
            )
            if refusal is not None:
                raise NotImplementedError(refusal)
        if call.arguments is not None:
            call.arguments.check(args, kwargs, call.qualname)

    def options(self, **kwargs: Any) -> ActorMethod:
        qualname = f"{self._handle._meta.class_name}.{self._name}"
        options = method_options(qualname, kwargs, self._options)
        returns_given = self._returns_given or kwargs.get("num_returns") is not None
        return ActorMethod(self._handle, self._name, options, returns_given)

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{self._name}.bind(): Ray DAGs are not supported by detray")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running "
            f"'object.{self._name}()', try 'object.{self._name}.remote()'."
        )

    def __repr__(self) -> str:
        return f"ActorMethod({self._handle._meta.class_name}.{self._name})"
