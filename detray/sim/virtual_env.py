"""What simulated user code sees of the process: virtual time, labelled output
and its own global random state.

Owns: the patches on the ``time`` module and on ``sys.stdout``/``sys.stderr``,
the swapping of the global ``random`` and ``numpy.random`` generator states,
and the pointer to the running unit (a `Sandbox`). ``usercode.py`` switches
units in and out through `enter` and `leave`; this module knows nothing of
greenlets, SimPy or scheduling.

Must not: change anything outside user code. When no unit runs in the calling
thread, every patched function behaves as the original: the progress bar, pytest
and Hypothesis deadlines keep real time and real output, and locks made there
are real ones.

Virtualized, inside user code only, while `install` is in effect:

- ``time.sleep(s)`` calls ``Sandbox.sleep(s)``, which blocks the unit until
  the loop has advanced virtual time by ``s`` and resumes it.
- ``time.monotonic()``, ``time.perf_counter()`` read the unit's clock (virtual
  seconds since the start of the simulation); ``time.time()`` reads
  ``EPOCH_S`` plus that clock (2023-11-14T22:13:20Z, fixed so that runs
  compare equal). The ``_ns`` variants return the same instants, rounded to
  integer nanoseconds.
- The global ``random`` generator and numpy's legacy global ``RandomState``
  (``np.random.rand``, ``np.random.seed``...) hold the unit's own state: it is
  loaded at every switch into the unit and saved at every switch out, and the
  state from outside is restored, so interleavings never change a unit's
  numbers. A unit's initial state derives from its stream key; units can share
  one `RandomSlot` (an actor's methods see one process).
- ``print`` and other writes to ``sys.stdout``/``sys.stderr`` are split into
  lines, each prefixed with ``"(<label>) "`` and handed to the unit's sink
  (default `console_sink`: the real stream). A partial line is held until its
  newline or the end of the unit.
- ``os._exit(code)`` calls ``Sandbox.exit_process(code)``: ``usercode.UserCode``
  makes it the death of the unit's simulated process (the loop kills a task's
  or actor's worker; the driver's ends the real process). Outside units, and in
  user threads, it is the real one.
- ``threading.Lock``/``RLock`` (and what the standard library builds on them:
  ``Condition``, ``Event``, ``Semaphore``, ``Barrier``, ``queue.Queue``,
  ``concurrent.futures.Future``) made inside a unit are cooperative, and the
  clocks ``threading`` and ``queue`` captured at import read the unit's: see
  ``coop``, whose `install` this module's `install` calls.

Not virtualized (documented; ``--check-determinism`` catches their effects):
``datetime.now()``/``date.today()``, ``time.localtime()``/``gmtime()``/
``ctime()`` without an argument, ``time.process_time()``/``thread_time()``,
``os.urandom``, ``uuid.uuid4``, ``secrets``, ``random.SystemRandom``,
``np.random.default_rng()`` or ``np.random.seed()`` without a seed, other
``random.Random``/``Generator`` instances (deterministic only if seeded),
names bound before `install` (``from time import time``), user threads (they
see real time and real output), ``logging`` handlers that captured the real
stream before `install`, ``sys.stdout.buffer``, and asyncio's loop clock:
it is kept real on purpose (a frozen virtual clock would make every
``asyncio.sleep`` in user code wait forever), so an ``await asyncio.sleep(s)``
in user code takes ``s`` real seconds and no virtual time.

How the random states are swapped: copying the generators' raw state memory
(about 5 KB) costs a fraction of a microsecond, against about 25 us for
``random.getstate`` and 100 us for numpy's ``get_state`` on the reference
machine. The memory layout is found at the first `install` by probing through
the public API (set a known state, find it, write another through memory,
read it back through the API); if any check fails, the public API is used
instead (slower, same numbers). A unit's initial state is written straight
into the generators at its first switch in (no copy is kept until it blocks),
and the state of a unit that finished with a slot of its own is dropped, not
saved: nothing can read it again.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import operator
import os
import random
import struct
import sys
import time
from collections.abc import Callable
from threading import get_ident
from typing import Any, TextIO

import numpy as np

EPOCH_S = 1_700_000_000.0
EPOCH_NS = 1_700_000_000 * 1_000_000_000

Sink = Callable[["Sandbox", str, str], None]
"""Receives ``(unit, stream, text)``: the unit that wrote, ``"stdout"`` or
``"stderr"``, and one prefixed line ending in ``"\\n"``. Called as soon as a
line is complete, while the unit runs (so the clock is the unit's; what the
sink itself prints goes straight to the real stream), and for a held
partial line from the loop when the unit finishes."""

_MT_WORDS = 624  # both MT19937 implementations: 624 32-bit words and an index
_INT32 = struct.Struct("=i")
_MT_BYTES = 4 * _MT_WORDS + _INT32.size
_GAUSS_BYTES = 16  # numpy's legacy (has_gauss, cached gaussian) pair, with padding


class Sandbox:
    """What one unit of user code sees. ``usercode.UserCode`` extends it.

    The runner sets ``clock``, ``sink`` and ``random_slot`` before the unit's
    first switch in. ``thread_key``, left unset by default, names the simulated
    thread of units that share one (an async actor's steps share its loop's):
    ``coop``'s re-entrant locks are owned per thread.
    """

    __slots__ = ("label", "clock", "sink", "random_slot", "_partial", "thread_key")
    thread_key: object

    def __init__(self, label: str) -> None:
        self.label = label
        self.clock: Callable[[], float] = _zero_clock
        self.sink: Sink = console_sink
        self.random_slot: RandomSlot | None = None
        self._partial: dict[str, str] | None = None

    def sleep(self, seconds: float) -> None:
        """Block this unit for ``seconds`` of virtual time (``time.sleep``)."""
        raise NotImplementedError

    def exit_process(self, code: int) -> None:
        """``os._exit(code)`` called in this unit: the default ends the real process
        (``usercode.UserCode`` makes it its simulated worker's death instead)."""
        real_exit(code)

    def write_output(self, stream: str, text: str) -> None:
        """Emit each complete line of ``text`` to the sink, prefixed; hold the rest."""
        partial = self._partial
        if partial is None:
            partial = self._partial = {}
        *lines, rest = (partial.get(stream, "") + text).split("\n")
        partial[stream] = rest
        if lines:
            global _emitting
            _emitting = True  # a sink that prints must reach the real stream, not loop here
            prefix = self.prefix()
            try:
                for line in lines:
                    self.sink(self, stream, f"{prefix}{line}\n")
            finally:
                _emitting = False

    def prefix(self) -> str:
        """What starts each of its output lines: ``"(label) "`` (built when output appears)."""
        return f"({self.label}) " if self.label else ""

    def flush_output(self) -> None:
        """Emit held partial lines (the unit ended), each completed by a newline."""
        partial = self._partial
        if not partial:
            return
        for stream, rest in partial.items():
            if rest:
                self.sink(self, stream, f"{self.prefix()}{rest}\n")
        partial.clear()


def _zero_clock() -> float:
    return 0.0


def console_sink(unit: Sandbox, stream: str, text: str) -> None:
    """The default sink: the real ``stdout``/``stderr`` as found at `install`."""
    proxy = _proxies.get(stream)
    target = proxy.target if proxy is not None else getattr(sys, stream)
    target.write(text)


# ---------------------------------------------------------------------------
# The running unit. Units run one at a time, in the thread that runs the loop.

_current: Sandbox | None = None
_current_thread = 0
_emitting = False  # a sink is running: output passes straight through
_depth = 0  # units entered and not yet left: >1 only for a runner nested in a unit
_outside_states: list[Any] = []  # per depth: the random state saved at `enter`


def in_simulation_thread() -> bool:
    """Whether the caller runs on the OS thread that runs (or last ran) the units."""
    return _current_thread != 0 and get_ident() == _current_thread


def real_stream(stream: str) -> TextIO:
    """The real ``stdout``/``stderr`` (what the patch stands in for while installed)."""
    proxy = _proxies.get(stream)
    return proxy.target if proxy is not None else getattr(sys, stream)


def current() -> Sandbox | None:
    """The running unit, or None outside user code (or in another thread)."""
    box = _current
    if box is None or get_ident() != _current_thread:
        return None
    return box


def enter(box: Sandbox) -> Sandbox | None:
    """Make ``box`` the running unit; return the one it interrupts (for `leave`)."""
    global _current, _current_thread, _depth
    swap = _swap
    if swap is not None:
        slot = box.random_slot
        assert slot is not None, "the runner gives every unit a random slot"
        if _depth == len(_outside_states):
            _outside_states.append(swap.blank())
        swap.save(_outside_states[_depth])
        if slot.state is None:
            # Seeded straight into the generators; the slot keeps no copy until `leave` saves one.
            swap.load_initial(slot.seed)
        else:
            swap.load(slot.state)
    _depth += 1
    outer = _current
    _current = box
    _current_thread = get_ident()
    return outer


def leave(box: Sandbox, outer: Sandbox | None, finished: bool = False) -> None:
    """Undo `enter`: save the unit's random state, restore the outside one.

    ``finished``: the unit never runs again and no other unit shares its slot;
    its state is then dropped (`release`) instead of saved, as nothing can read it.
    """
    global _current, _depth
    _depth -= 1
    swap = _swap
    if swap is not None:
        slot = box.random_slot
        assert slot is not None
        if finished:
            release(slot)
        else:
            state = slot.state
            if state is None:
                state = slot.state = swap.spare()
            swap.save(state)
        swap.load(_outside_states[_depth])
    _current = outer


# ---------------------------------------------------------------------------
# Random states.


class RandomSlot:
    """The state of the global ``random`` and ``numpy.random`` one simulated
    process sees. Seeded lazily, at the first switch in, from ``seed`` (an
    integer from ``streams.stream_seed``); share one slot between units that
    should see one process (an actor's methods)."""

    __slots__ = ("seed", "state")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.state: Any = None


def _view(address: int, size: int) -> memoryview:
    return memoryview((ctypes.c_char * size).from_address(address)).cast("B")


_MASK_128 = (1 << 128) - 1
_LITTLE_ENDIAN = sys.byteorder == "little"
_expander = np.random.PCG64(0)  # re-keyed for every slot (`_key_expander`); only `_initial_raw` draws from it


def _expander_key_memory() -> memoryview | None:
    """The 32 bytes of ``_expander``'s (state, inc) pair, as little-endian 128-bit
    integers, checked both ways through the public API; None if not found so."""
    if sys.implementation.name != "cpython" or not _LITTLE_ENDIAN:
        return None
    try:
        # numpy's pcg64_state struct starts with a pointer to the (state, inc) pair.
        pair = ctypes.c_void_p.from_address(_expander.ctypes.state_address).value
        if not pair:
            return None
        state, inc = (1 << 127) + 12345, (5 << 64) + 7
        _expander.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc}, "has_uint32": 0, "uinteger": 0}
        if ctypes.string_at(pair, 32) != state.to_bytes(16, "little") + inc.to_bytes(16, "little"):
            return None
        view = _view(pair, 32)
        view[:] = (inc + 2).to_bytes(16, "little") + (state + 2).to_bytes(16, "little")
        got = _expander.state["state"]
        if (got["state"], got["inc"]) != (inc + 2, state + 2):
            return None
    except (AttributeError, TypeError, ValueError):
        return None
    return view


