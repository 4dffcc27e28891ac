"""Independent, reproducible random streams for the simulator.

Owns: turning a key ``(run seed, purpose, *stable ids)`` into a seed, and that
seed into a generator. Every random choice the simulator makes (a duration, a
fault, a tie-break, the per-unit state of user code's global ``random``) draws
from the stream of its own key, so adding one fault or one task never shifts
any other stream.

Must not: use ``hash()`` (salted by ``PYTHONHASHSEED``), the global ``random``,
a clock, or anything else that differs between processes. The key is encoded
unambiguously (each part tagged with its type and prefixed with its length)
and digested with BLAKE2b; the digest is the seed. Changing the encoding or
``_PERSON`` changes every simulation's numbers: a golden test pins them.
"""

from __future__ import annotations

import functools
import hashlib
import random
import struct
from collections.abc import Callable

import numpy as np

StreamId = str | int

SEED_BYTES = 32
_PERSON = b"detray.stream.v1"  # BLAKE2b personalisation, at most 16 bytes
_LENGTH_BYTES = 4
_pack_length = struct.Struct(">I").pack  # _LENGTH_BYTES, big-endian


def _encode_part(part: object) -> bytes:
    # Subclasses (IntEnum, StrEnum) encode as their base value; bool would
    # collide with 1 and is refused.
    # The common cases first: exactly what the general branches below do.
    if type(part) is str:
        text = part.encode("utf-8", "surrogatepass")
        return _pack_length(len(text) + 1) + b"s" + text
    if type(part) is int:
        body = b"i%d" % part
        return _pack_length(len(body)) + body
    kind = type(part)
    if isinstance(part, str):
        body = b"s" + part.encode("utf-8", "surrogatepass")
    elif isinstance(part, int) and kind is not bool:
        body = b"i%d" % part
    else:
        raise TypeError(
            f"stream key parts must be str or int, got {kind.__name__}: {part!r}"
        )
    return _pack_length(len(body)) + body


@functools.lru_cache(maxsize=64)
def _prefix(seed: int, purpose: str) -> bytes:
    # Cached: the runner asks for many streams of one (seed, purpose).
    return _encode_part(seed) + _encode_part(purpose)


def _checked_prefix(seed: int, purpose: str) -> bytes:
    if type(purpose) is not str:
        raise TypeError(f"purpose must be a str, got {type(purpose).__name__}")
    if type(seed) is not int:
        _encode_part(seed)  # raises TypeError for anything but an int
        seed = int(seed)
    return _prefix(seed, purpose)


def stream_seed(seed: int, purpose: str, *ids: StreamId) -> int:
    """The 256-bit seed of stream ``(seed, purpose, *ids)``.

    ``purpose`` names what the numbers are for (``"duration"``, ``"fault"``);
    ``ids`` are stable identifiers (a function name, a call index, a task
    id), never anything derived from ``id()`` or ``hash()``.
    """
    data = _checked_prefix(seed, purpose) + b"".join([_encode_part(part) for part in ids])
    digest = hashlib.blake2b(data, digest_size=SEED_BYTES, person=_PERSON).digest()
    return int.from_bytes(digest, "big")


def seeder(seed: int, purpose: str) -> Callable[..., int]:
    """``stream_seed(seed, purpose, *ids)`` as a function of ``ids`` alone, for
    many streams of one purpose: the key's prefix is digested once, and each
    call continues a copy of that digest."""
    copy = hashlib.blake2b(_checked_prefix(seed, purpose), digest_size=SEED_BYTES, person=_PERSON).copy

    def seed_of(*ids: StreamId) -> int:
        digest = copy()
        for part in ids:  # one update per part: no list, no join
            digest.update(_encode_part(part))
        return int.from_bytes(digest.digest(), "big")

    return seed_of


def stream(seed: int, purpose: str, *ids: StreamId) -> random.Random:
    """A ``random.Random`` for stream ``(seed, purpose, *ids)``.

    >>> a, b = stream(0, "duration", "f", 17), stream(0, "duration", "f", 17)
    >>> a.random() == b.random()
    True
    """
    return random.Random(stream_seed(seed, purpose, *ids))


def np_stream(seed: int, purpose: str, *ids: StreamId) -> np.random.Generator:
    """A numpy ``Generator`` (PCG64) for stream ``(seed, purpose, *ids)``."""
    return np.random.Generator(np.random.PCG64(stream_seed(seed, purpose, *ids)))
