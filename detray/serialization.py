"""Serialization of values, functions and classes: pickle protocol 5, cloudpickle, zero-copy buffers.

Owns: turning a Python value into a ``SerializedObject`` (an in-band pickle,
the out-of-band buffers that numpy and other PEP 574 types hand over without
a copy, and the ids of the ``ObjectRef``s and actor handles found inside),
turning it back, pickling functions and classes once for the function table,
the inline-or-store decision, and the error that names what cannot be pickled.

Must not: decide where bytes live (a driver puts buffers in shared memory or
on the wire), talk to a runtime, or copy buffer data.

Theory of operation: ``serialize`` pickles with cloudpickle (so functions and
classes defined in ``__main__`` or locally travel by value) at protocol 5 with
a ``buffer_callback`` that keeps every ``PickleBuffer`` out of band; the
buffers are memoryviews of the original memory. While it runs, a
thread-local context is active: ``ObjectRef.__reduce__`` and
``ActorHandle.__reduce__`` record their ids in it (``contained_refs``), which
is how a runtime learns which references a stored value keeps alive. A ref
pickled with no context active (plain ``pickle.dumps``) has escaped counting;
it tells the runtime so (Ray pins such objects). ``deserialize`` hands the
buffers to ``pickle.loads``: numpy arrays come back as views of them,
read-only when the buffers are (by default it makes them read-only, as Ray's
``get`` does), and refs come back as ``ObjectRef``s.
"""

from __future__ import annotations

import pickle
import threading
import types
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

import cloudpickle  # type: ignore[import-untyped]

from detray import settings
from detray.core.ids import ActorID, ObjectID

Buffer = Union[memoryview, bytes, bytearray]

__all__ = [
    "SerializedObject",
    "argument_label",
    "deserialize",
    "pickle_function",
    "record_actor",
    "record_ref",
    "serialize",
    "serialize_returns",
    "should_inline",
    "unpickle_function",
]


@dataclass(slots=True)
class SerializedObject:
    """A serialized value: in-band pickle bytes, out-of-band buffers, contained ids."""

    inband: bytes
    buffers: list[Buffer] = field(default_factory=list)
    """Out-of-band buffers in pickling order (memoryviews of the original memory)."""
    contained_refs: list[ObjectID] = field(default_factory=list)
    """Ids of the ObjectRefs pickled inside the value, first occurrence order, no repeats."""
    contained_actors: list[ActorID] = field(default_factory=list)
    """Ids of the actor handles pickled inside the value."""

    @property
    def total_bytes(self) -> int:
        """In-band plus out-of-band bytes: the size the object store accounts."""
        buffers = self.buffers
        if not buffers:  # most values: no generator to start
            return len(self.inband)
        return len(self.inband) + sum(memoryview(buffer).nbytes for buffer in buffers)


def should_inline(serialized: SerializedObject) -> bool:
    """True when the value is small enough to travel inline (``settings.INLINE_THRESHOLD_BYTES``)."""
    return serialized.total_bytes <= settings.INLINE_THRESHOLD_BYTES


# --- the context refs record themselves in --------------------------------------------------


class _Context:
    __slots__ = ("refs", "actors", "_ref_set", "_actor_set")

    def __init__(self) -> None:
        self.refs: list[ObjectID] = []
        self.actors: list[ActorID] = []
        self._ref_set: set[str] = set()
        self._actor_set: set[str] = set()


_local = threading.local()


def record_ref(object_id: ObjectID) -> bool:
    """Called by ``ObjectRef.__reduce__``: True when a serialization is recording it."""
    context: _Context | None = getattr(_local, "context", None)
    if context is None:
        return False
    if object_id not in context._ref_set:
        context._ref_set.add(object_id)
        context.refs.append(object_id)
    return True


def record_actor(actor_id: ActorID) -> bool:
    """Called by ``ActorHandle.__reduce__``: True when a serialization is recording it."""
    context: _Context | None = getattr(_local, "context", None)
    if context is None:
        return False
    if actor_id not in context._actor_set:
        context._actor_set.add(actor_id)
        context.actors.append(actor_id)
    return True


# --- values ----------------------------------------------------------------------------------

_PRIMITIVES = frozenset({int, float, complex, str, bytes, bool, type(None)})
_PICKLE_ERRORS = (pickle.PicklingError, TypeError, AttributeError, ValueError, RecursionError)


