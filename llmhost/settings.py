"""Typed role settings read from pyinfra host data.

Each role declares its public keys once, as a frozen dataclass in its
``defaults.py`` whose fields carry a default and a one-line doc. This module
turns host data into an instance of that dataclass (checking types, so a typo'd
value fails with the key named) and renders the README's configuration
reference from the same declarations, so documentation cannot drift.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from llmhost.errors import ConfigError

T = TypeVar("T")

_MISSING = object()


def setting(default: Any, doc: str) -> Any:
    """A dataclass field with a default and the doc line shown in the reference."""
    if isinstance(default, list | dict):
        return dataclasses.field(
            default_factory=lambda: copy.deepcopy(default), metadata={"doc": doc}
        )
    return dataclasses.field(default=default, metadata={"doc": doc})


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list | tuple) and all(_matches(v, item) for v in value)
    if origin is dict:
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(
            _matches(k, key_tp) and _matches(v, value_tp) for k, v in value.items()
        )
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, tp)


def from_data(cls: type[T], data: Mapping[str, Any] | Any, host: str | None = None) -> T:
    """Build ``cls`` from host data: declared keys override defaults, types are checked.

    ``data`` is a mapping or pyinfra's ``HostData`` (anything with ``.get``).
    """
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = data.get(field.name, _MISSING)
        if value is _MISSING or (value is None and field.default is None):
            continue
        if not _matches(value, hints[field.name]):
            raise ConfigError(
                f"expected {_type_name(hints[field.name])}, got {type(value).__name__} {value!r}",
                key=field.name,
                fix=f"set `{field.name}` to a {_type_name(hints[field.name])} "
                f"({field.metadata.get('doc', '')})",
                host=host,
            )
        values[field.name] = list(value) if isinstance(value, tuple) else value
    return cls(**values)


def _default_of(field: dataclasses.Field[Any]) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def reference_rows(cls: type[Any]) -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every declared setting of ``cls``."""
    hints = typing.get_type_hints(cls)
    rows = []
    for field in dataclasses.fields(cls):
        default = _default_of(field)
        shown = "unset" if default is None else f"`{default!r}`"
        rows.append((field.name, _type_name(hints[field.name]), shown, field.metadata["doc"]))
    return rows


def reference_markdown(cls: type[Any]) -> str:
    """A markdown table of ``cls``'s settings, as embedded in the README."""
    lines = ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
    for key, type_name, default, doc in reference_rows(cls):
        cells = (f"`{key}`", f"`{type_name}`", default, doc)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)
