"""detray/core stays pure: it imports only pure standard-library modules and itself.

The core is the one brain both drivers share, so it must never do I/O, read a
clock, draw randomness, start threads, or reach into detray outside core
(STYLE.md, convention 1). This test enforces that statically: it parses every
module under ``detray/core`` with ``ast`` (nothing is imported or executed, so
a half-written module is still checked), follows the import graph from each
module, and reports every violation as ``path:line: what``.

Policy: deny by default. An import passes only if it is ``detray.core`` (or
below) or a module on ``ALLOWED``; ``FORBIDDEN`` only gives a sharper reason
for the usual suspects. Names of builtins that do I/O or run dynamic code are
refused wherever they appear (a parameter or field that shadows one is refused
too: rename it, the checker cannot tell it from the builtin). ``id()`` is
refused (memory addresses differ per run) and so is ``hash()`` outside a
``__hash__`` method (string hashes differ per ``PYTHONHASHSEED``).

To allow another standard-library module, add it to ``ALLOWED`` only if it
does no I/O, reads no clock, draws no randomness and starts no thread, and
say why in the review.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CORE_DIR = REPO / "detray" / "core"
CORE_PACKAGE = "detray.core"

ALLOWED: frozenset[str] = frozenset(
    {
        "__future__",
        "abc",
        "bisect",
        "collections",
        "collections.abc",
        "dataclasses",
        "enum",
        "functools",
        "hashlib",
        "heapq",
        "itertools",
        "json",
        "math",
        "operator",
        "types",
        "typing",
    }
)
"""Pure standard-library modules (and their submodules) core may import."""

_IO = "does I/O"
_CLOCK = "reads a clock"
_RANDOM = "draws randomness"
_THREADS = "starts threads, processes or an event loop"
_DYNAMIC = "imports or runs code dynamically"
_THIRD_PARTY = "is a third-party package (core imports only the standard library)"

FORBIDDEN: dict[str, str] = {
    "time": _CLOCK,
    "datetime": _CLOCK,
    "zoneinfo": _CLOCK,
    "calendar": _CLOCK,
    "random": _RANDOM,
    "secrets": _RANDOM,
    "uuid": _RANDOM,
    "os": _IO,
    "sys": _IO,
    "io": _IO,
    "pathlib": _IO,
    "glob": _IO,
    "fnmatch": _IO,
    "tempfile": _IO,
    "shutil": _IO,
    "fileinput": _IO,
    "linecache": _IO,
    "logging": _IO,
    "warnings": _IO,
    "traceback": _IO,
    "inspect": _IO,
    "pickle": _IO,
    "marshal": _IO,
    "shelve": _IO,
    "dbm": _IO,
    "sqlite3": _IO,
    "csv": _IO,
    "mmap": _IO,
    "socket": _IO,
    "select": _IO,
    "selectors": _IO,
    "ssl": _IO,
    "urllib": _IO,
    "http": _IO,
    "ftplib": _IO,
    "smtplib": _IO,
    "email": _IO,
    "xmlrpc": _IO,
    "atexit": _IO,
    "builtins": _IO,
    "platform": _IO,
    "getpass": _IO,
    "ctypes": _IO,
    "gc": _DYNAMIC,
    "weakref": _DYNAMIC,
    "importlib": _DYNAMIC,
    "pkgutil": _DYNAMIC,
    "runpy": _DYNAMIC,
    "code": _DYNAMIC,
    "subprocess": _THREADS,
    "multiprocessing": _THREADS,
    "threading": _THREADS,
    "_thread": _THREADS,
    "asyncio": _THREADS,
    "concurrent": _THREADS,
    "signal": _THREADS,
    "sched": _CLOCK,
    "numpy": _THIRD_PARTY,
    "simpy": _THIRD_PARTY,
    "redis": _THIRD_PARTY,
    "fakeredis": _THIRD_PARTY,
    "cloudpickle": _THIRD_PARTY,
    "greenlet": _THIRD_PARTY,
    "hypothesis": _THIRD_PARTY,
    "pytest": _THIRD_PARTY,
    "typing_extensions": _THIRD_PARTY,
}
"""Modules core must not import, with the reason shown in the failure."""

FORBIDDEN_BUILTINS: dict[str, str] = {
    "open": _IO,
    "input": _IO,
    "print": _IO,
    "help": _IO,
    "exit": _IO,
    "quit": _IO,
    "breakpoint": _IO,
    "exec": _DYNAMIC,
    "eval": _DYNAMIC,
    "compile": _DYNAMIC,
    "__import__": _DYNAMIC,
    "__builtins__": _DYNAMIC,
}
"""Builtins that do I/O or run code dynamically: refused wherever the name appears."""

NONDETERMINISTIC_BUILTINS: dict[str, str] = {
    "id": "a memory address differs per run (order and key by ids you own)",
    "hash": "a str hash differs per PYTHONHASHSEED (use hashlib, or sort)",
}


@dataclass(frozen=True, order=True)
class Violation:
    path: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def module_name(package_dir: Path, package: str, path: Path) -> str:
    """The dotted name of ``path`` inside ``package`` (rooted at ``package_dir``)."""
    parts = list(path.relative_to(package_dir).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _resolve_relative(current: str, is_package: bool, level: int, module: str | None) -> str:
    """Absolute name of ``from <level dots><module> import ...`` inside ``current``."""
    base = current.split(".") if is_package else current.split(".")[:-1]
    if level - 1 > len(base) - 1:
        return "." * level + (module or "")  # escapes the top package: never allowed
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _top_level_names(tree: ast.Module) -> set[str]:
    """Names a module binds at top level (what ``from package import name`` may mean)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    return names