def serialize(value: Any, what: str | None = None) -> SerializedObject:
    """Serialize ``value``; ``what`` names it in errors (e.g. ``argument_label("f", 0)``).

    Raises ``TypeError`` naming the part of ``value`` that cannot be pickled
    and its type, e.g. ``... value['lock'] (a _thread.lock) cannot be pickled``.
    """
    if type(value) in _PRIMITIVES:  # nothing out of band or inside: the lists given, not made by factories
        return SerializedObject(pickle.dumps(value, protocol=settings.PICKLE_PROTOCOL), [], [], [])
    context = _Context()
    previous = getattr(_local, "context", None)
    _local.context = context
    buffers: list[pickle.PickleBuffer] = []
    try:
        inband = cloudpickle.dumps(
            value, protocol=settings.PICKLE_PROTOCOL, buffer_callback=buffers.append
        )
    except _PICKLE_ERRORS as error:
        _local.context = previous
        raise unpicklable_error(value, what or "value", error) from error
    finally:
        _local.context = previous
    return SerializedObject(
        inband=inband,
        buffers=[buffer.raw() for buffer in buffers],
        contained_refs=context.refs,
        contained_actors=context.actors,
    )


def deserialize(serialized: SerializedObject, *, read_only: bool = True) -> Any:
    """Rebuild a value; numpy arrays are views of ``serialized.buffers`` (no copy).

    With ``read_only`` (the default, as Ray's ``get``) the views are made
    read-only so the stored object cannot be mutated through them; without
    it they are writable exactly when the given buffers are.
    """
    buffers: Sequence[Buffer] = serialized.buffers
    if read_only and buffers:
        buffers = [memoryview(buffer).toreadonly() for buffer in buffers]
    return pickle.loads(serialized.inband, buffers=buffers)


def serialize_returns(result: Any, name: str, count: int) -> list[SerializedObject]:
    """A task's result as its ``count`` return values, serialized (Ray's ``num_returns`` rules):
    one return is the result itself, more need a sequence of exactly that many values. A
    generator's yielded values are its returns for any ``count`` (it must yield exactly
    ``count`` of them)."""
    if not isinstance(result, types.GeneratorType):
        if count == 1:
            return [serialize(result, f"the return value of {name}()")]
        if count == 0:
            return []
    try:
        values = list(result)
    except TypeError:
        raise ValueError(
            f"Task {name} returned {type(result).__name__}, but num_returns={count} "
            "needs a sequence of that many values"
        ) from None
    if len(values) != count:
        raise ValueError(f"Task {name} returned {len(values)} objects, but num_returns={count}.")
    return [serialize(value, f"return value {i + 1} of {name}()") for i, value in enumerate(values)]


def argument_label(function_name: str, index: int | None = None, keyword: str | None = None) -> str:
    """How errors name an argument: ``argument 1 of f()`` (``index`` is 0-based) or
    ``keyword argument 'x' of f()``."""
    if keyword is not None:
        return f"keyword argument {keyword!r} of {function_name}()"
    if index is not None:
        return f"argument {index + 1} of {function_name}()"
    return f"the arguments of {function_name}()"


# --- functions and classes ------------------------------------------------------------------


def pickle_function(function: Any, name: str | None = None) -> bytes:
    """Cloudpickle a function or class once, for the function table.

    A closure or global that cannot be pickled raises ``TypeError`` naming it.
    """
    filename = _source_file(function)
    try:
        pickled: bytes = cloudpickle.dumps((_SOURCE_MARK, filename, function), protocol=settings.PICKLE_PROTOCOL)
    except _PICKLE_ERRORS as error:
        label = name or getattr(function, "__qualname__", None) or repr(function)
        raise unpicklable_error(function, f"remote function or class {label}", error, root=label) from error
    return pickled


def unpickle_function(data: bytes) -> Any:
    """The function or class of ``pickle_function``, its code naming its source file again
    (cloudpickle writes ``<dynamic-code>``), so remote tracebacks show the failing line."""
    loaded = pickle.loads(data)
    if not (isinstance(loaded, tuple) and len(loaded) == 3 and loaded[0] == _SOURCE_MARK):
        return loaded
    _, filename, function = loaded
    if filename:
        _name_source(function, filename)
    return function


_SOURCE_MARK = "detray-function"
_DYNAMIC = "<dynamic-code>"


def _source_file(function: Any) -> str | None:
    code = getattr(function, "__code__", None)
    if code is not None:
        return str(code.co_filename)
    module = __import__("sys").modules.get(getattr(function, "__module__", "") or "")
    filename = getattr(module, "__file__", None)
    return str(filename) if filename else None


