"""How a pull fails: exit codes, the failures in the JSON result, and the exceptions.

Every error a caller sees is a ``PullError`` whose message says what is wrong and
what to do, and whose ``exit_code`` tells automation whether running again can
help (1: failed, maybe transient) or someone must fix something first (2).
``Transient`` and ``HTTPStatus`` never leave the package: they tell failover
whether to try the next registry or stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmhost.onhost.pull.request import PullResult

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CANNOT_RUN = 2


@dataclass
class Failure:
    """One thing that went wrong, in the JSON result, so automation can act on it."""

    stage: str  # "arguments", "manifest", "blob", "store" or "materialise"
    error: str
    registry: str | None = None
    digest: str | None = None
    title: str | None = None


class PullError(Exception):
    """A pull that did not complete. The message says what is wrong and what to do.

    ``result`` carries what was done before the failure (bytes downloaded,
    failures per blob) so the CLI can still print its JSON result.
    """

    exit_code = EXIT_FAILED
    stage = "blob"

    def __init__(
        self,
        message: str,
        *,
        registry: str | None = None,
        digest: str | None = None,
        title: str | None = None,
        stage: str | None = None,
        failures: list[Failure] | None = None,
    ) -> None:
        super().__init__(message)
        where = stage or self.stage
        self.failures = failures or [Failure(where, message, registry, digest, title)]
        self.result: PullResult | None = None


class CannotRun(PullError):
    """Nothing can be pulled as asked: fix the arguments, credentials or network first."""

    exit_code = EXIT_CANNOT_RUN
    stage = "arguments"


class IntegrityError(PullError):
    """The registry served bytes that are not what the digest promises; nothing is used."""

    stage = "blob"


class TransferError(PullError):
    """A transfer broke; whatever arrived is kept as a ``.partial`` for the next run."""

    stage = "blob"


class Transient(Exception):
    """This registry failed for now (network, timeout, 5xx): try the next one."""


class HTTPStatus(Exception):
    """A definite HTTP answer (401, 403, 404, ...) that retrying elsewhere won't change."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}{f' ({detail})' if detail else ''}")
        self.status = status
        self.detail = detail
