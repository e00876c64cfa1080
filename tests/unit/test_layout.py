"""The layout's rules, checked: what runs on hosts, who may import whom, one source of truth.

- Every host-side module imports with the standard library alone, from the very
  archive hosts get (``python3 -I -S``: no site-packages, no current directory).
- The archive is the same bytes for the same sources, so a second run uploads nothing.
- No role restates a value of ``llmhost.onhost.layout``; no module but the entry
  points and the role-shared module imports more than one other role.
"""

from __future__ import annotations

import ast
import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from llmhost.onhost import app, layout
from llmhost.paths import REPO_ROOT
from roles._common import onhost

HOST_SIDE = sorted(
    ".".join(p.relative_to(REPO_ROOT).with_suffix("").parts)
    for p in (REPO_ROOT / "llmhost" / "onhost").rglob("*.py")
    if "__pycache__" not in p.parts and p.name != "__main__.py"
)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("app") / "onhost.pyz"
    path.write_bytes(onhost.build_app())
    return path


def run_isolated(*arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-S", *arguments], capture_output=True, text=True, timeout=60
    )


def test_the_host_side_package_has_the_modules_the_tools_need():
    assert "llmhost.onhost.layout" in HOST_SIDE and "llmhost.onhost.pull.cli" in HOST_SIDE
    assert set(app.TOOLS.values()) <= set(HOST_SIDE)


@pytest.mark.parametrize("module", HOST_SIDE)
def test_each_host_side_module_imports_from_the_archive_with_the_standard_library_only(
    shipped: Path, module: str
):
    check = (
        f"import sys; sys.path.insert(0, {str(shipped)!r}); import importlib; "
        f"m = importlib.import_module({module!r}); "
        f"assert m.__file__.startswith({str(shipped)!r}), m.__file__"
    )
    result = run_isolated("-c", check)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("tool", sorted(app.TOOLS))
def test_each_tool_runs_from_the_archive(shipped: Path, tool: str):
    result = run_isolated(str(shipped), tool, "--help")
    assert result.returncode == 0, result.stderr
    assert f"onhost.pyz {tool}" in result.stdout


def test_the_archive_refuses_an_unknown_tool_and_lists_the_known_ones(shipped: Path):
    result = run_isolated(str(shipped), "pul")
    assert result.returncode == 2
    assert "unknown tool 'pul'" in result.stderr and "pull,runtimectl,soak" in result.stderr


