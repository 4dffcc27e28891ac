"""Remote functions: what ``@remote`` makes of a function (Ray's ``ray.remote_function``).

Owns: ``RemoteFunction`` (``f.remote(...)`` submits a task, ``f.options(...)``
returns a new handle, calling ``f(...)`` directly is a ``TypeError``), with
options validated once, when decorated or when ``.options()`` is called.

Must not: assign ids, serialize arguments or run anything: ``.remote()``
hands the function, the arguments and the options to the current runtime.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from detray import runtime as _runtime_mod
from detray.object_ref import shape_returns
from detray.options import TASK_OPTIONS, FunctionDescriptor, task_options, validate

__all__ = ["RemoteFunction"]


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


class RemoteFunction:
    """A function decorated with ``@remote``; ``.remote(*args)`` runs it as a task."""

    def __init__(self, function: Callable[..., Any], options: dict[str, Any]) -> None:
        self._function = function
        self._descriptor = FunctionDescriptor(function)
        self._function_name = self._descriptor.qualname
        self._raw_options = dict(options)
        self._options = task_options(self._function_name, self._raw_options)
        try:
            self._signature: inspect.Signature | None = inspect.signature(function)
        except (TypeError, ValueError):
            self._signature = None
        self._arity = _plain_arity(self._signature)
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
        if self._signature is not None and (kwargs or len(args) != self._arity):
            try:
                self._signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{self._function_name}(): {error}") from None
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
        return clone

    def bind(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            f"{self._function_name}.bind(): Ray DAGs are not supported by detray"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteFunction, (self._function, self._raw_options))

    def __repr__(self) -> str:
        return f"RemoteFunction({self._descriptor.module}.{self._function_name})"
