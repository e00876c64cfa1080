"""How the CLI reports a problem: one red line and an exit code, never a traceback.

Exit codes follow the validators' convention: 1 when the job ran and failed,
2 when it could not run (bad input, missing tools). Library code raises its own
typed errors (``ConfigError``, ``TestbedError``: both ``ActionableError``); they
become ``LlmhostError`` in one place, `LlmhostGroup.invoke`, the way pyinfra's
CLI wraps every ``PyinfraError`` around its command, so no command repeats the
conversion and none can forget it.
"""

from __future__ import annotations

from typing import Any

import click

from llmhost.errors import ActionableError
from llmhost.messages import error

# Registry and transfer failures (oras-py and requests raise their own types, and oras-py
# may even sys.exit): reported with the registry named, never as a traceback.
TRANSFER_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, SystemExit, ValueError)


class LlmhostError(click.ClickException):
    """Bad input (inventory, arguments, missing tools): `error: ...`, exit code 2."""

    exit_code = 2

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.fields = fields  # host, key, fix: separate fields under --log-format json

    def show(self, file: object = None) -> None:
        error(self.message, **self.fields)


class LlmhostFailure(LlmhostError):
    """The job ran and failed: exit code 1."""

    exit_code = 1


class LlmhostGroup(click.Group):
    """The top-level group: every command and subgroup runs inside its `invoke`."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ActionableError as problem:
            fields = {name: getattr(problem, name, None) for name in ("host", "key", "fix")}
            raise LlmhostError(str(problem), **fields) from problem


def transfer_failure(where: str, error: BaseException) -> LlmhostFailure:
    """A registry transfer that failed, with the checks that usually fix it."""
    return LlmhostFailure(
        f"{where}: {error or type(error).__name__}. Fix: check that the registry is up and "
        "reachable from here, and that --secrets-dir holds its CA and credentials"
    )
