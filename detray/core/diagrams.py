"""State diagrams drawn from the transition tables themselves.

Owns: turning a state machine's ``TRANSITIONS`` table
(``dict[tuple[State, State], str]``, the value a short label of what causes
the move) into Mermaid ``stateDiagram-v2`` text and a Markdown table, so the
documentation cannot say something the code does not do.

Must not: import the machines, read or write files, or know which machines
exist; ``tools/gen_docs.py`` does the I/O and picks the tables. Pure string
formatting only.

Theory of operation: edges come out in the table's own order (a dict keeps
insertion order, so the output is the same in every run). The initial state
is passed in, or else the first member of the state ``Enum`` (the convention:
declare states in lifecycle order). A state with no outgoing transition is
terminal and gets an arrow to ``[*]``; a member that appears in no
transition is still declared, so a gap in the table shows in the diagram.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from typing import TypeVar

State = TypeVar("State", bound=enum.Enum)

_INDENT = "    "


def state_enum(transitions: Mapping[tuple[State, State], str]) -> type[State]:
    """The one ``Enum`` class every state in ``transitions`` belongs to.

    Raises ``ValueError`` for an empty table, a key that is not a pair of
    enum members, or states of more than one enum.
    """
    if not transitions:
        raise ValueError("a transitions table must not be empty")
    classes: dict[type[State], None] = {}
    for key in transitions:
        if not (isinstance(key, tuple) and len(key) == 2):
            raise ValueError(f"a transitions key must be (from_state, to_state), got {key!r}")
        for state in key:
            if not isinstance(state, enum.Enum):
                raise ValueError(f"states must be Enum members, got {state!r}")
            classes[type(state)] = None
    if len(classes) != 1:
        names = ", ".join(cls.__name__ for cls in classes)
        raise ValueError(f"one table must use one state enum, got {names}")
    return next(iter(classes))


def terminal_states(transitions: Mapping[tuple[State, State], str]) -> list[State]:
    """States that appear in the table and have no way out, in enum order."""
    cls = state_enum(transitions)
    sources = {source for source, _ in transitions}
    targets = {target for _, target in transitions}
    return [state for state in cls if state in targets and state not in sources]


def unused_states(transitions: Mapping[tuple[State, State], str]) -> list[State]:
    """Members of the state enum that appear in no transition, in enum order."""
    cls = state_enum(transitions)
    used = {state for key in transitions for state in key}
    return [state for state in cls if state not in used]


def _label(text: str) -> str:
    """One-line label Mermaid accepts (no newline, no statement separator)."""
    label = " ".join(str(text).split()).replace(";", ",")
    if not label:
        raise ValueError("every transition needs a label saying what causes it")
    return label


def mermaid_state_diagram(
    transitions: Mapping[tuple[State, State], str],
    *,
    initial: enum.Enum | None = None,
    direction: str = "LR",
) -> str:
    """Mermaid ``stateDiagram-v2`` text for ``transitions`` (ends with a newline)."""
    cls = state_enum(transitions)
    start = initial if initial is not None else next(iter(cls))
    if not isinstance(start, cls):
        raise ValueError(f"initial state {start!r} is not a {cls.__name__}")
    if direction not in {"LR", "RL", "TB", "BT"}:
        raise ValueError(f"direction must be LR, RL, TB or BT, got {direction!r}")
    lines = ["stateDiagram-v2", f"{_INDENT}direction {direction}"]
    lines.extend(f"{_INDENT}{state.name}" for state in unused_states(transitions))
    lines.append(f"{_INDENT}[*] --> {start.name}")
    for (source, target), label in transitions.items():
        lines.append(f"{_INDENT}{source.name} --> {target.name}: {_label(label)}")
    lines.extend(f"{_INDENT}{state.name} --> [*]" for state in terminal_states(transitions))
    return "\n".join(lines) + "\n"


def markdown_table(transitions: Mapping[tuple[State, State], str]) -> str:
    """The same table as Markdown rows: from | to | cause (ends with a newline)."""
    state_enum(transitions)
    rows = ["| from | to | cause |", "| --- | --- | --- |"]
    for (source, target), label in transitions.items():
        cause = _label(label).replace("|", "\\|")
        rows.append(f"| `{source.name}` | `{target.name}` | {cause} |")
    return "\n".join(rows) + "\n"


def diagram_section(
    title: str,
    transitions: Mapping[tuple[State, State], str],
    *,
    source: str,
    initial: enum.Enum | None = None,
    level: int = 3,
) -> str:
    """A Markdown section: heading, Mermaid diagram, then the table in text.

    ``source`` names where the table lives (for example
    ``detray.core.tasks.TRANSITIONS``) so a reader can find it.
    """
    cls = state_enum(transitions)
    parts = [
        f"{'#' * level} {title}",
        "",
        f"From `{source}` (states: `{cls.__name__}`).",
        "",
        "```mermaid",
        mermaid_state_diagram(transitions, initial=initial).rstrip("\n"),
        "```",
        "",
        markdown_table(transitions).rstrip("\n"),
    ]
    unused = unused_states(transitions)
    if unused:
        names = ", ".join(f"`{state.name}`" for state in unused)
        parts += ["", f"States with no transition in the table: {names}."]
    return "\n".join(parts) + "\n"


def join_sections(sections: Iterable[str]) -> str:
    """Sections separated by one blank line (ends with a newline)."""
    return "\n".join(section.rstrip("\n") + "\n" for section in sections)
