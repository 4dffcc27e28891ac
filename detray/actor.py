"""Actors as users see them: ``@remote`` classes, handles, method calls, ``@method``.

Owns: ``ActorClass`` (``Cls.remote(...)``, ``Cls.options(...)``),
``ActorHandle`` (``handle.method.remote(...)``, picklable so it can be passed
to tasks, counted by the runtime like refs), ``ActorMethod`` and the
``method`` decorator (per-method ``num_returns`` and retry options),
``exit_actor`` (Ray's ``ray.actor.exit_actor``) and the methods every actor
has without defining them (``__ray_ready__``, ``__ray_terminate__``: a
handle offers them, a worker runs them through ``builtin_method``).

Must not: assign ids or run anything: creation and calls go to the current
runtime (``detray.runtime.require()``), which owns actor state.
"""

from __future__ import annotations

import asyncio
import inspect
import types
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from detray import runtime as _runtime_mod
from detray import serialization
from detray.core.ids import ActorID
from detray.exceptions import AsyncioActorExit, IntendedActorExit
from detray.object_ref import shape_returns
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

__all__ = [
    "BUILTIN_METHODS",
    "ActorClass",
    "ActorHandle",
    "ActorMethod",
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


class ActorClass:
    """A class decorated with ``@remote``: ``Cls.remote(*args)`` creates an actor.

    Class attributes of the user's class (constants, static methods) stay
    reachable through it; calling it directly is a ``TypeError``.
    """

    def __init__(self, cls: type, options: dict[str, Any]) -> None:
        self._cls = cls
        self._descriptor = FunctionDescriptor(cls)
        self._meta = class_meta(cls)
        self._raw_options = dict(options)
        self._options = actor_options(cls.__qualname__, self._raw_options, is_async=self._meta.is_async)
        try:
            self._signature: inspect.Signature | None = inspect.signature(cls)
        except (TypeError, ValueError):
            self._signature = None
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
        if self._signature is not None:
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{self._cls.__qualname__}.__init__(): {error}") from None
        runtime = _runtime_mod.require()
        actor_id = runtime.create_actor(self._descriptor, self._meta, args, kwargs, self._options)
        return ActorHandle(actor_id, self._meta)

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
    """

    __slots__ = ("_actor_id", "_meta", "_runtime", "_token", "_methods", "__weakref__")

    def __init__(self, actor_id: str, meta: ActorClassMeta) -> None:
        self._actor_id = ActorID(actor_id)
        self._meta = meta
        self._methods: dict[str, ActorMethod] = {}
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
        cached = self._methods.get(name)
        if cached is not None:
            return cached
        options = self._meta.methods.get(name)
        if options is None:
            if name not in BUILTIN_METHODS:
                raise AttributeError(f"'{self._meta.class_name}' actor has no method '{name}'")
            options = method_options(f"{self._meta.class_name}.{name}", {})
        bound = ActorMethod(self, name, options)
        self._methods[name] = bound
        return bound

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
    """``handle.method``: ``.remote(...)`` submits a call, ``.options(...)`` overrides options."""

    __slots__ = ("_handle", "_name", "_options")

    def __init__(self, handle: ActorHandle, name: str, options: MethodOptions) -> None:
        self._handle = handle
        self._name = name
        self._options = options

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        runtime = _runtime_mod.require()
        refs = runtime.submit_actor_task(
            self._handle._actor_id, self._name, args, kwargs, self._options
        )
        return shape_returns(refs, self._options.num_returns)

    def options(self, **kwargs: Any) -> ActorMethod:
        qualname = f"{self._handle._meta.class_name}.{self._name}"
        return ActorMethod(self._handle, self._name, method_options(qualname, kwargs, self._options))

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{self._name}.bind(): Ray DAGs are not supported by detray")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"Actor methods cannot be called directly. Instead of running "
            f"'object.{self._name}()', try 'object.{self._name}.remote()'."
        )

    def __repr__(self) -> str:
        return f"ActorMethod({self._handle._meta.class_name}.{self._name})"
