"""The control machine's own files (TOML pins and catalogs, JSON secrets), read strictly.

A file that cannot be read, is not UTF-8 or does not parse fails as a ConfigError naming
the file and the line, never a traceback (and never quoting the file: secrets live in
some); every table's keys are checked, so a misspelt key never falls back to a default.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError


def read_utf8(path: Path, key: str, *, fix: str = "save the file as UTF-8") -> str | None:
    """The file's text; None when there is no such file. Unreadable or not UTF-8: refused."""
    try:
        if path.is_dir():
            raise ConfigError(f"{path} is a directory, not a file", key=key, fix="move it away")
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise ConfigError(
            f"{path} cannot be read ({error.strerror or error})",
            key=key,
            fix="run as the user who owns it, or fix its owner and mode",
        ) from error
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError(
            f"{path}:{line}: is not UTF-8 (at column {column})", key=key, fix=fix
        ) from error


def read_toml(path: Path, key: str) -> dict[str, Any]:
    """The TOML document in ``path``; a file that cannot be read, is not UTF-8 or is not
    TOML fails as a ConfigError naming the file and the line (never a traceback)."""
    text = read_utf8(path, key)
    if text is None:
        raise ConfigError(f"{path} does not exist", key=key, fix=f"restore {path.name}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # Python 3.11's TOMLDecodeError has no lineno: its message ends "(at line L, column C)".
        message = str(error)
        found = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        if found:
            where, reason = f"{found[1]}:{found[2]}", message[: found.start()]
        else:
            where, reason = str(text.count("\n") + 1), message.replace(" (at end of document)", "")
        raise ConfigError(
            f"{path}:{where}: is not valid TOML ({reason})",
            key=key,
            fix="correct the syntax at that line",
        ) from error
    except RecursionError as error:  # tomllib recurses into nested arrays and inline tables
        raise ConfigError(
            f"{path} is not valid TOML (nested too deeply)",
            key=key,
            fix="flatten the nested arrays or tables",
        ) from error


def did_you_mean(name: str, known: Collection[str]) -> str:
    """`` (did you mean `x`?)`` for the known name closest to ``name``, else nothing."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


def unknown_key(name: str, known: Collection[str], table: str) -> tuple[str, str] | None:
    """(problem, fix) when ``name`` is not a key ``table`` takes, else None.

    A misspelt key must never fall back to a default unnoticed, so every table is checked.
    """
    if name in known:
        return None
    close = difflib.get_close_matches(name, list(known), n=1)
    if close:
        return f"is not a key of {table} (did you mean `{close[0]}`?)", f"rename it to `{close[0]}`"
    return f"is not a key of {table}", f"remove it; {table} takes {', '.join(known)}"


def first_unknown_key(
    table: Mapping[str, Any], known: Collection[str], label: str
) -> tuple[str, str, str] | None:
    """The first key of ``table`` (in file order) not in ``known``: (key, problem, fix)."""
    for name in table:
        found = unknown_key(name, known, label)
        if found:
            return name, *found
    return None
