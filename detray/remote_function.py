"""Remote functions: what ``@remote`` makes of a function (Ray's ``ray.remote_function``).

Owns: ``RemoteFunction`` (``f.remote(...)`` submits a task, ``f.options(...)``
returns a new handle, calling ``f(...)`` directly is a ``TypeError``), with
options validated once, when decorated or when ``.options()`` is called; the
checks Ray makes at ``.remote()`` before anything is submitted, shared with
actor methods: the arguments must bind to the signature (``ArgumentCheck``),
and a generator needs an integer ``num_returns`` (``generator_kind``,
``streaming_refusal``: without one Ray runs a streaming generator task, which
detray does not support).

Must not: assign ids, serialize arguments or run anything: ``.remote()``
hands the function, the arguments and the options to the current runtime.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from detray import runtime as _runtime_mod
from detray.object_ref import shape_returns
from detray.options import TASK_OPTIONS, FunctionDescriptor, task_options, validate

__all__ = ["ArgumentCheck", "RemoteFunction", "generator_kind", "streaming_refusal"]


def _plain_arity(signature: inspect.Signature | None) -> int:
    """The number of arguments a call with positional arguments only must pass when every
    parameter is positional without a default (such a call needs no ``bind`` check);
    -1 otherwise."""
    if signature is None:
        return -1
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = signature.parameters.values()
    if all(p.kind in plain and p.default is inspect.Parameter.empty for p in params):
        return len(signature.parameters)
    return -1


class ArgumentCheck:
    """Ray's check at ``.remote()``: the arguments must bind to the callable's signature,
    else ``TypeError`` at once (not a task error at ``get``).

    ``skip_first``: the callable is a method run bound (``self``, or ``cls`` of a
    classmethod), so the caller passes everything but its first parameter.
    """

    __slots__ = ("_signature", "_arity", "_skip_first")

    def __init__(self, signature: inspect.Signature, *, skip_first: bool = False) -> None:
        self._signature = signature
        self._skip_first = skip_first
        arity = _plain_arity(signature)
        if skip_first:
            arity = arity - 1 if arity > 0 else -1  # no first parameter: let bind say so
        self._arity = arity

    @classmethod
    def of(cls, function: Callable[..., Any], *, skip_first: bool = False) -> ArgumentCheck | None:
        """The check of ``function``; ``None`` when it has no signature Python can read."""
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError):
            return None
        return cls(signature, skip_first=skip_first)

    def check(self, args: tuple[Any, ...], kwargs: Mapping[str, Any], where: str) -> None:
        """Raise ``TypeError`` prefixed ``where(): `` unless ``(*args, **kwargs)`` binds."""
        if not kwargs and len(args) == self._arity:
            return
        try:
            if self._skip_first:
                self._signature.bind(None, *args, **kwargs)
            else:
                self._signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{where}(): {error}") from None


def generator_kind(function: Any) -> str | None:
    """``"generator"`` or ``"async generator"`` for a (async) generator function, else None
    (Ray's test: ``inspect.isgeneratorfunction`` / ``isasyncgenfunction``)."""
    if inspect.isasyncgenfunction(function):
        return "async generator"
    if inspect.isgeneratorfunction(function):
        return "generator"
    return None


def streaming_refusal(kind: str | None, has_num_returns: bool, where: str, how: str) -> str | None:
    """The ``NotImplementedError`` message for calling a generator ``kind`` that Ray would run as a streaming
    generator: a generator without an integer ``num_returns`` (``has_num_returns``), or any
    async generator (Ray streams those only). ``how`` says where to set ``num_returns``."""
    if kind is None or (kind == "generator" and has_num_returns):
        return None
    streaming = (
        f"{where}() is {'an' if kind[0] == 'a' else 'a'} {kind} function, which Ray runs as a "
        "streaming generator task (an ObjectRefGenerator of refs); detray does not support "
        "streaming generators."
    )
    if kind == "generator":
        return (
            f"{streaming} Give it a fixed number of return values with {how} (it must then "
            "yield exactly N values), or return a list."
        )
    return f"{streaming} Return a list instead, or make it a plain generator with {how}."


class RemoteFunction:
    """A function decorated with ``@remote``; ``.remote(*args)`` runs it as a task."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self._function = function
        self._descriptor = FunctionDescriptor(function)
        self._function_name = self._descriptor.qualname
        self._raw_options = dict(options)
        self._options = task_options(self._function_name, self._raw_options)
        self._arguments = ArgumentCheck.of(function)
        self._generator = generator_kind(function)
        self._streaming = self._streaming_refusal()
        self.__name__ = getattr(function, "__name__", self._function_name)
        self.__qualname__ = self._function_name
        self.__module__ = self._descriptor.module
        self.__doc__ = getattr(function, "__doc__", None)
        self.__wrapped__ = function

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        name = self._function_name
        raise TypeError(
            f"Remote functions cannot be called directly. Instead of running '{name}()', "
            f"try '{name}.remote()'."
        )

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        """Submit a task; returns an ``ObjectRef`` (a list for ``num_returns > 1``,
        ``None`` for ``num_returns=0``)."""
        if self._streaming is not None:
            raise NotImplementedError(self._streaming)
        if self._arguments is not None:
            self._arguments.check(args, kwargs, self._function_name)
        runtime = _runtime_mod.require()
        refs = runtime.submit_task(self._descriptor, args, kwargs, self._options)
        return shape_returns(refs, self._options.num_returns)

    def options(self, **kwargs: Any) -> RemoteFunction:
        """A new handle with these options overriding the decorator's."""
        validate(kwargs, TASK_OPTIONS, f"remote function {self._function_name}()", in_options=True)
        merged = {**self._raw_options, **kwargs}
        clone = object.__new__(RemoteFunction)
        clone.__dict__.update(self.__dict__)
        clone._raw_options = merged
        clone._options = task_options(self._function_name, merged)
        clone._streaming = clone._streaming_refusal()
        return clone

    def _streaming_refusal(self) -> str | None:
        name = self._function_name
        return streaming_refusal(
            self._generator,
            self._raw_options.get("num_returns") is not None,
            name,
            f"@remote(num_returns=N) or {name}.options(num_returns=N)",
        )

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{self._function_name}.bind(): Ray DAGs are not supported by detray"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteFunction, (self._function, self._raw_options))

    def __repr__(self) -> str:
        return f"RemoteFunction({self._descriptor.module}.{self._function_name})"
