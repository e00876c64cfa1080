"""`llmhost runtimes`: the inference engines hosts run, pinned, built once and pulled by digest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from llmhost.cli.errors import TRANSFER_ERRORS, LlmhostFailure, transfer_failure
from llmhost.cli.options import inventory_option, registry_access, registry_option, secrets_option


def cache_dir_option(kept: str) -> Any:
    """``--cache-dir``, where the control machine keeps ``kept``."""
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=Path.home() / ".cache" / "llmhost",
        show_default=True,
        help=f"Where {kept} are kept.",
    )


@click.group()
def runtimes() -> None:
    """Runtime builds and pins (inventories/runtimes.toml, runtime-builds.toml).

    \b
    llama-server is built once per hardware class from the pinned source archive
    and pushed to the registries; hosts pull it by digest. vLLM is installed on
    hosts from a lock file with every distribution hashed, its wheels pulled from
    the registries by digest once published (else from the index).

    \b
    llmhost runtimes build --class cpu --inventory inventories/production.py
    llmhost runtimes lock-vllm --version 0.10.1.1
    llmhost runtimes publish-vllm --inventory inventories/production.py
    """


@runtimes.command("list")
def runtimes_list() -> None:
    """The pinned sources, and the llama.cpp build recorded for each class."""
    from llmhost.hardware import load_classes
    from llmhost.runtimes import load_builds, load_sources

    sources, builds, classes = load_sources(), load_builds(), load_classes()
    click.echo(f"llama.cpp source\t{sources.llama_cpp.url}\tsha256:{sources.llama_cpp.sha256}")
    click.echo(f"vllm\t{sources.vllm.version}\t{sources.vllm.lock}")
    for name, hardware in classes.items():
        build = builds.get(name)
        click.echo(f"{name}\t{hardware.runtime}\t{build.digest if build else 'not built'}")


@runtimes.command("build")
@click.option("--class", "class_name", required=True, help="Hardware class to build for.")
@registry_option
@inventory_option
@secrets_option
@cache_dir_option("source archives and finished builds")
@click.option("--jobs", type=int, help="Parallel compile jobs (default: all cores).")
def runtimes_build(
    class_name: str,
    registry: str | None,
    inventory: str | None,
    secrets_dir: Path | None,
    cache_dir: Path,
    jobs: int | None,
) -> None:
    """Build llama-server for a class, push it to every registry, record its digest.

    \b
    The source archive is checked against its pinned sha256 before it is
    unpacked; the build uses the class's `build_flags` from hardware.toml; every
    registry's copy is read back and verified before the digest is recorded.
    CUDA classes must be built where the class's CUDA toolkit is installed.
    """
    import subprocess

    from llmhost.hardware import check_hardware, load_classes
    from llmhost.onhost.pull.errors import PullError
    from llmhost.runtimes import build_llama_cpp, builds_file, load_sources, publish_build

    try:
        hardware = check_hardware(class_name, load_classes(), "this build")
        source = load_sources().llama_cpp
        accesses = registry_access(registry, inventory, secrets_dir, None)
        artifact = build_llama_cpp(source, hardware, cache_dir, jobs)
        build = publish_build(artifact, hardware.name, source.repository, accesses)
    except subprocess.CalledProcessError as error:
        raise LlmhostFailure(
            f"the llama.cpp build failed ({error}); its output is above"
        ) from error
    except PullError as error:
        raise LlmhostFailure(f"read-back of the pushed build failed: {error}") from error
    except TRANSFER_ERRORS as error:
        raise transfer_failure(f"push of the {class_name} build", error) from error
    registries = ", ".join(a.endpoint for a in accesses)
    click.echo(f"{hardware.name}: {build.digest} on {registries} (written to {builds_file()})")


@runtimes.command("publish-vllm")
@registry_option
@inventory_option
@secrets_option
@click.option("--index-url", default="https://pypi.org/simple", show_default=True)
@cache_dir_option("the downloaded wheels")
def runtimes_publish_vllm(
    registry: str | None,
    inventory: str | None,
    secrets_dir: Path | None,
    index_url: str,
    cache_dir: Path,
) -> None:
    """Download the vLLM lock's wheels, push them to every registry, record the digest.

    \b
    Every wheel is fetched by the hash the lock pins (pip --require-hashes), for the
    hosts' platform; the set goes to each registry as one OCI artifact, is read back
    and verified, and its digest is written to inventories/vllm-wheels.toml. vLLM
    hosts then pull it by digest and install with pip --no-index: no host needs the
    index. Run it where the index is reachable, after every `lock-vllm`; commit the
    file with the lock.
    """
    from llmhost.onhost.pull.errors import PullError
    from llmhost.runtimes import download_vllm_wheels, load_sources, publish_vllm_wheels

    pin = load_sources().vllm
    try:
        accesses = registry_access(registry, inventory, secrets_dir, None)
        directory = download_vllm_wheels(pin, cache_dir, index_url)
        wheels = publish_vllm_wheels(pin, directory, accesses)
    except PullError as error:
        raise LlmhostFailure(f"read-back of the pushed wheels failed: {error}") from error
    except TRANSFER_ERRORS as error:
        raise transfer_failure(f"push of vLLM {pin.version}'s wheels", error) from error
    click.echo(f"vllm {pin.version}: {wheels.digest} ({len(wheels.files)} wheels)")


@runtimes.command("lock-vllm")
@click.option("--version", "version", help="vLLM version (default: the one pinned).")
@click.option("--index-url", default="https://pypi.org/simple", show_default=True)
def runtimes_lock_vllm(version: str | None, index_url: str) -> None:
    """Resolve vLLM and every dependency for the hosts, and write the hashed lock file.

    Run where the index is reachable; then set `version` and `lock` in
    inventories/runtimes.toml if the version changed, and commit both.
    """
    from llmhost.runtimes import load_sources, lock_vllm

    pin = load_sources().vllm
    chosen = version or pin.version
    dest = pin.lock if chosen == pin.version else pin.lock.with_name(f"vllm-{chosen}.txt")
    written = lock_vllm(chosen, dest, index_url)
    click.echo(f"vllm {chosen}: {written}")
