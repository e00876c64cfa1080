"""`llmhost models`: the model catalog and its copies in the internal OCI registries."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from llmhost.catalog import NAME, Model, find, load_catalog, load_model
from llmhost.cli.errors import TRANSFER_ERRORS, LlmhostFailure, transfer_failure
from llmhost.cli.options import inventory_option, registry_access, registry_option, secrets_option
from llmhost.errors import ConfigError
from llmhost.paths import MODELS


@click.group()
@click.option(
    "--catalog",
    envvar="LLMHOST_MODELS_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=MODELS,
    show_default=True,
    help="Directory of model files (env LLMHOST_MODELS_DIR).",
)
@click.pass_context
def models(context: click.Context, catalog: Path) -> None:
    """The model catalog and the internal OCI registry mirror.

    \b
    A model file (models/<name>.toml) pins every file by size and SHA256 and, once
    mirrored, the manifest digest hosts pull. Registry access (endpoint, CA,
    credentials) comes from --registry and --secrets-dir, or from an inventory's
    `registry` group with --inventory.
    """
    context.obj = catalog


def _catalog(context: click.Context) -> Path:
    """The catalog directory the `models` group was given (its context object)."""
    catalog: Path = context.obj
    return catalog


def _model(context: click.Context, name: str) -> Model:
    return find(name, _catalog(context))


@models.command("list")
@click.pass_context
def models_list(context: click.Context) -> None:
    """One line per model: name, format, size, whether mirrored, digest."""
    catalog = load_catalog(_catalog(context))
    for model in catalog.values():
        mirrored = model.digest or "not mirrored"
        click.echo(f"{model.name}\t{model.format}\t{model.total_size}\t{mirrored}")


@models.command("validate")
@click.argument("names", nargs=-1)
@click.pass_context
def models_validate(context: click.Context, names: tuple[str, ...]) -> None:
    """Check model files (all, or NAMES) and their eval sets, offline.

    Prints JSON {"ok", "checked", "failures"}; exit 0 ok, 1 not, 2 when there is no
    catalog to check.
    """
    from llmhost.evalset import eval_set_problems

    directory = _catalog(context)
    if not directory.is_dir():
        raise ConfigError(
            f"the catalog {directory} is not a directory",
            key="catalog",
            fix="give --catalog (or LLMHOST_MODELS_DIR) the directory of model files",
        )
    paths = [directory / f"{n}.toml" for n in names] or sorted(directory.glob("*.toml"))
    failures = []
    for name, path in zip(names or [p.stem for p in paths], paths, strict=True):
        # A bad file is this validator's finding, reported with the others, not an error.
        try:
            if not NAME.fullmatch(name):
                raise ConfigError(f"{name!r} is not a model name", key="model", fix="check it")
            if not path.is_file():
                raise ConfigError(f"{path} does not exist", key="model", fix="check the name")
            model = load_model(path)
        except ConfigError as error:
            failures.append({"file": str(path), "key": error.key, "error": str(error)})
            continue
        eval_path = model.eval_set_path()
        for problem in eval_set_problems(eval_path) if eval_path else []:
            failures.append({"file": str(path), "key": problem.key, "error": str(problem)})
    click.echo(
        json.dumps({"ok": not failures, "checked": len(paths), "failures": failures}, indent=2)
    )
    if failures:
        sys.exit(1)


@models.command("mirror")
@click.argument("name")
@registry_option
@inventory_option
@secrets_option
@click.option("--hf-endpoint", envvar="HF_ENDPOINT", help="Hugging Face hub URL (env HF_ENDPOINT).")
@click.pass_context
def models_mirror(
    context: click.Context,
    name: str,
    registry: str | None,
    inventory: str | None,
    secrets_dir: Path | None,
    hf_endpoint: str | None,
) -> None:
    """Fetch NAME at its pinned revision, verify every file, push it, record its digest."""
    from llmhost.mirror import mirror

    model = _model(context, name)
    try:
        access = registry_access(registry, inventory, secrets_dir, model.registry)[0]
        digest = mirror(model, access, hf_endpoint)
    except TRANSFER_ERRORS as error:
        raise transfer_failure(f"mirror of {model.name}", error) from error
    click.echo(f"{model.name}: {digest} on {access.endpoint} (written to {model.definition})")


@models.command("verify")
@click.argument("name")
@registry_option
@inventory_option
@secrets_option
@click.pass_context
def models_verify(
    context: click.Context,
    name: str,
    registry: str | None,
    inventory: str | None,
    secrets_dir: Path | None,
) -> None:
    """Fetch NAME by digest from each registry and check every byte against the catalog."""
    from llmhost.mirror import verify
    from llmhost.onhost.pull.errors import PullError

    model = _model(context, name)
    accesses = registry_access(registry, inventory, secrets_dir, model.registry)
    failures = []
    for access in accesses:  # every registry, so a bad primary does not hide the DR copy
        try:
            verified = verify(model, access)
        except (ConfigError, PullError, *TRANSFER_ERRORS) as error:  # type: ignore[misc]
            failures.append(f"{access.endpoint}: {error}")
        else:
            click.echo(
                f"{model.name}: {model.digest} verified on {access.endpoint} ({verified} bytes)"
            )
    if failures:
        raise LlmhostFailure(f"{model.name} failed verification on:\n  " + "\n  ".join(failures))


@models.command("sync")
@click.argument("names", nargs=-1)
@click.option("--from", "source", required=True, help="Registry to copy from (host:port).")
@click.option("--to", "target", required=True, help="Registry to copy to (host:port).")
@secrets_option
@click.pass_context
def models_sync(
    context: click.Context,
    names: tuple[str, ...],
    source: str,
    target: str,
    secrets_dir: Path | None,
) -> None:
    """Copy mirrored models (NAMES, or every mirrored one) by digest, verified."""
    from llmhost.mirror import sync
    from llmhost.onhost.pull.errors import PullError

    try:
        catalog = load_catalog(_catalog(context))
        chosen = [_model(context, n) for n in names] or [m for m in catalog.values() if m.digest]
        (source_access,) = registry_access(source, None, secrets_dir, None)
        (target_access,) = registry_access(target, None, secrets_dir, None)
        for model in chosen:
            digest = sync(model, source_access, target_access)
            click.echo(f"{model.name}: {digest} copied {source} -> {target}")
    except PullError as error:
        raise LlmhostFailure(f"sync from {source} failed: {error}") from error
    except TRANSFER_ERRORS as error:
        raise transfer_failure(f"sync {source} -> {target}", error) from error
