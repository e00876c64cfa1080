"""The model role's operation: materialise a model by digest, or do nothing."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import StringCommand, operation

from roles.base.defaults import LLMHOST_CA, SERVICE_USER
from roles.model.defaults import AUTH_FILE, PULLER, STORE, model_directory
from roles.model.facts import MaterialisedDict, MaterialisedModel


def is_materialised(found: MaterialisedDict, digest: str, sizes: dict[str, int]) -> bool:
    """Built from this manifest, and every file still there at its size."""
    return found["manifest"] == digest and found["files"] == sizes


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
    if is_materialised(host.get_fact(MaterialisedModel, directory=directory), digest, sizes):
        host.noop(f"model {model} is materialised at {directory}")
        return
    yield StringCommand(*pull_command(model, digest, repository, registries, jobs, directory))


def pull_command(
    model: str,
    digest: str,
    repository: str,
    registries: list[str],
    jobs: int = 4,
    directory: str | None = None,
) -> list[str]:
    """The puller's command line on the host; the password stays in the auth file."""
    arguments = ["runuser", "-u", SERVICE_USER, "--", "python3", PULLER]
    for registry in registries:
        arguments += ["--registry", f"https://{registry}"]
    return [
        *arguments,
        "--repository", repository, "--digest", digest, "--store", STORE,
        "--dest", directory or model_directory(model, digest), "--auth-file", AUTH_FILE,
        # Only the llmhost CA may vouch for a registry: the password goes to no one else.
        "--ca-file", LLMHOST_CA,
        "--jobs", str(jobs), "--no-progress",
    ]  # fmt: skip
