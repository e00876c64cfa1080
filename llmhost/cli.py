"""The `llmhost` command: testbed, inventory checks, deploys and the end-to-end demo."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from llmhost import __version__, converge
from llmhost.catalog import Model, find, load_catalog, load_model
from llmhost.errors import ConfigError
from llmhost.mirror import RegistryAccess
from llmhost.paths import MODELS, REPO_ROOT
from llmhost.secrets import secrets_directory

if TYPE_CHECKING:
    from llmhost.testing.testbed import Testbed


class LlmhostError(click.ClickException):
    """Bad input (inventory, arguments, missing tools): `error: ...`, exit code 2."""

    exit_code = 2

    def show(self, file: object = None) -> None:
        click.secho(f"error: {self.message}", err=True, fg="red")


class LlmhostFailure(LlmhostError):
    """The job ran and failed: exit code 1."""

    exit_code = 1


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="llmhost")
def main() -> None:
    """Provision UK/EU machines into a production LLM endpoint, idempotently, with pyinfra.

    \b
    A deploy converges every host of an inventory, role by role:
      pyinfra inventories/production.py deploy/site.py
    or, with the inventory checked first (no host contacted on bad input):
      llmhost deploy inventories/production.py

    \b
    Try the whole path on a throwaway local host:
      llmhost demo
    """


# -- inventory and deploys ---------------------------------------------------------------


def _checked_hosts(inventory: str, limit: tuple[str, ...]) -> list[str]:
    from llmhost.inventory import load_hosts
    from roles.base.preflight import check_inventory

    try:
        hosts = load_hosts(inventory, limit)
        for host in hosts:
            check_inventory(host.name, host.data, host.host_data, host.groups)
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    return [host.name for host in hosts]


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--limit", multiple=True, help="Only hosts or groups matching this (repeatable).")
def check(inventory: str, limit: tuple[str, ...]) -> None:
    """Validate INVENTORY's hosts (region, hardware, settings) without contacting any.

    Exit 0 when every host is valid, 2 with the host, key and fix otherwise.
    """
    names = _checked_hosts(inventory, limit)
    click.echo(f"ok: {len(names)} host(s) valid: {', '.join(names)}")


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.argument("deploy", default=str(REPO_ROOT / converge.SITE))
@click.option("--limit", multiple=True, help="Only hosts or groups matching this (repeatable).")
@click.option("--dry", is_flag=True, help="Show what would change; change nothing.")
@click.option("-y", "--yes", is_flag=True, help="Apply without showing changes and asking first.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help="Roll out this many hosts at a time (after the canary), stopping at the first failure.",
)
@click.option(
    "--canary",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="With --batch-size: hosts in the first batch, alone.",
)
def deploy(
    inventory: str,
    deploy: str,
    limit: tuple[str, ...],
    dry: bool,
    yes: bool,
    batch_size: int | None,
    canary: int,
) -> None:
    """Check INVENTORY, then run DEPLOY (default deploy/site.py) on its hosts with pyinfra.

    Unlike plain `pyinfra`, an inventory that resolves to no hosts is an error
    here, and every host's data is validated before any host is contacted.
    pyinfra shows the changes it detected and asks before applying them,
    unless --yes.

    \b
    Rolling: with --batch-size N the hosts (in inventory order) go in batches:
    the first --canary host(s) alone, then N at a time; a batch with a failed
    host stops the rollout, and the hosts after it are not touched.
    """
    names = _checked_hosts(inventory, limit)
    inventory_path, deploy_path = os.path.abspath(inventory), os.path.abspath(deploy)
    if batch_size and not dry:
        _roll_out(inventory_path, deploy_path, names, batch_size, canary, yes)
        return
    # pyinfra runs from the repository root (it imports roles from there).
    argv = converge.pyinfra_argv(inventory_path, deploy_path, limit=limit, dry=dry, yes=yes)
    os.chdir(REPO_ROOT)
    os.execv(argv[0], argv)


def rollout_batches(names: list[str], batch_size: int, canary: int) -> list[list[str]]:
    """The canary batch, then batches of ``batch_size``, in inventory order."""
    first, rest = names[:canary], names[canary:]
    return [first] + [rest[i : i + batch_size] for i in range(0, len(rest), batch_size)]


def _roll_out(
    inventory: str, deploy: str, names: list[str], batch_size: int, canary: int, yes: bool
) -> None:
    batches = rollout_batches(names, batch_size, canary)
    plan = "; ".join(f"{n}: {', '.join(b)}" for n, b in enumerate(batches, 1))
    click.echo(f"rollout in {len(batches)} batch(es): {plan}", err=True)
    if not yes:
        click.confirm("Apply, batch by batch?", abort=True, err=True)
    for number, batch in enumerate(batches, 1):
        click.echo(f"batch {number}/{len(batches)}: {', '.join(batch)}", err=True)
        result = converge.run(inventory, deploy, limit=tuple(batch), stream_stderr=True)
        if result.returncode != 0 or result.errors:
            untouched = [n for b in batches[number:] for n in b]
            raise LlmhostFailure(
                f"batch {number} failed; rollout stopped. Not touched: "
                f"{', '.join(untouched) or 'none'}. Fix the failure, then deploy again "
                "(hosts already done change nothing)"
            )
        click.echo(f"batch {number}/{len(batches)}: done ({result.changes} changes)", err=True)


@main.command()
@click.option("--hosts", "count", default=1, show_default=True, help="Test hosts to converge.")
@click.option("--down", "tear_down", is_flag=True, help="Remove the testbed afterwards.")
def demo(count: int, tear_down: bool) -> None:
    """Run the main job end to end on throwaway local test hosts.

    \b
    1. boot Debian 12 hosts (systemd-nspawn, own network namespaces);
    2. converge deploy/site.py over SSH: base, and the registry on the first host;
    3. make a tiny llama GGUF, verify it against its catalog entry, push it to
       the registry and record its digest;
    4. build llama-server for class `cpu` from the pinned source (about five
       minutes on two cores the first time, then cached) and push it;
    5. converge again with the hosts serving it: each pulls model and engine by
       digest, verified while streaming, starts the blue colour and puts the
       gateway (nginx: HTTPS, API key, limits, audit log) in front of it;
    6. converge once more and require zero changes; ask each host's gateway for
       a completion with the demo identity's key.
    Needs root; installs nothing itself (see the README's first line).
    """
    from llmhost.demo import (
        DEMO_MODEL,
        ask_demo_model,
        demo_catalog,
        demo_key,
        mirror_demo_model,
        publish_demo_runtime,
    )
    from llmhost.testing.testbed import Testbed, TestbedError

    testbed = Testbed()
    inventory = "inventories/testbed.py"
    try:
        hosts = testbed.up(count)
        click.echo(f"testbed: {', '.join(f'{h.name} ({h.address})' for h in hosts)}", err=True)
        _converge(inventory)
        catalog = demo_catalog(testbed)
        os.environ["LLMHOST_MODELS_DIR"] = str(catalog)
        digest = mirror_demo_model(testbed, catalog)
        click.echo(f"mirrored: {DEMO_MODEL} as {digest}", err=True)
        os.environ["LLMHOST_RUNTIME_BUILDS"] = str(testbed.root / "runtime-builds.toml")
        build = publish_demo_runtime(testbed)
        click.echo(f"llama.cpp for class cpu: {build}", err=True)
        demo_key(testbed)
        _converge_twice(inventory, {"model_name": DEMO_MODEL})
        for host in hosts:
            click.echo(f"{host.name}: {ask_demo_model(testbed, host)}", err=True)
    except (TestbedError, ConfigError) as error:
        raise LlmhostError(str(error)) from error
    finally:
        if tear_down:
            testbed.down()
            click.echo("testbed removed", err=True)
    if not tear_down:
        click.echo(
            f"hosts stay up: `llmhost testbed ssh {hosts[0].name}`; "
            "`llmhost testbed down` removes them",
            err=True,
        )


def _converge(inventory: str, data: dict[str, str] | None = None) -> None:
    result = converge.run(inventory, data=data, stream_stderr=True)
    if result.returncode != 0 or result.report is None or result.errors:
        raise LlmhostFailure(f"converge failed (exit {result.returncode})")
    click.echo(f"converged: {result.changes} operation(s) changed", err=True)


def _converge_twice(inventory: str, data: dict[str, str] | None = None) -> None:
    """Converge, then converge again and require that nothing changed."""
    _converge(inventory, data)
    second = converge.run(inventory, data=data, stream_stderr=False)
    if second.returncode != 0 or second.report is None or second.errors:
        raise LlmhostFailure(
            f"second converge failed (exit {second.returncode}):\n{second.stderr[-3000:]}"
        )
    if second.changes:
        changed = "\n  ".join(second.changed_operations())
        raise LlmhostFailure(f"second converge was not idempotent:\n  {changed}")
    click.echo("idempotent: second converge changed 0 operations", err=True)


# -- models ------------------------------------------------------------------------------


@main.group()
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
    catalog: Path = context.obj
    return catalog


def _model(context: click.Context, name: str) -> Model:
    try:
        return find(name, _catalog(context))
    except ConfigError as error:
        raise LlmhostError(str(error)) from error


registry_option = click.option(
    "--registry",
    help="Registry as host:port (default: the inventory's first registry, "
    "else the one recorded in the model file).",
)
inventory_option = click.option(
    "--inventory", type=click.Path(dir_okay=False), help="Take registries and secrets from it."
)
secrets_option = click.option(
    "--secrets-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Directory with ca/ and registry.json (default: the inventory's, else "
    "inventories/secrets).",
)


def _registry_access(
    registry: str | None, inventory: str | None, secrets_dir: Path | None, recorded: str | None
) -> list[RegistryAccess]:
    """The registries to talk to, in order (primary first)."""
    endpoints: list[str] = []
    data: Any = {}
    if inventory:
        from llmhost.inventory import load_hosts
        from roles.registry.defaults import endpoint

        hosts = load_hosts(inventory, ("registry",))
        endpoints = [endpoint(h.name, h.data) for h in hosts]
        data = hosts[0].data
    if registry:
        endpoints = [registry]
    if not endpoints and recorded:
        endpoints = [recorded]
    if not endpoints:
        raise ConfigError(
            "no registry given", key=None, fix="pass --registry HOST:PORT or --inventory INVENTORY"
        )
    directory = secrets_dir or secrets_directory(data)
    return [RegistryAccess.from_secrets(e, directory) for e in endpoints]


# Registry and transfer failures (oras-py and requests raise their own types, and oras-py
# may even sys.exit): reported with the registry named, never as a traceback.
TRANSFER_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, SystemExit, ValueError)


def _transfer_failure(where: str, error: BaseException) -> LlmhostFailure:
    return LlmhostFailure(
        f"{where}: {error or type(error).__name__}. Fix: check that the registry is up and "
        "reachable from here, and that --secrets-dir holds its CA and credentials"
    )


@models.command("list")
@click.pass_context
def models_list(context: click.Context) -> None:
    """One line per model: name, format, size, whether mirrored, digest."""
    try:
        catalog = load_catalog(_catalog(context))
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    for model in catalog.values():
        mirrored = model.digest or "not mirrored"
        click.echo(f"{model.name}\t{model.format}\t{model.total_size}\t{mirrored}")


@models.command("validate")
@click.argument("names", nargs=-1)
@click.pass_context
def models_validate(context: click.Context, names: tuple[str, ...]) -> None:
    """Check model files (all, or NAMES); prints JSON {"ok", "failures"}; exit 0 ok, 1 not."""
    directory = _catalog(context)
    paths = [directory / f"{n}.toml" for n in names] or sorted(directory.glob("*.toml"))
    failures = []
    for path in paths:
        try:
            if not path.exists():
                raise ConfigError(f"{path} does not exist", key="model", fix="check the name")
            load_model(path)
        except ConfigError as error:
            failures.append({"file": str(path), "key": error.key, "error": str(error)})
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
        access = _registry_access(registry, inventory, secrets_dir, model.registry)[0]
        digest = mirror(model, access, hf_endpoint)
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    except TRANSFER_ERRORS as error:
        raise _transfer_failure(f"mirror of {model.name}", error) from error
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
    try:
        accesses = _registry_access(registry, inventory, secrets_dir, model.registry)
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
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
        (source_access,) = _registry_access(source, None, secrets_dir, None)
        (target_access,) = _registry_access(target, None, secrets_dir, None)
        for model in chosen:
            digest = sync(model, source_access, target_access)
            click.echo(f"{model.name}: {digest} copied {source} -> {target}")
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    except PullError as error:
        raise LlmhostFailure(f"sync from {source} failed: {error}") from error
    except TRANSFER_ERRORS as error:
        raise _transfer_failure(f"sync {source} -> {target}", error) from error


# -- gateway: keys, status, rollback -----------------------------------------------------


@main.group()
def keys() -> None:
    """API keys of the gateway: one per identity, kept in the secrets directory.

    \b
    llmhost keys add team-a --inventory inventories/production.py   # prints the key once
    llmhost keys list --inventory inventories/production.py
    Then converge: every gateway admits the identities its `gateway_identities` names.
    """


def _secrets_for(inventory: str | None, secrets_dir: Path | None) -> Path:
    if secrets_dir:
        return secrets_dir
    if inventory:
        from llmhost.inventory import load_hosts

        return secrets_directory(load_hosts(inventory)[0].data)
    return secrets_directory({})


@keys.command("add")
@click.argument("identity")
@inventory_option
@secrets_option
@click.option("--rotate", is_flag=True, help="Replace the identity's existing key.")
def keys_add(identity: str, inventory: str | None, secrets_dir: Path | None, rotate: bool) -> None:
    """Create a key for IDENTITY (or rotate it) and print it once."""
    from llmhost.secrets import add_api_key

    try:
        key = add_api_key(_secrets_for(inventory, secrets_dir), identity, rotate)
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    click.echo(key)
    click.echo(f"{identity}: key {'rotated' if rotate else 'created'}; converge to apply", err=True)


@keys.command("list")
@inventory_option
@secrets_option
def keys_list(inventory: str | None, secrets_dir: Path | None) -> None:
    """The identities that have a key (never the keys)."""
    from llmhost.secrets import api_keys

    try:
        names = sorted(api_keys(_secrets_for(inventory, secrets_dir)))
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    for name in names:
        click.echo(name)


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.argument("hosts", nargs=-1)
def rollback(inventory: str, hosts: tuple[str, ...]) -> None:
    """Switch HOSTS (default: every serving host) back to the previous colour.

    \b
    Instant when the previous colour is warm (within `gateway_rollback_window_s`);
    when it is cold it is started, and the switch waits for /health and a one-token
    completion. A host whose previous colour cannot serve keeps its active colour.
    """
    names = _checked_hosts(inventory, hosts)
    click.echo(f"rollback: {', '.join(names)}", err=True)
    result = converge.run(
        os.path.abspath(inventory),
        str(REPO_ROOT / "deploy" / "rollback.py"),
        limit=hosts,
        stream_stderr=True,
    )
    if result.returncode != 0 or result.errors:
        raise LlmhostFailure(f"rollback failed (exit {result.returncode}); see above")


@main.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.option("--limit", multiple=True, help="Only hosts or groups matching this (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per host.")
def status(inventory: str, limit: tuple[str, ...], as_json: bool) -> None:
    """Per serving host: active colour, each colour's release and health, last gate result."""
    from llmhost.status import collect

    try:
        rows = collect(os.path.abspath(inventory), limit)
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    failed = False
    for name, found in rows:
        if as_json:
            click.echo(json.dumps({"host": name, **found}, sort_keys=True))
            continue
        if "error" in found:
            failed = True
            click.echo(f"{name}: {found['error']}")
            continue
        click.echo(f"{name}: active {found['active']} (gateway -> {found['gateway_sends_to']})")
        for colour, info in found["colours"].items():
            release = info["release"] or {}
            label = f"{release.get('id')} {release.get('model')}" if release else "no release"
            click.echo(f"  {colour:5} {label:40} {info['health']}")
        click.echo(f"  last gate: {_gate_line(found['last_gate'])}")
    if failed:
        sys.exit(1)


def _gate_line(verdict: dict[str, Any] | None) -> str:
    if not verdict:
        return "none recorded"
    outcome = (
        "passed" if verdict.get("passed") else "FAILED: " + "; ".join(verdict.get("failures") or [])
    )
    drift = f", {verdict['drift']} answers drifted" if verdict.get("drift") else ""
    return (
        f"release {verdict.get('release')} on {verdict.get('colour')} {outcome}{drift} "
        f"({verdict.get('time')}; report {verdict.get('report')})"
    )


# -- soak --------------------------------------------------------------------------------


def _gate_values(pairs: tuple[str, ...]) -> dict[str, float]:
    from llmhost.onhost.soak import Gates

    known = {name for name in Gates.__dataclass_fields__}
    values = {}
    for pair in pairs:
        name, _, raw = pair.partition("=")
        if name not in known:
            raise LlmhostError(
                f"--gate {pair}: unknown gate; use one of {', '.join(sorted(known))}"
            )
        try:
            values[name] = float(raw)
        except ValueError as error:
            raise LlmhostError(f"--gate {pair}: {raw!r} is not a number") from error
    return values


@main.command()
@click.argument("url")
@click.option("--model", required=True, help="Served model name to request.")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, exists=True),
    help="File holding the API key (never pass a key on the command line).",
)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True),
    help="CA certificate for an https URL (e.g. the llmhost CA).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="Closed loop: clients, each sending when its last answer ends.",
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Open loop instead: requests per second, Poisson arrivals.",
)
@click.option(
    "--requests",
    "count",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Requests to send (at most, with --duration).",
)
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    help="Stop sending after this many seconds.",
)
@click.option("--max-tokens", type=click.IntRange(min=1), default=32, show_default=True)
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False, exists=True),
    help="Prompt mix: one prompt per line (default: one short prompt).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="Seconds a request may take before it counts as failed.",
)
@click.option(
    "--gate",
    "gates",
    multiple=True,
    metavar="NAME=VALUE",
    help="ttft_p95_ms, e2e_p99_ms, error_rate_max, min_tokens_per_s (repeatable).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write result.json and report.html (plots) here.",
)
def soak(
    url: str,
    model: str,
    key_file: str | None,
    ca_file: str | None,
    concurrency: int,
    rate: float | None,
    count: int,
    duration: float | None,
    max_tokens: int,
    prompts: str | None,
    timeout: float,
    gates: tuple[str, ...],
    out: Path | None,
) -> None:
    """Streaming load on URL (OpenAI-compatible) and a pass/fail verdict on its gates.

    \b
    Prints the JSON result; exit 0 pass, 1 fail, 2 could not run (bad arguments,
    nothing answering at URL). An error-rate gate also needs enough requests to
    back it: 0 errors in n bounds the rate at about 3/n.
    llmhost soak https://gpu-lon-1:8000 --model llama-8b --key-file team.key \\
        --ca-file inventories/secrets/ca/ca.crt --gate ttft_p95_ms=800 \\
        --gate error_rate_max=0.01 --requests 400 --out reports/
    """
    import asyncio

    from llmhost.onhost import soak as load
    from llmhost.soakreport import result_document, write_reports

    gate = load.Gates(**_gate_values(gates))
    api_key = Path(key_file).read_text().strip() if key_file else None
    lines = Path(prompts).read_text().splitlines() if prompts else ["Hello"]
    mix = [line for line in lines if line.strip()] or ["Hello"]
    target = load.Target(url=url, model=model, api_key=api_key, ca_file=ca_file, timeout_s=timeout)
    first = asyncio.run(load.one_request(target, mix[0], 1))
    if first.error in ("connection", "timeout") or (first.error or "").startswith("http-4"):
        raise LlmhostError(f"nothing usable answers at {url}: {first.error}")
    samples: list[load.Sample] = []

    async def run_with_progress() -> float:
        runner = load.run_load(
            target,
            mix,
            concurrency=concurrency,
            rate_per_s=rate,
            requests=count,
            max_tokens=max_tokens,
            duration_s=duration,
            samples=samples,
        )
        task = asyncio.ensure_future(runner)
        while not task.done():
            await asyncio.wait([task], timeout=1.0)
            failed = sum(1 for s in samples if not s.ok)
            click.echo(f"\rsoak: {len(samples)} done, {failed} failed", err=True, nl=False)
        click.echo("", err=True)
        return await task

    elapsed = asyncio.run(run_with_progress())
    summary = load.summarise(samples, elapsed)
    failures = load.evaluate(summary, gate)
    mode = (
        {"mode": "open", "rate_per_s": rate}
        if rate
        else {"mode": "closed", "concurrency": concurrency}
    )
    document = result_document(
        target={"url": url, "model": model},
        load={**mode, "requests": len(samples), "duration_s": duration, "max_tokens": max_tokens},
        summary=summary,
        gates=gate,
        failures=failures,
    )
    if out:
        write_reports(out, document, samples)
        click.echo(f"reports: {out / 'result.json'}, {out / 'report.html'}", err=True)
    click.echo(json.dumps(document, indent=2, sort_keys=True))
    if failures:
        sys.exit(1)


