"""The documentation cannot drift from the code.

- Every state machine module in ``detray/core`` that exists exposes a valid
  ``TRANSITIONS`` table (one state enum, a label on every edge). A module not
  written yet is skipped, and only then: once the module exists the test runs.
- ``docs/architecture.md`` holds exactly the diagrams ``tools/gen_docs.py``
  generates from those tables (its ``--check`` mode, run as CI would).
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from detray.core import diagrams

REPO = Path(__file__).resolve().parents[1]
MACHINE_MODULES = ("tasks", "actors", "directory", "scheduler")


def _import_or_skip(short: str) -> object:
    name = f"detray.core.{short}"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name == name:
            pytest.skip(f"{name} is not written yet")
        raise


@pytest.mark.parametrize("short", MACHINE_MODULES)
def test_state_machine_module_exposes_a_valid_transitions_table(short: str) -> None:
    module = _import_or_skip(short)
    table = getattr(module, "TRANSITIONS", None)
    assert table is not None, f"detray.core.{short} must expose TRANSITIONS (the docs draw it)"
    assert isinstance(table, dict) and table, f"detray.core.{short}.TRANSITIONS must be a non-empty dict"
    state_enum = diagrams.state_enum(table)  # raises on mixed enums or bad keys
    for (source, target), label in table.items():
        assert isinstance(label, str) and label.strip(), (
            f"{state_enum.__name__}: {source.name} -> {target.name} needs a label saying what causes it"
        )
    initial = getattr(module, "INITIAL_STATE", None)
    if initial is not None:
        assert isinstance(initial, state_enum), (initial, state_enum)


def test_architecture_doc_diagrams_match_the_transition_tables() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "gen_docs.py"), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- the generator itself: it draws what a module exposes, and --check can fail ----------


def _load_gen_docs() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "tools" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Phase(enum.Enum):
    NEW = "new"
    DONE = "done"


@pytest.fixture
def fake_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    module = types.ModuleType("detray.core.zz_fake_machine")
    module.TRANSITIONS = {(_Phase.NEW, _Phase.DONE): "finished"}  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)
    yield module


def test_generator_draws_the_table_a_machine_module_exposes(fake_machine: types.ModuleType) -> None:
    gen_docs = _load_gen_docs()
    text, note = gen_docs.machine_sections("zz_fake_machine", "Fake")
    assert note is None
    assert "From `detray.core.zz_fake_machine.TRANSITIONS` (states: `_Phase`)." in text
    assert "    NEW --> DONE: finished\n" in text


def test_generator_refuses_a_machine_module_without_a_table(fake_machine: types.ModuleType) -> None:
    del fake_machine.TRANSITIONS
    gen_docs = _load_gen_docs()
    with pytest.raises(gen_docs.MissingTable):
        gen_docs.machine_sections("zz_fake_machine", "Fake")


def test_generator_notes_a_machine_module_not_written_yet() -> None:
    gen_docs = _load_gen_docs()
    text, note = gen_docs.machine_sections("zz_not_written_yet", "Missing")
    assert "_`detray.core.zz_not_written_yet` is not written yet._" in text
    assert note is not None


def test_check_mode_fails_on_a_hand_edited_section_and_rewrite_fixes_it(tmp_path: Path) -> None:
    gen_docs = _load_gen_docs()
    doc = tmp_path / "architecture.md"
    doc.write_text(f"# Title\n\n{gen_docs.BEGIN}\nedited by hand\n{gen_docs.END}\n\nafter\n")
    assert gen_docs.main(["--check", "--file", str(doc)]) == 1
    assert "edited by hand" in doc.read_text()  # check mode never writes
    assert gen_docs.main(["--file", str(doc)]) == 0
    assert gen_docs.main(["--check", "--file", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# Title\n\n") and text.endswith(f"{gen_docs.END}\n\nafter\n")
    assert "edited by hand" not in text


def test_check_mode_refuses_a_document_without_markers(tmp_path: Path) -> None:
    gen_docs = _load_gen_docs()
    doc = tmp_path / "architecture.md"
    doc.write_text("# no markers\n")
    assert gen_docs.main(["--check", "--file", str(doc)]) == 2