def _key_expander(seed: int) -> None:
    """Key ``_expander`` for ``seed``: PCG64 with a 256-bit digest of the seed (the
    high 128 bits the state, the low 128 the stream, made odd)."""
    data = seed.to_bytes(seed.bit_length() // 8 + 1, "big", signed=True)
    digest = hashlib.blake2b(data, digest_size=32).digest()
    memory = _expander_key
    if memory is not None:
        # What the state setter below stores, written directly (0.4 us against 1.8).
        backwards = digest[::-1]  # the key as one little-endian 256-bit integer
        memory[:16] = backwards[16:]
        memory[16:] = backwards[:16]
        memory[16] |= 1
        return
    key = int.from_bytes(digest, "big")
    _expander.state = {
        "bit_generator": "PCG64",
        "state": {"state": key >> 128, "inc": (key & _MASK_128) | 1},
        "has_uint32": 0,
        "uinteger": 0,
    }


def _initial_words(seed: int) -> np.ndarray:
    """2 x 624 random 32-bit words for two MT19937 states, a function of ``seed`` only.

    A uniformly random MT19937 state is what its own seeding approximates;
    the words come from PCG64 keyed with a 256-bit digest of the seed (128
    bits of state, 128 of stream), which costs a few microseconds against
    15-25 us for ``random.seed`` plus ``np.random.seed``. The digest makes
    small or similar seeds as good as any.
    """
    raw = _initial_raw(seed)
    if _LITTLE_ENDIAN:
        return raw.view(np.uint32)
    # Low word first whatever the host, so every platform draws the same numbers.
    return raw.astype("<u8").view("<u4").astype(np.uint32)


def _initial_raw(seed: int) -> np.ndarray:
    """`_initial_words` as 624 64-bit words (each one low word, then one high)."""
    _key_expander(seed)
    return _expander.random_raw(_MT_WORDS)  # 624 x 64 bits = 2 x 624 x 32 bits


def _initial_bytes(seed: int) -> memoryview:
    """`_initial_words` as the bytes of native 32-bit words (no uint32 view on little-endian hosts)."""
    if _LITTLE_ENDIAN:
        return _initial_raw(seed).data.cast("B")
    return _initial_words(seed).data.cast("B")


_SPARE_STATES_MAX = 256
_PY_AT, _NP_AT, _GAUSS_AT = 0, _MT_BYTES, 2 * _MT_BYTES
_RAW_BYTES = 2 * _MT_BYTES + _GAUSS_BYTES
_WORDS_BYTES = 4 * _MT_WORDS
_ALL_USED = _INT32.pack(_MT_WORDS)
_NO_GAUSS = bytes(_GAUSS_BYTES)


class _RawState:
    """Both generators' raw state: Python's (index, words), numpy's (words, pos)
    and numpy's (has_gauss, gauss), in one buffer; plus Python's ``gauss_next``."""

    __slots__ = ("buffer", "py", "np", "gauss", "gauss_next")

    def __init__(self) -> None:
        self.buffer = bytearray(_RAW_BYTES)
        view = memoryview(self.buffer)
        self.py = view[_PY_AT:_NP_AT]
        self.np = view[_NP_AT:_GAUSS_AT]
        self.gauss = view[_GAUSS_AT:]
        self.gauss_next: float | None = None


class _RawSwap:
    """Swaps states by copying the generators' memory (layouts found by `_probe`)."""

    def __init__(self, py_live: memoryview, np_live: memoryview, gauss_live: memoryview) -> None:
        # The memory belongs to these objects: holding them keeps it valid.
        legacy = np.random.mtrand._rand
        self._owners = (random._inst, legacy, legacy._bit_generator)
        self.py_live = py_live
        self.np_live = np_live
        self.gauss_live = gauss_live
        self._spares: list[_RawState] = []  # released states, reused: no 5 KB malloc per unit

    def blank(self) -> _RawState:
        return _RawState()

    def spare(self) -> _RawState:
        """A state to save into (its content is overwritten by `save`)."""
        return self._spares.pop() if self._spares else _RawState()

    def load_initial(self, seed: int) -> None:
        """Put the initial state of ``seed`` in the generators (what `load` of the
        state `_ApiSwap.initial` builds would), writing the words in place."""
        words = _initial_bytes(seed)
        py_live = self.py_live
        np_live = self.np_live
        # Index and pos say "all words used": the first draw regenerates the words.
        py_live[:4] = _ALL_USED
        py_live[4:] = words[:_WORDS_BYTES]
        np_live[:_WORDS_BYTES] = words[_WORDS_BYTES:]
        np_live[_WORDS_BYTES:] = _ALL_USED
        self.gauss_live[:] = _NO_GAUSS
        random._inst.gauss_next = None  # type: ignore[attr-defined]

    def release(self, state: Any) -> None:
        if isinstance(state, _RawState) and len(self._spares) < _SPARE_STATES_MAX:
            self._spares.append(state)

    def save(self, state: _RawState) -> None:
        state.py[:] = self.py_live
        state.np[:] = self.np_live
        state.gauss[:] = self.gauss_live
        state.gauss_next = random._inst.gauss_next  # type: ignore[attr-defined]

    def load(self, state: _RawState) -> None:
        self.py_live[:] = state.py
        self.np_live[:] = state.np
        self.gauss_live[:] = state.gauss
        random._inst.gauss_next = state.gauss_next  # type: ignore[attr-defined]


class _ApiState:
    __slots__ = ("py", "np")

    def __init__(self, py: Any, np_: Any) -> None:
        self.py = py
        self.np = np_


class _ApiSwap:
    """Swaps states through ``getstate``/``setstate``: the slow, portable fallback."""

    def blank(self) -> _ApiState:
        return _ApiState(None, None)

    def spare(self) -> _ApiState:
        return _ApiState(None, None)

    def initial(self, seed: int) -> _ApiState:
        words = _initial_words(seed)
        py = (3, (*(int(w) for w in words[:_MT_WORDS]), _MT_WORDS), None)
        return _ApiState(py, ("MT19937", words[_MT_WORDS:].copy(), _MT_WORDS, 0, 0.0))

    def load_initial(self, seed: int) -> None:
        self.load(self.initial(seed))

    def release(self, state: Any) -> None:
        pass

    def save(self, state: _ApiState) -> None:
        state.py = random.getstate()
        state.np = np.random.get_state()

    def load(self, state: _ApiState) -> None:
        random.setstate(state.py)
        np.random.set_state(state.np)


def _find_once(haystack: bytes, needle: bytes) -> int:
    at = haystack.find(needle)
    if at < 0 or haystack.find(needle, at + 1) >= 0:
        return -1
    return at


def _probe_python(words: np.ndarray, other: np.ndarray) -> memoryview | None:
    """The memory of ``random``'s (index, state) in the global instance, checked."""
    inst = random._inst
    size = type(inst).__basicsize__
    inst.setstate((3, (*(int(w) for w in words), 17), None))
    at = _find_once(ctypes.string_at(id(inst), size), _INT32.pack(17) + words.tobytes())
    if at < 0 or at + _MT_BYTES > size:
        return None
    view = _view(id(inst) + at, _MT_BYTES)
    view[:] = _INT32.pack(_MT_WORDS) + other.tobytes()
    if inst.getstate()[1] != (*(int(w) for w in other), _MT_WORDS):
        return None
    return view


def _probe_numpy(words: np.ndarray, other: np.ndarray) -> tuple[memoryview, memoryview] | None:
    """The memory of numpy's global MT19937 state and of its cached gaussian, checked."""
    rs = np.random.mtrand._rand
    address = rs._bit_generator.ctypes.state_address  # public: the mt19937_state struct
    rs.set_state(("MT19937", words, 17, 0, 0.0))
    if ctypes.string_at(address, _MT_BYTES) != words.tobytes() + _INT32.pack(17):
        return None
    np_view = _view(address, _MT_BYTES)
    np_view[:] = other.tobytes() + _INT32.pack(_MT_WORDS)
    state: Any = rs.get_state()
    if not (np.array_equal(state[1], other) and state[2] == _MT_WORDS):
        return None

    # The (has_gauss, gauss) pair lives inside the RandomState object: find the
    # cached value, then the flag as the only byte that differs with has_gauss.
    size = type(rs).__basicsize__
    marker = 1.2345678901234567e-300
    rs.set_state(("MT19937", other, _MT_WORDS, 1, marker))
    with_flag = ctypes.string_at(id(rs), size)
    rs.set_state(("MT19937", other, _MT_WORDS, 0, marker))
    without_flag = ctypes.string_at(id(rs), size)
    gauss_at = _find_once(with_flag, struct.pack("=d", marker))
    flag_at = [i for i in range(size) if with_flag[i] != without_flag[i]]
    start = gauss_at + 8 - _GAUSS_BYTES  # the region: the flag (an int), padding, the value
    if gauss_at < 0 or flag_at != [start]:
        return None
    gauss_view = _view(id(rs) + start, _GAUSS_BYTES)
    gauss_view[:] = _INT32.pack(1) + bytes(4) + struct.pack("=d", 0.5)
    state = rs.get_state()
    if state[3:] != (1, 0.5):
        return None
    return np_view, gauss_view


def _probe() -> _RawSwap | None:
    if sys.implementation.name != "cpython":  # elsewhere id() is not an address
        return None
    words, other = np.split(_initial_words(12345), 2)
    saved_py = random.getstate()
    saved_np = np.random.get_state()
    try:
        py_view = _probe_python(words, other)
        np_views = _probe_numpy(words, other)
    except (AttributeError, TypeError, ValueError):
        return None
    finally:
        random.setstate(saved_py)
        np.random.set_state(saved_np)
    if py_view is None or np_views is None:
        return None
    return _RawSwap(py_view, *np_views)


_expander_key = _expander_key_memory()  # None: keyed through the public state setter

_swap_found: _RawSwap | _ApiSwap | None = None
_swap: _RawSwap | _ApiSwap | None = None  # set while installed


def swap_kind() -> str:
    """``"memory"`` or ``"api"``: how random states are swapped (probes on first call)."""
    return "memory" if isinstance(_find_swap(), _RawSwap) else "api"


def _find_swap() -> _RawSwap | _ApiSwap:
    global _swap_found
    if _swap_found is None:
        _swap_found = _probe() or _ApiSwap()
    return _swap_found


def use_api_swap_for_tests(enabled: bool) -> None:
    """Force the portable fallback (tests compare both ways). Not while installed."""
    global _swap_found
    if _install_count:
        raise RuntimeError("cannot change the random swap while installed")
    _swap_found = _ApiSwap() if enabled else None


def release(slot: RandomSlot) -> None:
    """Drop ``slot``'s state (its units are finished and nothing shares it); its
    memory serves the next unit. A later switch in would start it afresh."""
    if _swap is not None and slot.state is not None:
        _swap.release(slot.state)
    slot.state = None


# ---------------------------------------------------------------------------
# time.


def _virtual_time() -> float:
    box = _current
    if box is None or get_ident() != _current_thread:
        return _real["time"]()  # type: ignore[no-any-return]
    return EPOCH_S + box.clock()


def _virtual_time_ns() -> int:
    box = _current
    if box is None or get_ident() != _current_thread:
        return _real["time_ns"]()  # type: ignore[no-any-return]
    return EPOCH_NS + round(box.clock() * 1e9)


def _virtual_monotonic() -> float:
    box = _current
    if box is None or get_ident() != _current_thread:
        return _real["monotonic"]()  # type: ignore[no-any-return]
    return box.clock()


virtual_monotonic = _virtual_monotonic
"""``time.monotonic`` as user code sees it (also what ``coop`` gives ``threading`` and ``queue``)."""


def _virtual_monotonic_ns() -> int:
    box = _current
    if box is None or get_ident() != _current_thread:
        return _real["monotonic_ns"]()  # type: ignore[no-any-return]
    return round(box.clock() * 1e9)


def _virtual_perf_counter() -> float:
    box = _current
    if box is None or get_ident() != _current_thread:
        return _real["perf_counter"]()  # type: ignore[no-any-return]
    return box.clock()


def _virtual_perf_counter_ns() -> int:
    box = _current
    if box is None or get_ident() != _current_thread:
        return _real["perf_counter_ns"]()  # type: ignore[no-any-return]
    return round(box.clock() * 1e9)


def _virtual_sleep(seconds: Any) -> None:
    box = _current
    if box is None or get_ident() != _current_thread:
        _real["sleep"](seconds)
        return
    if isinstance(seconds, (str, bytes)):
        raise TypeError(f"'{type(seconds).__name__}' object cannot be interpreted as an integer")
    seconds_f = float(seconds)
    if math.isnan(seconds_f):
        raise ValueError("Invalid value NaN (not a number)")
    if seconds_f < 0:
        raise ValueError("sleep length must be non-negative")
    if math.isinf(seconds_f):
        raise OverflowError("sleep length is too large")
    box.sleep(seconds_f)


def _virtual_exit(code: Any) -> None:
    code = operator.index(code)  # what os._exit accepts: an integer (TypeError otherwise)
    box = _current
    if box is None or get_ident() != _current_thread:
        real_exit(code)
    else:
        box.exit_process(code)


def real_exit(code: int) -> None:
    _real_os_exit(code)


_real_os_exit: Callable[[int], Any] = os._exit


_TIME_PATCHES: dict[str, Callable[..., Any]] = {
    "time": _virtual_time,
    "time_ns": _virtual_time_ns,
    "monotonic": _virtual_monotonic,
    "monotonic_ns": _virtual_monotonic_ns,
    "perf_counter": _virtual_perf_counter,
    "perf_counter_ns": _virtual_perf_counter_ns,
    "sleep": _virtual_sleep,
}
_real: dict[str, Callable[..., Any]] = {name: getattr(time, name) for name in _TIME_PATCHES}


class _AsyncioClock:
    """What ``asyncio.base_events`` sees as its ``time`` module while installed:
    the real clock (its only uses are ``monotonic`` and ``get_clock_info``)."""

    def __getattr__(self, name: str) -> Any:
        return _real.get(name) or getattr(time, name)


def _asyncio_base_events() -> Any:
    import asyncio.base_events  # imported here: most simulations never need asyncio

    return asyncio.base_events


# ---------------------------------------------------------------------------
# Output.


class _OutputProxy:
    """Stands in for ``sys.stdout``/``sys.stderr`` while installed."""

    def __init__(self, target: TextIO, stream: str) -> None:
        self.target = target
        self.stream = stream

    def write(self, text: str) -> int:
        box = _current
        if box is None or _emitting or get_ident() != _current_thread:
            return self.target.write(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        box.write_output(self.stream, text)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if current() is None:
            self.target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


_proxies: dict[str, _OutputProxy] = {}


# ---------------------------------------------------------------------------
# install / uninstall.

_install_count = 0


def install() -> None:
    """Put the virtualization in place (counted: nested installs need as many uninstalls).

    Outside user code nothing changes behaviour. Must be first called outside
    user code.
    """
    global _install_count, _swap
    if _install_count == 0:
        if _depth:
            raise RuntimeError("virtual_env.install: first install must happen outside user code")
        for name, fake in _TIME_PATCHES.items():
            _real[name] = getattr(time, name)
            setattr(time, name, fake)
        _asyncio_base_events().time = _AsyncioClock()
        global _real_os_exit
        _real_os_exit = os._exit
        setattr(os, "_exit", _virtual_exit)  # noqa: B010 -- typeshed's _exit never returns; ours may not
        from detray.sim import coop  # here: coop reads the running unit from this module

        coop.install()
        for stream in ("stdout", "stderr"):
            proxy = _OutputProxy(getattr(sys, stream), stream)
            _proxies[stream] = proxy
            setattr(sys, stream, proxy)
        _swap = _find_swap()
        _outside_states.clear()  # they belong to the previous swap, which may differ
    _install_count += 1


def uninstall() -> None:
    """Undo one `install`; the last one restores everything. Extra calls do nothing.

    A patch that someone else has since replaced (pytest's capture swapping
    ``sys.stdout``) is left to its new owner.
    """
    global _install_count, _swap
    if _install_count == 0:
        return
    if _install_count == 1:
        if _depth:
            raise RuntimeError("virtual_env.uninstall: the last one must happen outside user code")
        for name, fake in _TIME_PATCHES.items():
            if getattr(time, name) is fake:
                setattr(time, name, _real[name])
        if os._exit is _virtual_exit:
            setattr(os, "_exit", _real_os_exit)  # noqa: B010
        from detray.sim import coop

        coop.uninstall()
        base_events = _asyncio_base_events()
        if isinstance(base_events.time, _AsyncioClock):
            base_events.time = time
        for stream, proxy in _proxies.items():
            if getattr(sys, stream) is proxy:
                setattr(sys, stream, proxy.target)
        _proxies.clear()
        _swap = None
    _install_count -= 1


def installed() -> bool:
    """Whether `install` is in effect."""
    return _install_count > 0