# -- runtimes ----------------------------------------------------------------------------


@main.group()
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

    try:
        sources, builds, classes = load_sources(), load_builds(), load_classes()
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
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
        accesses = _registry_access(registry, inventory, secrets_dir, None)
        artifact = build_llama_cpp(source, hardware, cache_dir, jobs)
        build = publish_build(artifact, hardware.name, source.repository, accesses)
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    except subprocess.CalledProcessError as error:
        raise LlmhostFailure(
            f"the llama.cpp build failed ({error}); its output is above"
        ) from error
    except PullError as error:
        raise LlmhostFailure(f"read-back of the pushed build failed: {error}") from error
    except TRANSFER_ERRORS as error:
        raise _transfer_failure(f"push of the {class_name} build", error) from error
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

    try:
        pin = load_sources().vllm
        chosen = version or pin.version
        dest = pin.lock if chosen == pin.version else pin.lock.with_name(f"vllm-{chosen}.txt")
        written = lock_vllm(chosen, dest, index_url)
    except ConfigError as error:
        raise LlmhostError(str(error)) from error
    click.echo(f"vllm {chosen}: {written}")


# -- testbed -----------------------------------------------------------------------------


@main.group()
def testbed() -> None:
    """Real Debian 12 test hosts on this machine (root; systemd-nspawn + network namespaces).

    \b
    Hosts are tb1..tbN at 10.231.N.2, reached over SSH with a key the testbed
    generates; each has an egress proxy and an NTP server at 10.231.N.1.
    State lives in $LLMHOST_TESTBED_DIR (default /var/lib/llmhost-testbed).
    """


