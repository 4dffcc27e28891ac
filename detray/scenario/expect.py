"""Judging a finished run against the scenario's ``expect`` section.

Owns: ``Ending`` (how the program ended: normally, ``sys.exit(n)`` or an
exception, with the program's own frames of the traceback) and ``judge``
(one ``Check`` per expectation). Must not: run anything or print.

``exit`` matches when the program ended as asked: ``ok`` (it returned or
called ``sys.exit(0)``), an exit status (``sys.exit(n)``; an uncaught
exception is status 1, as ``python`` gives), or an exception class name,
matched against the class and its bases (``RayError`` matches every detray
error), by bare or qualified name.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from detray.scenario.model import Expectations

_DETRAY_DIR = str(Path(__file__).resolve().parents[1])
MEASURE_WORDS = {
    "tasks_finished": "task attempts finished",
    "task_retries": "task retries",
    "actor_restarts": "actor restarts",
    "objects_reconstructed": "objects reconstructed",
}


@dataclass(frozen=True, slots=True)
class Ending:
    """How the program ended."""

    status: int
    """What ``python script.py`` would exit with."""
    exception: BaseException | None = None
    program_traceback: str = ""
    """The traceback through the program's own frames (none of detray's), or ''."""

    @classmethod
    def returned(cls) -> Ending:
        return cls(status=0)

    @classmethod
    def exited(cls, stop: SystemExit) -> Ending:
        code = stop.code
        if code is None:
            return cls(status=0)
        if isinstance(code, int) and not isinstance(code, bool):
            return cls(status=code & 0xFF)
        return cls(status=1, exception=stop)

    @classmethod
    def raised(cls, error: BaseException) -> Ending:
        frames = [
            frame
            for frame in traceback.extract_tb(error.__traceback__)
            if not frame.filename.startswith(_DETRAY_DIR) and "runpy" not in Path(frame.filename).name
        ]
        text = "".join(traceback.format_list(frames)) if frames else ""
        return cls(status=1, exception=error, program_traceback=text)

    @property
    def exception_name(self) -> str | None:
        return None if self.exception is None else type(self.exception).__name__

    def describe(self) -> str:
        if self.exception is not None and not isinstance(self.exception, SystemExit):
            first = str(self.exception).splitlines()[0] if str(self.exception) else ""
            return f"raised {self.exception_name}" + (f": {first}" if first else "")
        if self.exception is not None:
            return f"exited: {self.exception}"
        return "ended normally" if self.status == 0 else f"exited with status {self.status}"

    def matches(self, wanted: str | int) -> bool:
        if wanted == "ok":
            return self.status == 0 and self.exception is None
        if isinstance(wanted, int):
            return self.status == wanted
        if self.exception is None:
            return False
        for cls in type(self.exception).__mro__:
            if wanted in (cls.__name__, f"{cls.__module__}.{cls.__qualname__}"):
                return True
        return False


@dataclass(frozen=True, slots=True)
class Check:
    """One expectation, judged."""

    what: str
    met: bool
    detail: str


def judge(
    expect: Expectations,
    *,
    ending: Ending,
    simulated: bool,
    makespan_s: float,
    measures: Mapping[str, int],
    found_output: Mapping[str, bool],
) -> list[Check]:
    """One ``Check`` per expectation (``exit`` always; the rest when the scenario asks)."""
    checks: list[Check] = []
    if not simulated:
        checks.append(
            Check("the program ran on the simulator", False, "it never called detray (nothing was simulated)")
        )
    wanted = expect.exit
    shown = "ok" if wanted == "ok" else (f"status {wanted}" if isinstance(wanted, int) else wanted)
    checks.append(Check(f"exit: {shown}", ending.matches(wanted), f"the program {ending.describe()}"))
    if expect.max_makespan_s is not None:
        checks.append(
            Check(
                f"max_makespan_s: {expect.max_makespan_s:g}",
                makespan_s <= expect.max_makespan_s,
                f"virtual makespan {makespan_s:.6g} s",
            )
        )
    for measure, (low, high) in sorted(expect.bounds.items()):
        value = measures.get(measure, 0)
        words = MEASURE_WORDS[measure]
        if low is not None:
            checks.append(Check(f"min_{measure}: {low}", value >= low, f"{value} {words}"))
        if high is not None:
            checks.append(Check(f"max_{measure}: {high}", value <= high, f"{value} {words}"))
    for text in expect.output_contains:
        found = found_output.get(text, False)
        checks.append(
            Check(
                f"output_contains: {text!r}", found, "printed" if found else "no line the program printed contains it"
            )
        )
    return checks
