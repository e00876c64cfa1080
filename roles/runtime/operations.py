"""The runtime role's operations: install an engine exactly once, check before staging."""

from __future__ import annotations

from collections.abc import Generator
from shlex import quote

from pyinfra import host
from pyinfra.api import StringCommand, operation
from pyinfra.facts.files import Sha256File

from roles.runtime.facts import InstalledMarker

VLLM_MARKER = ".llmhost-lock-sha256"


@operation()
def binary_installed(source: str, dest: str, sha256: str) -> Generator[StringCommand, None, None]:
    """Copy a pulled binary to a root-owned 0755 file, checked against its sha256.

    The puller's store belongs to the service user; the runtime must not run
    anything that user could rewrite, so the binary is copied out of it.
    """
    if host.get_fact(Sha256File, path=dest) == sha256:
        host.noop(f"{dest} is installed (sha256 {sha256[:12]})")
        return
    directory, staged = quote(dest.rsplit("/", 1)[0]), quote(f"{dest}.new")
    yield StringCommand(
        f"install -d -o root -g root -m 0755 {directory} && "
        f"install -o root -g root -m 0755 {quote(source)} {staged} && "
        f"echo {quote(f'{sha256}  {dest}.new')} | sha256sum --check --quiet && "
        f"mv -f {staged} {quote(dest)}"
    )


def vllm_install_script(
    venv: str, lock: str, lock_sha256: str, egress_env: str, find_links: str | None = None
) -> str:
    """Build the venv in place from the hashed lock; the marker, written last, says it is done.

    With ``find_links`` (the lock's wheels, pulled from the registry by digest) pip reads
    no index; without it, the index through the host's proxy. Either way every file is
    checked against the lock's hashes. A venv cannot be moved (its scripts name their
    own path), so a failed install leaves no marker and the next run starts it again.
    """
    env, pip, python = quote(egress_env), quote(f"{venv}/bin/pip"), quote(f"{venv}/bin/python")
    source = f"--no-index --find-links {quote(find_links)} " if find_links else ""
    return " && ".join(
        [
            f"rm -rf {quote(venv)}",
            f"python3 -m venv {quote(venv)}",
            # The host's proxy settings, if it has any, from the base role.
            f"set -a && {{ [ ! -r {env} ] || . {env}; }} && set +a",
            f"{pip} install --no-input --disable-pip-version-check {source}--require-hashes "
            f"--no-deps --only-binary :all: -r {quote(lock)}",
            f"{python} -c 'import vllm'",
            f"echo {quote(lock_sha256)} > {quote(f'{venv}/{VLLM_MARKER}')}",
        ]
    )


@operation()
def vllm_installed(
    venv: str, lock: str, lock_sha256: str, egress_env: str, find_links: str | None = None
) -> Generator[StringCommand, None, None]:
    """vLLM in ``venv`` exactly as the lock file pins it, or (re)installed (from
    ``find_links`` alone when given)."""
    if host.get_fact(InstalledMarker, path=f"{venv}/{VLLM_MARKER}") == lock_sha256:
        host.noop(f"vLLM in {venv} matches lock {lock_sha256[:12]}")
        return
    yield StringCommand(vllm_install_script(venv, lock, lock_sha256, egress_env, find_links))
