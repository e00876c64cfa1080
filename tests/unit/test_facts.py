"""Every fact class of the project, tested from command output, as pyinfra tests its own facts.

Each case is ``tests/unit/facts/<module>.<FactClass>/<case>.json``:

- ``arg``: the fact's keyword arguments (absent: none);
- ``command``: the exact string ``fact.command(**arg)`` must return;
- ``requires_command``: required exactly when the class names one;
- ``output``: stdout lines as pyinfra hands them over (each line without its newline);
- ``fact``: what the role gets, as JSON. A set-valued fact is compared as a sorted list;
- ``comment``: where the output came from (captured from a real run, or written).

"What the role gets" follows ``pyinfra.api.facts._get_fact``: pyinfra calls ``process`` only
when stdout has lines, and when a ``requires_command`` is missing on the host its wrapper
prints a marker instead; in both cases the role gets ``default()``. An empty-output case
therefore checks ``default()``, which for a fact that defines none is ``None``.

A fact class under roles/ or llmhost/ without a case directory fails the suite.
"""

from __future__ import annotations

import ast
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from pyinfra.api import FactBase, StringCommand
from pyinfra.api.facts import _MISSING_COMMAND_MARKER, ShortFactBase

REPO_ROOT = Path(__file__).resolve().parents[2]
CASES_DIR = Path(__file__).resolve().parent / "facts"
SOURCE_PACKAGES = ("roles", "llmhost")
BASES = {"FactBase", "ShortFactBase"}

# Cases that show a fact getting real output wrong; the fact code is not changed here.
XFAIL: dict[str, str] = {}  # case id -> why the fact's code is known to get it wrong


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def base_name(node: ast.expr) -> str | None:
    """``FactBase``, ``api.FactBase``, ``FactBase[int]`` -> "FactBase"."""
    if isinstance(node, ast.Subscript):
        node = node.value
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def modules_defining_facts() -> set[str]:
    """Modules under roles/ and llmhost/ with a class whose bases lead to a FactBase.

    Read with ast so only those modules are imported; subclasses of the project's own fact
    classes count too (a fixpoint over class names).
    """
    classes: list[tuple[str, str, set[str]]] = []
    for package in SOURCE_PACKAGES:
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.ClassDef):
                    bases = {name for b in node.bases if (name := base_name(b))}
                    classes.append((module_name(path), node.name, bases))
    fact_names = set(BASES)
    while True:
        found = {(module, name) for module, name, bases in classes if bases & fact_names}
        names = fact_names | {name for _, name in found}
        if names == fact_names:
            return {module for module, _ in found}
        fact_names = names


def defined_fact_classes() -> set[str]:
    """Dotted paths of the FactBase / ShortFactBase subclasses the project defines."""
    found = set()
    for module in sorted(modules_defining_facts()):
        for name, value in vars(importlib.import_module(module)).items():
            if (
                isinstance(value, type)
                and issubclass(value, (FactBase, ShortFactBase))
                and value not in (FactBase, ShortFactBase)
                and value.__module__ == module
            ):
                found.add(f"{module}.{name}")
    return found


def case_dirs() -> set[str]:
    return {path.name for path in CASES_DIR.iterdir() if path.is_dir()}


def load_class(dotted: str) -> type:
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def cases() -> list[Any]:
    params = []
    for directory in sorted(case_dirs()):
        for path in sorted((CASES_DIR / directory).glob("*.json")):
            case_id = f"{directory}/{path.stem}"
            marks = []
            if case_id in XFAIL:
                marks.append(pytest.mark.xfail(reason=XFAIL[case_id], strict=True))
            params.append(pytest.param(directory, path, id=case_id, marks=marks))
    return params


def as_json(data: Any) -> Any:
    """The fact as the case file holds it: sets as sorted lists, then through JSON."""
    if isinstance(data, set | frozenset):
        data = sorted(data)
    return json.loads(json.dumps(data))


def command_string(command: str | StringCommand) -> str:
    return command if isinstance(command, str) else command.get_raw_value()


def test_every_fact_class_has_cases():
    defined = defined_fact_classes()
    assert defined, "no fact classes found: is the discovery broken?"
    missing = sorted(defined - case_dirs())
    assert not missing, f"fact classes without cases under {CASES_DIR}: {missing}"
    stale = sorted(case_dirs() - defined)
    assert not stale, f"case directories naming no fact class of the project: {stale}"


def test_every_case_directory_has_cases():
    empty = sorted(d for d in case_dirs() if not any((CASES_DIR / d).glob("*.json")))
    assert not empty, f"case directories without a case: {empty}"


def test_xfail_names_existing_cases():
    existing = {f"{p.parent.name}/{p.stem}" for p in CASES_DIR.glob("*/*.json")}
    assert set(XFAIL) <= existing, sorted(set(XFAIL) - existing)


@pytest.mark.parametrize(("dotted", "path"), cases())
def test_fact(dotted: str, path: Path):
    case = json.loads(path.read_text())
    assert set(case) <= {"comment", "arg", "command", "requires_command", "output", "fact"}
    cls = load_class(dotted)
    short = None
    if issubclass(cls, ShortFactBase):
        short, cls = cls(), cls.fact
    fact = cls()
    arg = case.get("arg", {})

    assert command_string(fact.command(**arg)) == case["command"]

    requires = fact.requires_command(**arg)
    if requires:
        assert case.get("requires_command") == requires, "requires_command: missing or wrong"
    else:
        assert "requires_command" not in case, f"{dotted} requires no command"

    output = case["output"]
    if not output or (requires and output == [_MISSING_COMMAND_MARKER]):
        data = fact.default()
    else:
        data = fact.process(output)
    if short:
        data = short.process_data(data)
    assert as_json(data) == case["fact"]