def _imports(tree: ast.AST, current: str, is_package: bool) -> Iterator[tuple[int, str, list[str]]]:
    """Every import in ``tree`` as (line, absolute module, names taken from it).

    ``import a.b`` gives ``(line, "a.b", [])``; ``from a import b, c`` gives
    ``(line, "a", ["b", "c"])`` (each name may be a submodule or an attribute).
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = _resolve_relative(current, is_package, node.level, node.module)
            else:
                base = node.module or ""
            yield node.lineno, base, [a.name for a in node.names if a.name != "*"]


def _import_verdict(name: str, package: str) -> str | None:
    """Why importing ``name`` from core is refused, or None when it is allowed."""
    if name == package or name.startswith(package + "."):
        return None
    top = name.split(".")[0]
    if top == package.split(".")[0] or name.startswith("."):
        return f"imports {name}: leaves {package} (core imports only itself and the standard library)"
    prefixes = [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)]
    for prefix in prefixes:
        if prefix in FORBIDDEN:
            return f"imports {name}: {FORBIDDEN[prefix]}"
    if any(prefix in ALLOWED for prefix in prefixes):
        return None
    return (
        f"imports {name}: not on the allowlist of pure standard-library modules "
        "(see ALLOWED in tests/core/test_purity.py)"
    )


def _builtin_violations(tree: ast.AST) -> Iterator[tuple[int, str]]:
    hash_ok_names: set[int] = set()  # hash() inside __hash__ feeds a hash, never an order
    shadowed: set[str] = set()  # a module that binds ``id`` or ``hash`` means its own
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "__hash__":
            hash_ok_names.update(
                id(inner)
                for inner in ast.walk(node)
                if isinstance(inner, ast.Name) and inner.id == "hash"
            )
        if isinstance(node, ast.arg):
            shadowed.add(node.arg)
        elif isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
            shadowed.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            shadowed.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            shadowed.update((a.asname or a.name).split(".")[0] for a in node.names)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_BUILTINS:
            if isinstance(node.ctx, ast.Load):
                yield node.lineno, f"uses builtin {node.id}: {FORBIDDEN_BUILTINS[node.id]}"
            else:
                yield node.lineno, f"binds {node.id!r}, shadowing a forbidden builtin: rename it"
        elif isinstance(node, ast.arg) and node.arg in FORBIDDEN_BUILTINS:
            yield node.lineno, f"parameter {node.arg!r} shadows a forbidden builtin: rename it"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and (
            node.name in FORBIDDEN_BUILTINS
        ):
            yield node.lineno, f"defines {node.name!r}, shadowing a forbidden builtin: rename it"
        elif (
            isinstance(node, ast.Name)
            and isinstance(node.ctx, ast.Load)
            and node.id in NONDETERMINISTIC_BUILTINS
            and node.id not in shadowed
            and id(node) not in hash_ok_names
        ):
            yield node.lineno, f"uses {node.id}(): {NONDETERMINISTIC_BUILTINS[node.id]}"
        elif isinstance(node, ast.Attribute) and node.attr in {"__import__", "__builtins__"}:
            yield node.lineno, f"uses .{node.attr}: {_DYNAMIC}"


def check_package(package_dir: Path, package: str = CORE_PACKAGE) -> tuple[list[Violation], list[str]]:
    """Walk the import graph of every module under ``package_dir``.

    Returns the violations (sorted) and the names of the modules visited, in
    visit order. Work-list walk: every file in the package is a root (nothing
    in core escapes the check), imports that stay inside the package are
    followed, and an import of a package module that has no file is reported.
    """
    files: dict[str, Path] = {}
    violations: list[Violation] = []
    top = package_dir.parents[len(package.split(".")) - 1]
    for path in sorted(package_dir.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        if path.suffix != ".py":
            violations.append(
                Violation(
                    path.relative_to(top).as_posix(),
                    0,
                    "core holds only Python source the purity check can read",
                )
            )
            continue
        files[module_name(package_dir, package, path)] = path
    packages = {package} | {
        module_name(package_dir, package, path / "__init__.py")
        for path in package_dir.rglob("*")
        if path.is_dir() and "__pycache__" not in path.parts
    }

    visited: list[str] = []
    todo = sorted(files)
    while todo:
        current = todo.pop(0)
        if current in visited:
            continue
        visited.append(current)
        path = files[current]
        rel = path.relative_to(top).as_posix()
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=rel)
        except SyntaxError as exc:
            violations.append(Violation(rel, exc.lineno or 0, f"does not parse: {exc.msg}"))
            continue
        for line, base, names in _imports(tree, current, path.name == "__init__.py"):
            verdict = _import_verdict(base, package)
            if verdict is not None:
                violations.append(Violation(rel, line, verdict))
                continue
            inside = base == package or base.startswith(package + ".")
            if not inside:
                continue  # an allowed stdlib module: its names are allowed too
            if base not in files and base not in packages:
                violations.append(Violation(rel, line, f"imports {base}: no such module in {package}"))
                continue
            if base in files:
                todo.append(base)
            for name in names:  # from detray.core[.x] import name
                candidate = f"{base}.{name}"
                if candidate in files:
                    todo.append(candidate)
                elif base in packages and name not in _top_level_names(_parse_quiet(files.get(base))):
                    violations.append(
                        Violation(rel, line, f"imports {candidate}: no such module in {package}")
                    )
        for line, what in _builtin_violations(tree):
            violations.append(Violation(rel, line, what))
    return sorted(set(violations)), visited


def _parse_quiet(path: Path | None) -> ast.Module:
    if path is None:  # a directory without __init__.py defines no names
        return ast.Module(body=[], type_ignores=[])
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])


# --- the check on the real core -----------------------------------------------------


def test_core_imports_only_pure_stdlib_and_itself() -> None:
    violations, visited = check_package(CORE_DIR)
    assert not violations, "detray/core must stay pure:\n" + "\n".join(map(str, violations))
    # The walk must have seen the shared vocabulary, or the check proved nothing.
    for expected in ("ids", "events", "commands", "errors", "resources", "specs"):
        assert f"{CORE_PACKAGE}.{expected}" in visited, (expected, visited)


def test_allowlist_and_denylist_do_not_overlap() -> None:
    overlap = {name for name in ALLOWED if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN}
    assert not overlap


# --- the checker catches what it must (so the check above can fail) ------------------

PLANTED: list[tuple[str, str]] = [
    ("import time", "reads a clock"),
    ("from datetime import datetime", "reads a clock"),
    ("import random", "draws randomness"),
    ("from uuid import uuid4", "draws randomness"),
    ("import os.path", "does I/O"),
    ("import sys", "does I/O"),
    ("from pathlib import Path", "does I/O"),
    ("import socket", "does I/O"),
    ("import logging", "does I/O"),
    ("import threading", "starts threads"),
    ("from concurrent.futures import ThreadPoolExecutor", "starts threads"),
    ("import asyncio", "starts threads"),
    ("import subprocess", "starts threads"),
    ("import importlib", "dynamically"),
    ("import numpy as np", "third-party"),
    ("import simpy", "third-party"),
    ("from fakeredis import FakeRedis", "third-party"),
    ("import cloudpickle", "third-party"),
    ("import xml.dom", "not on the allowlist"),
    ("import detray.api", "leaves detray.core"),
    ("from detray import serialization", "leaves detray.core"),
    ("from detray.sim import runner", "leaves detray.core"),
    ("from .. import exceptions", "leaves detray.core"),
    ("from ...outside import thing", "leaves detray.core"),
    ("from . import missing_module", "no such module"),
    ("from .missing_module import Thing", "imports detray.core.missing_module: no such module"),
    ("import detray.core.missing_module", "imports detray.core.missing_module: no such module"),
    ("x = open('f')", "uses builtin open"),
    ("print('hello')", "uses builtin print"),
    ("x = input()", "uses builtin input"),
    ("eval('1')", "uses builtin eval"),
    ("exec('x = 1')", "uses builtin exec"),
    ("breakpoint()", "uses builtin breakpoint"),
    ("m = __import__('os')", "uses builtin __import__"),
    ("reader = open", "uses builtin open"),
    ("def f(input: int) -> int:\n    return input", "shadows a forbidden builtin"),
    ("key = id(object())", "uses id()"),
    ("order = sorted(['a'], key=hash)", "uses hash()"),
    ("order = hash('a')", "uses hash()"),
    ("import builtins", "does I/O"),
    ("f = getattr(__builtins__, 'open')", "uses builtin __builtins__"),
]


def _plant(tmp_path: Path, sources: dict[str, str]) -> Path:
    core = tmp_path / "detray" / "core"
    core.mkdir(parents=True)
    (core / "__init__.py").write_text("")
    for name, source in sources.items():
        (core / name).parent.mkdir(parents=True, exist_ok=True)
        (core / name).write_text(source)
    return core


@pytest.mark.parametrize(("source", "reason"), PLANTED, ids=[s for s, _ in PLANTED])
def test_checker_names_file_and_line_of_a_planted_violation(
    tmp_path: Path, source: str, reason: str
) -> None:
    planted = f'"""A module."""\n\nfrom __future__ import annotations\n\n{source}\n'
    core = _plant(tmp_path, {"bad.py": planted})
    violations, _ = check_package(core)
    assert violations, f"the checker missed {source!r}"
    first = violations[0]
    assert first.path == "detray/core/bad.py"
    assert first.line == 5
    assert reason in first.what, (reason, [str(v) for v in violations])


def test_checker_passes_a_clean_module_that_uses_only_allowed_imports(tmp_path: Path) -> None:
    clean = (
        "from __future__ import annotations\n"
        "import enum\n"
        "import hashlib\n"
        "from collections import Counter, deque\n"
        "from collections.abc import Mapping\n"
        "from dataclasses import dataclass, field\n"
        "from typing import Any, NewType\n"
        "from . import ids\n"
        "from .ids import TaskID\n"
        "from detray.core import ids as ids2\n"
        "from detray.core.ids import NodeID\n"
        "import detray.core.ids\n"
        "class Key:\n"
        "    def __hash__(self) -> int:\n"
        "        return hash(('a', 1))\n"
        "def f(x: Any) -> str:\n"
        "    self_print = x.print  # an attribute named print is not the builtin\n"
        "    return str(self_print)\n"
    )
    core = _plant(tmp_path, {"ids.py": "TaskID = str\nNodeID = str\n", "good.py": clean})
    violations, visited = check_package(core)
    assert violations == []
    assert visited[0] == "detray.core"
    assert set(visited) == {"detray.core", "detray.core.ids", "detray.core.good"}


def test_checker_lets_a_module_name_its_own_id_and_hash(tmp_path: Path) -> None:
    source = (
        "def lookup(id: str, table: dict[str, int]) -> int:\n"
        "    return table[id]\n"
        "def digest(hash: bytes) -> bytes:\n"
        "    return hash\n"
    )
    core = _plant(tmp_path, {"own.py": source})
    violations, _ = check_package(core)
    assert violations == []


def test_checker_reports_a_violation_in_a_nested_core_package(tmp_path: Path) -> None:
    core = _plant(
        tmp_path,
        {
            "sub/__init__.py": "from . import leaf\n",
            "sub/leaf.py": "from .. import ids\nimport time\n",
            "ids.py": "",
        },
    )
    violations, visited = check_package(core)
    assert [str(v) for v in violations] == [
        "detray/core/sub/leaf.py:2: imports time: reads a clock"
    ]
    assert "detray.core.sub.leaf" in visited


def test_checker_refuses_non_python_files_in_core(tmp_path: Path) -> None:
    core = _plant(tmp_path, {"fast.so": "binary"})
    violations, _ = check_package(core)
    assert [v.path for v in violations] == ["detray/core/fast.so"]


def test_checker_reports_a_syntax_error_instead_of_passing(tmp_path: Path) -> None:
    core = _plant(tmp_path, {"broken.py": "def f(:\n"})
    violations, _ = check_package(core)
    assert len(violations) == 1 and "does not parse" in violations[0].what
