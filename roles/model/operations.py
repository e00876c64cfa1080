"""The model role's operation: materialise a model by digest, or do nothing."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import StringCommand, operation

from llmhost.onhost.layout import LLMHOST_CA, SERVICE_USER, is_materialised
from roles._common.onhost import onhost_command
from roles.model.defaults import AUTH_FILE, STORE, model_directory
from roles.model.facts import MaterialisedModel


@operation()
def pulled(
    model: str,
    digest: str,
    repository: str,
    registries: list[str],
    sizes: dict[str, int],
    jobs: int = 4,
    directory: str | None = None,
) -> Generator[StringCommand, None, None]:
    """Pull ``repository@digest`` into the store and materialise it, unless it already is.

    The puller runs as the service user, verifies every blob while streaming,
    resumes partial blobs, and renames the finished directory into place; it
    rebuilds a directory whose files were deleted or truncated.
    """
    directory = directory or model_directory(model, digest)
    found = host.get_fact(MaterialisedModel, directory=directory)
    if is_materialised(found["manifest"], found["files"], digest, sizes):
        host.noop(f"model {model} is materialised at {directory}")
        return
    yield StringCommand(pull_command(model, digest, repository, registries, jobs, directory))


def pull_command(
    model: str,
    digest: str,
    repository: str,
    registries: list[str],
    jobs: int = 4,
    directory: str | None = None,
) -> str:
    """The puller's command line on the host; the password stays in the auth file."""
    arguments = [part for r in registries for part in ("--registry", f"https://{r}")]
    pull = onhost_command(
        "pull",
        *arguments,
        "--repository", repository, "--digest", digest, "--store", STORE,
        "--dest", directory or model_directory(model, digest), "--auth-file", AUTH_FILE,
        # Only the llmhost CA may vouch for a registry: the password goes to no one else.
        "--ca-file", LLMHOST_CA,
        "--jobs", str(jobs), "--no-progress",
    )  # fmt: skip
    return f"runuser -u {SERVICE_USER} -- {pull}"
