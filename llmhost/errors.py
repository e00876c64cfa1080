"""Errors that tell the operator what is wrong, where, and what to do about it."""

from __future__ import annotations

from pyinfra.api.exceptions import PyinfraError


class ActionableError(Exception):
    """A problem whose message says what to do; the CLI prints it as one line, exit 2."""


class ConfigError(PyinfraError, ActionableError):
    """Bad inventory, host data, catalog input or host platform, found before any change.

    The message always names the host (when there is one), the offending key and
    the fix, so the operator never has to read a traceback to act on it. It is a
    ``PyinfraError`` so that pyinfra's CLI prints it as one line, not a traceback.
    """

    def __init__(self, problem: str, *, key: str | None, fix: str, host: str | None = None) -> None:
        self.problem = problem
        self.key = key
        self.fix = fix
        self.host = host
        where = f"host {host}: " if host else ""
        what = f"key `{key}`: " if key else ""
        super().__init__(f"{where}{what}{problem}. Fix: {fix}")
