"""State diagrams are drawn from a transitions table, and only from it."""

from __future__ import annotations

import enum

import pytest

from detray.core import diagrams


class Light(enum.Enum):
    OFF = "off"
    ON = "on"
    BROKEN = "broken"
    SPARE = "spare"


TABLE: dict[tuple[Light, Light], str] = {
    (Light.OFF, Light.ON): "switch flipped",
    (Light.ON, Light.OFF): "switch flipped",
    (Light.ON, Light.BROKEN): "bulb burnt\nout; replaced never",
}


def test_diagram_draws_every_transition_in_table_order_with_its_label() -> None:
    text = diagrams.mermaid_state_diagram(TABLE)
    assert text == (
        "stateDiagram-v2\n"
        "    direction LR\n"
        "    SPARE\n"
        "    [*] --> OFF\n"
        "    OFF --> ON: switch flipped\n"
        "    ON --> OFF: switch flipped\n"
        "    ON --> BROKEN: bulb burnt out, replaced never\n"
        "    BROKEN --> [*]\n"
    )


def test_explicit_initial_state_replaces_the_first_enum_member() -> None:
    text = diagrams.mermaid_state_diagram(TABLE, initial=Light.ON)
    assert "    [*] --> ON\n" in text
    assert "[*] --> OFF" not in text


def test_terminal_states_are_those_entered_but_never_left() -> None:
    assert diagrams.terminal_states(TABLE) == [Light.BROKEN]


def test_a_state_missing_from_the_table_is_shown_and_named() -> None:
    assert diagrams.unused_states(TABLE) == [Light.SPARE]
    section = diagrams.diagram_section("Lights", TABLE, source="tests.TABLE")
    assert "States with no transition in the table: `SPARE`." in section


def test_section_has_heading_source_mermaid_block_and_text_table() -> None:
    section = diagrams.diagram_section("Lights", TABLE, source="tests.TABLE")
    assert section.startswith("### Lights\n\nFrom `tests.TABLE` (states: `Light`).\n")
    assert "```mermaid\nstateDiagram-v2\n" in section
    assert "| `ON` | `BROKEN` | bulb burnt out, replaced never |" in section


def test_output_is_identical_across_calls() -> None:
    assert diagrams.diagram_section("L", TABLE, source="s") == diagrams.diagram_section(
        "L", dict(TABLE), source="s"
    )


class Other(enum.Enum):
    X = 1


@pytest.mark.parametrize(
    "table",
    [
        {},
        {(Light.OFF, Other.X): "mixed enums"},
        {(Light.OFF, "ON"): "not a member"},
        {(Light.OFF, Light.ON): "   "},
    ],
    ids=["empty", "mixed-enums", "not-a-member", "blank-label"],
)
def test_malformed_tables_are_refused(table: dict[object, str]) -> None:
    with pytest.raises(ValueError):
        diagrams.mermaid_state_diagram(table)  # type: ignore[arg-type]


def test_initial_state_of_another_enum_is_refused() -> None:
    with pytest.raises(ValueError):
        diagrams.mermaid_state_diagram(TABLE, initial=Other.X)
