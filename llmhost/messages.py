"""What llmhost tells its user on stderr: lines for a person, or JSON lines for a pipeline.

``llmhost --log-format json COMMAND`` (or ``LLMHOST_LOG_FORMAT=json``) makes every message
one JSON object per line, ``{"time", "level", "message"}`` and what it is about (``host``,
``key``, ``fix``, ``batch``...), so a CI job or a log shipper reads a deploy without
parsing English. pyinfra's own output during a deploy is relayed the same way, one
object per line with ``"source": "pyinfra"``. stdout is never touched: it keeps each
command's result (JSON where the command has ``--json``).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import click

FORMATS = ("text", "json")
COLOURS = {"warning": "yellow", "error": "red"}

_format = "text"


def use_format(name: str) -> None:
    if name not in FORMATS:
        raise ValueError(f"log format {name!r} is not one of {', '.join(FORMATS)}")
    global _format
    _format = name


def json_lines() -> bool:
    return _format == "json"


def record(message: str, level: str, fields: dict[str, Any]) -> str:
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "message": message,
        **{k: v for k, v in fields.items() if v is not None},
    }
    return json.dumps(entry, ensure_ascii=False, default=str)


def say(message: str, *, level: str = "info", **fields: Any) -> None:
    """One message: ``warning: ...``/``error: ...`` in colour for a person, else JSON."""
    if json_lines():
        click.echo(record(message, level, fields), err=True)
        return
    prefix = f"{level}: " if level in COLOURS else ""
    click.secho(f"{prefix}{message}", err=True, fg=COLOURS.get(level))


def warn(message: str, **fields: Any) -> None:
    say(message, level="warning", **fields)


def error(message: str, **fields: Any) -> None:
    say(message, level="error", **fields)


def relay(lines: Iterable[str], source: str) -> str:
    """Pass a child's stderr on as it comes (as JSON lines when asked); returns all of it."""
    seen = []
    for line in lines:
        seen.append(line)
        if json_lines():
            text = line.rstrip("\n")
            if text.strip():
                click.echo(record(click.unstyle(text), "info", {"source": source}), err=True)
        else:
            sys.stderr.write(line)
            sys.stderr.flush()
    return "".join(seen)


def run_relayed(argv: list[str], source: str, **options: Any) -> tuple[int, str, str]:
    """Run ``argv``, its stdout kept, its stderr relayed line by line; (code, out, err)."""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **options
    ) as child:
        assert child.stdout is not None and child.stderr is not None
        out: list[str] = []
        reader = _drain(child.stdout, out)
        err = relay(child.stderr, source)
        reader.join()
        return child.wait(), "".join(out), err


def _drain(stream: Any, into: list[str]) -> threading.Thread:
    thread = threading.Thread(target=lambda: into.append(stream.read()), daemon=True)
    thread.start()
    return thread
