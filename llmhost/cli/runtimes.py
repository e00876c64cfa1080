"""`llmhost runtimes`: the inference engines hosts run, pinned, built once and pulled by digest."""

from __future__ import annotations

from pathlib import Path

import click

from llmhost.cli.errors import TRANSFER_ERRORS, LlmhostFailure, transfer_failure
from llmhost.cli.options import inventory_option, registry_access, registry_option, secrets_option


@click.group()
def runtimes() -> None:
    """Runtime builds and pins (inventories/runtimes.toml, runtime-builds.toml).

    \b
    llama-server is built once per hardware class from the pinned source archive
    and pushed to the registries; hosts pull it by digest. vLLM is installed on
    hosts from a lock file with every distribution hashed.

    \b
    llmhost runtimes build --class cpu --inventory inventories/production.py
    llmhost runtimes lock-vllm --version 0.10.1.1
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
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path.home() / ".cache" / "llmhost",
    show_default=True,
    help="Where source archives and finished builds are kept.",
)
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