def _with_filename(code: types.CodeType, filename: str) -> types.CodeType:
    if code.co_filename != _DYNAMIC:
        return code
    consts = tuple(_with_filename(c, filename) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return code.replace(co_filename=filename, co_consts=consts)


def _name_source(obj: Any, filename: str) -> None:
    if isinstance(obj, types.FunctionType):
        obj.__code__ = _with_filename(obj.__code__, filename)
    elif isinstance(obj, type):
        for member in vars(obj).values():
            if isinstance(member, (staticmethod, classmethod)):
                member = member.__func__
            if isinstance(member, property):
                for accessor in (member.fget, member.fset, member.fdel):
                    if isinstance(accessor, types.FunctionType):
                        accessor.__code__ = _with_filename(accessor.__code__, filename)
            elif isinstance(member, types.FunctionType):
                member.__code__ = _with_filename(member.__code__, filename)


# --- naming what cannot be pickled ------------------------------------------------------------


def type_name(obj: object) -> str:
    """``module.QualName`` of ``obj``'s type (``builtins.`` left out)."""
    cls = type(obj)
    module = getattr(cls, "__module__", "")
    return cls.__qualname__ if module in ("builtins", "") else f"{module}.{cls.__qualname__}"


def unpicklable_error(
    value: Any, what: str, error: BaseException, root: str = "value"
) -> TypeError:
    """A ``TypeError`` naming the deepest part of ``value`` that fails to pickle
    (its path starts at ``root``)."""
    if isinstance(error, RecursionError):
        return TypeError(f"could not serialize {what}: it is nested too deeply ({error})")
    culprit, path = find_unpicklable(value, root)
    return TypeError(
        f"could not serialize {what}: {path} (a {type_name(culprit)}) cannot be pickled: "
        f"{type(error).__name__}: {error}"
    )


def find_unpicklable(value: Any, root: str = "value") -> tuple[Any, str]:
    """The deepest part of ``value`` that fails to pickle, and its path from ``root``.

    Descends into the first failing child (container items, dict values and
    keys, attributes, closure cells and globals of functions) while one
    fails; bounded by ``settings.UNPICKLABLE_SEARCH_NODES_MAX`` probes and
    ``settings.UNPICKLABLE_SEARCH_DEPTH_MAX`` levels.
    """
    budget = settings.UNPICKLABLE_SEARCH_NODES_MAX
    current, path = value, root
    on_path = {id(value)}
    for _ in range(settings.UNPICKLABLE_SEARCH_DEPTH_MAX):
        failing: tuple[Any, str] | None = None
        for child, child_path in _children(current, path):
            if id(child) in on_path:
                continue
            budget -= 1
            if budget < 0:
                return current, path
            if not _pickles(child):
                failing = (child, child_path)
                break
        if failing is None:
            return current, path
        current, path = failing
        on_path.add(id(current))
    return current, path


def _children(obj: Any, path: str) -> Iterator[tuple[Any, str]]:
    if isinstance(obj, dict):
        items = list(obj.items())
        for key, item in items:
            yield item, f"{path}[{key!r}]"
        for key, _ in items:
            yield key, f"{path} (key {key!r})"
        return
    if isinstance(obj, (list, tuple, deque)):
        for index, item in enumerate(list(obj)):
            yield item, f"{path}[{index}]"
        return
    if isinstance(obj, (set, frozenset)):
        for index, item in enumerate(list(obj)):
            yield item, f"{path} (item {index})"
        return
    if isinstance(obj, types.FunctionType):
        code = obj.__code__
        for name, cell in zip(code.co_freevars, obj.__closure__ or ()):
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            yield contents, f"{path}.<closure {name}>"
        for name in code.co_names:
            if name in obj.__globals__:
                yield obj.__globals__[name], f"{path}.<global {name}>"
        return
    attributes = getattr(obj, "__dict__", None)
    if isinstance(attributes, dict):
        for name, item in list(attributes.items()):
            yield item, f"{path}.{name}"
    for cls in type(obj).__mro__:
        for name in cls.__dict__.get("__slots__", ()):
            if isinstance(name, str) and hasattr(obj, name) and name not in ("__dict__", "__weakref__"):
                yield getattr(obj, name), f"{path}.{name}"


def _discard(buffer: pickle.PickleBuffer) -> None:
    return None  # out of band: probing never copies large buffers


def _pickles(obj: Any) -> bool:
    # A probe context keeps refs met during the search from reporting an escape.
    previous = getattr(_local, "context", None)
    _local.context = _Context()
    try:
        cloudpickle.dumps(obj, protocol=settings.PICKLE_PROTOCOL, buffer_callback=_discard)
        return True
    except Exception:  # noqa: BLE001 - any failure means "this part does not pickle"
        return False
    finally:
        _local.context = previous
