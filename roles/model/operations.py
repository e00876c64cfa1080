"""The model role's operation: materialise a model by digest, or do nothing."""

from __future__ import annotations

from collections.abc import Generator

from pyinfra import host
from pyinfra.api import StringCommand, operation

from roles.base.defaults import SERVICE_USER
from roles.model.defaults import AUTH_FILE, PULLER, STORE, model_directory
from roles.model.facts import MaterialisedManifest


@operation()
def pulled(
    model: str, digest: str, repository: str, registries: list[str], jobs: int = 4
) -> Generator[StringCommand, None, None]:
    """Pull ``repository@digest`` into the store and materialise it, unless it already is.

    The puller runs as the service user, verifies every blob while streaming,
    resumes partial blobs, and renames the finished directory into place.
    """
    directory = model_directory(model, digest)
    if host.get_fact(MaterialisedManifest, directory=directory) == digest:
        host.noop(f"model {model} is materialised at {directory}")
        return
    yield StringCommand(*pull_command(model, digest, repository, registries, jobs))


def pull_command(
    model: str, digest: str, repository: str, registries: list[str], jobs: int = 4
) -> list[str]:
    """The puller's command line on the host; the password stays in the auth file."""
    arguments = ["runuser", "-u", SERVICE_USER, "--", "python3", PULLER]
    for registry in registries:
        arguments += ["--registry", f"https://{registry}"]
    return [
        *arguments,
        "--repository", repository, "--digest", digest, "--store", STORE,
        "--dest", model_directory(model, digest), "--auth-file", AUTH_FILE,
        "--jobs", str(jobs), "--no-progress",
    ]  # fmt: skip