def test_the_archive_holds_exactly_the_host_side_package():
    names = zipfile.ZipFile(io.BytesIO(onhost.build_app())).namelist()
    expected = {"__main__.py", "llmhost/__init__.py"} | {
        p.relative_to(REPO_ROOT).as_posix() for p in onhost.source_files()
    }
    assert sorted(names) == names and set(names) == expected
    assert all(n == "__main__.py" or n.startswith("llmhost/") for n in names)
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_the_archive_is_the_same_bytes_whatever_the_files_times(tmp_path, monkeypatch):
    """Built from a copy whose files are newer: same bytes, so hosts see no change."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO_ROOT / "llmhost" / "onhost", copy / "llmhost" / "onhost")
    shutil.copy(REPO_ROOT / "llmhost" / "__init__.py", copy / "llmhost" / "__init__.py")
    for path in copy.rglob("*.py"):
        path.touch()
    original = onhost.build_app()
    monkeypatch.setattr(onhost, "REPO_ROOT", copy)
    monkeypatch.setattr(onhost, "PACKAGE_ROOT", copy / "llmhost")
    monkeypatch.setattr(onhost, "SOURCES", copy / "llmhost" / "onhost")
    onhost.build_app.cache_clear()
    try:
        assert onhost.build_app() == original
        (copy / "llmhost" / "onhost" / "layout.py").write_text("# changed\n", encoding="utf-8")
        onhost.build_app.cache_clear()
        assert onhost.build_app() != original, "a changed source must change the archive"
    finally:
        onhost.build_app.cache_clear()


# -- one source of truth, and who imports whom -----------------------------------------------

CONTROL_SIDE = sorted(
    p
    for tree in ("roles", "deploy", "llmhost")
    for p in (REPO_ROOT / tree).rglob("*.py")
    if "__pycache__" not in p.parts
    and "onhost" not in p.relative_to(REPO_ROOT).parts
    and p.relative_to(REPO_ROOT).parts[:2] != ("llmhost", "testing")
)
SHARED_PATHS = {
    name: value
    for name, value in vars(layout).items()
    if name.isupper() and isinstance(value, str) and value.startswith("/")
}
# SERVICE_USER is left out: "llmhost" is also the project's name (packages, prompts).
SHARED_NAMES = {
    name: value
    for name, value in vars(layout).items()
    if name.isupper()
    and isinstance(value, str)
    and not value.startswith("/")
    and name != "SERVICE_USER"
}


def string_constants(path: Path) -> list[tuple[int, str]]:
    """Every string literal in the code, docstrings left out (they may name paths to readers)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    documented = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, documented)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def restated(text: str) -> list[str]:
    """The layout constants whose value ``text`` spells out instead of importing."""
    found = [
        name
        for name, value in SHARED_PATHS.items()
        # the path itself, or under it; not a longer name (/var/lib/llmhost-testbed)
        if re.search(rf"(?<![\w./-]){re.escape(value)}(?![\w.-])", text)
    ]
    found += [n for n, v in SHARED_NAMES.items() if text == v or (len(v) > 8 and v in text)]
    return found


def test_the_restatement_check_catches_a_restated_value():
    assert restated("/var/lib/llmhost/state.json") == ["STATE_DIR", "STATE_FILE"]
    assert restated("cat /var/lib/llmhost/state.json") == ["STATE_DIR", "STATE_FILE"]
    assert restated("cat .llmhost-manifest.json") == ["MANIFEST_FILE"]
    assert restated("/var/lib/llmhost-testbed") == []


@pytest.mark.parametrize("path", CONTROL_SIDE, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_control_side_module_restates_a_value_the_host_side_shares(path: Path):
    problems = [
        f"line {line}: {text!r} restates layout.{', layout.'.join(names)}"
        for line, text in string_constants(path)
        if (names := restated(text))
    ]
    assert not problems, "import these from llmhost.onhost.layout:\n" + "\n".join(problems)


TEMPLATES = sorted((REPO_ROOT / "templates").rglob("*.j2"))


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_no_template_spells_out_a_shared_path(path: Path):
    """Roles pass shared paths to templates as variables, so one change moves them all."""
    text = path.read_text(encoding="utf-8")
    found = [name for name, value in SHARED_PATHS.items() if value in text]
    assert not found, f"pass these as template variables: layout.{', layout.'.join(found)}"


def imported_roles(path: Path) -> set[str]:
    """The roles a module imports (``roles.<role>...``), not counting its own or _common."""
    relative = path.relative_to(REPO_ROOT).parts
    own = relative[1] if relative[0] == "roles" else None
    roles = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = (
            [node.module or ""]
            if isinstance(node, ast.ImportFrom)
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        for name in names:
            parts = name.split(".")
            if parts[0] == "roles" and len(parts) > 1 and parts[1] not in (own, "_common"):
                roles.add(parts[1])
    return roles


def test_the_import_check_sees_imports_of_roles():
    assert imported_roles(REPO_ROOT / "deploy" / "site.py") >= {"base", "runtime", "gateway"}


@pytest.mark.parametrize(
    "path",
    [
        p
        for p in CONTROL_SIDE
        if p.parts[-2] != "deploy"  # the entry points: they call roles in order
        and "_common" not in p.parts  # the role-shared module
    ],
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_no_module_imports_more_than_one_other_role(path: Path):
    assert len(imported_roles(path)) <= 1, sorted(imported_roles(path))