def _testbed() -> Testbed:
    from llmhost.testing.testbed import Testbed

    return Testbed()


@testbed.command("up")
@click.option("--hosts", "count", default=2, show_default=True, help="How many hosts.")
def testbed_up(count: int) -> None:
    """Boot COUNT hosts (reusing healthy ones, replacing stale ones)."""
    from llmhost.testing.testbed import TestbedError

    try:
        hosts = _testbed().up(count)
    except TestbedError as error:
        raise LlmhostError(str(error)) from error
    for host in hosts:
        click.echo(f"{host.name}\t{host.address}")


@testbed.command("down")
@click.option("--purge-image", is_flag=True, help="Also delete the cached host image.")
def testbed_down(purge_image: bool) -> None:
    """Stop every host; remove its processes, namespace, veth, mounts and files."""
    from llmhost.testing.testbed import TestbedError

    try:
        _testbed().down(purge_image=purge_image)
    except TestbedError as error:
        raise LlmhostError(str(error)) from error
    click.echo("testbed is down")


@testbed.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def testbed_status(as_json: bool) -> None:
    """List hosts with their address, health and systemd state."""
    rows = _testbed().status()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no testbed hosts; `llmhost testbed up` boots some")
    for row in rows:
        health = "healthy" if row["healthy"] else "STALE (next `up` replaces it)"
        click.echo(f"{row['name']}\t{row['address']}\t{health}\t{row['system']}")


@testbed.command("ssh", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def testbed_ssh(host: str, command: tuple[str, ...]) -> None:
    """Open a shell on HOST (tb1, or its address), or run COMMAND there."""
    from llmhost.testing.testbed import TestbedError

    testbed = _testbed()
    try:
        target = testbed.find(host)
    except TestbedError as error:
        raise LlmhostError(str(error)) from error
    argv = testbed.ssh_argv(target)
    if command:
        argv.append(" ".join(command))  # as ssh does: the remote shell splits it
    os.execvp(argv[0], argv)


# -- configuration -----------------------------------------------------------------------


@main.group()
def config() -> None:
    """Configuration keys of every role."""


@config.command("reference")
@click.option("--update-readme", is_flag=True, help="Rewrite the README's reference block.")
def config_reference(update_readme: bool) -> None:
    """Print the configuration reference (markdown) generated from the roles' defaults."""
    from llmhost import reference

    if update_readme:
        changed = reference.update_readme(REPO_ROOT / "README.md")
        click.echo("README.md updated" if changed else "README.md already current")
        return
    click.echo(reference.markdown())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
