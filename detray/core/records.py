"""Fast builders of frozen records for the hot path (speed only).

Owns: ``builder``, which makes a function that builds an instance of a
frozen, slotted dataclass (an event, a command) from positional values, in
the field order it is given. The instance is the one ``Cls(**fields)`` makes
(same type, same field values; equality, ``repr``, pickling untouched), for
about 45% of the cost: the ``__init__`` that ``dataclasses`` generates for a
frozen class stores each field with ``object.__setattr__(self, "name",
value)``, which looks the name up in the type every time; the builder calls
each slot's own descriptor instead.

Must not: be used for a class with ``__post_init__`` or fields outside
``__init__`` (a builder sets exactly the fields, nothing else), nor with a
partial list of fields (``builder`` asserts every field is named once).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar, cast

_Record = TypeVar("_Record")

_new = object.__new__


def builder(cls: type[_Record], *names: str) -> Callable[..., _Record]:
    """``build(*values)``: an instance of ``cls`` with field ``names[i]`` set to ``values[i]``."""
    fields = [f.name for f in dataclasses.fields(cast(Any, cls))]
    assert sorted(names) == sorted(fields), f"{cls.__name__}: name every field once, not {names}"
    assert not hasattr(cls, "__post_init__"), f"{cls.__name__}: has a __post_init__"
    setters = [getattr(cls, name).__set__ for name in names]  # the slots' member descriptors
    # One closure per arity, each setter a local: a loop over the setters costs what it saves.
    if len(setters) == 2:
        s0, s1 = setters

        def build2(v0: Any, v1: Any) -> _Record:
            record = _new(cls)
            s0(record, v0)
            s1(record, v1)
            return record

        return build2
    if len(setters) == 3:
        s0, s1, s2 = setters

        def build3(v0: Any, v1: Any, v2: Any) -> _Record:
            record = _new(cls)
            s0(record, v0)
            s1(record, v1)
            s2(record, v2)
            return record

        return build3
    if len(setters) == 4:
        s0, s1, s2, s3 = setters

        def build4(v0: Any, v1: Any, v2: Any, v3: Any) -> _Record:
            record = _new(cls)
            s0(record, v0)
            s1(record, v1)
            s2(record, v2)
            s3(record, v3)
            return record

        return build4
    if len(setters) == 5:
        s0, s1, s2, s3, s4 = setters

        def build5(v0: Any, v1: Any, v2: Any, v3: Any, v4: Any) -> _Record:
            record = _new(cls)
            s0(record, v0)
            s1(record, v1)
            s2(record, v2)
            s3(record, v3)
            s4(record, v4)
            return record

        return build5
    if len(setters) == 6:
        s0, s1, s2, s3, s4, s5 = setters

        def build6(v0: Any, v1: Any, v2: Any, v3: Any, v4: Any, v5: Any) -> _Record:
            record = _new(cls)
            s0(record, v0)
            s1(record, v1)
            s2(record, v2)
            s3(record, v3)
            s4(record, v4)
            s5(record, v5)
            return record

        return build6
    if len(setters) == 7:
        s0, s1, s2, s3, s4, s5, s6 = setters

        def build7(v0: Any, v1: Any, v2: Any, v3: Any, v4: Any, v5: Any, v6: Any) -> _Record:
            record = _new(cls)
            s0(record, v0)
            s1(record, v1)
            s2(record, v2)
            s3(record, v3)
            s4(record, v4)
            s5(record, v5)
            s6(record, v6)
            return record

        return build7
    raise ValueError(f"{cls.__name__}: no builder for {len(setters)} fields")
