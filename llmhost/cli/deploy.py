"""Commands that act on an inventory's hosts: check, deploy, bootstrap, status, rollback, demo.

Running pyinfra, rolling out in batches and the demo's steps live next to the
code they drive (`llmhost.converge`, `llmhost.demo`); these commands parse
arguments, print progress and turn typed failures into exit codes.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any

import click

from llmhost import converge
from llmhost.cli.errors import LlmhostError, LlmhostFailure
from llmhost.messages import error, say, warn
from llmhost.paths import REPO_ROOT

if TYPE_CHECKING:
    from llmhost.testing.testbed import Testbed

limit_option = click.option(
    "--limit", multiple=True, help="Only hosts or groups matching this (repeatable)."
)


def _site_check(
    inventory: str, limit: tuple[str, ...], data: dict[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(host names, problem lines) of INVENTORY under ``limit`` (with ``data`` overriding
    the hosts'); warnings printed on stderr.

    Every role's check runs for every host it would deploy, and no host is contacted.
    """
    from llmhost.inventory import load_inventory
    from roles._common.site import check_site

    loaded = load_inventory(inventory, limit, data)
    names = [host.name for host in loaded.hosts]
    found = check_site(loaded.inventory, loaded.state, names)
    for warning in found.warnings:
        warn(warning)
    return names, [str(problem) for problem in found.problems]


def _checked_hosts(
    inventory: str, limit: tuple[str, ...], data: dict[str, str] | None = None
) -> list[str]:
    """The names of INVENTORY's hosts (under ``limit``), all valid; else every problem, exit 2."""
    names, problems = _site_check(inventory, limit, data)
    if problems:
        for problem in problems[:-1]:
            error(problem)
        raise LlmhostError(f"{problems[-1]}\n{_count(problems)}: nothing was deployed")
    return names


def _count(problems: list[str]) -> str:
    return f"{len(problems)} problem{'s' if len(problems) > 1 else ''} found"


@click.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@limit_option
def check(inventory: str, limit: tuple[str, ...]) -> None:
    """Validate INVENTORY offline: every role's checks, for every host, contacting none.

    \b
    Checked: the inventory file itself (its groups, hosts listed twice, groups that
    disagree), every key (a misspelt setting is an error, with the nearest key), the
    residency policy, each region and the region of every endpoint a host calls
    (`llmhost residency audit` lists them), hardware classes, ports, endpoints, the
    models hosts serve (catalog, digests, eval sets), runtime builds, API keys and
    gate limits. One line per problem: host, key, what is wrong, the fix.
    Exit 0 valid, 1 problems found, 2 the inventory cannot be read.
    """
    names, problems = _site_check(inventory, limit)
    for problem in problems:
        error(problem)
    if problems:
        say(f"{_count(problems)} in {len(names)} host(s)")
        sys.exit(1)
    click.echo(f"ok: {len(names)} host(s) valid: {', '.join(names)}")


@click.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@click.argument("deploy", default=str(REPO_ROOT / converge.SITE))
@limit_option
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
    if not batch_size:
        _say_no_canary(inventory_path)
    # pyinfra runs from the repository root (it imports roles from there).
    argv = converge.pyinfra_argv(inventory_path, deploy_path, limit=limit, dry=dry, yes=yes)
    os.chdir(REPO_ROOT)
    os.execv(argv[0], argv)


def _say_no_canary(inventory: str) -> None:
    """An edge's percentage canary is a rolling deploy's first batch: say when none is."""
    from llmhost.inventory import load_hosts

    edges = [
        h.name
        for h in load_hosts(inventory)
        if "edge" in h.groups and h.data.get("edge_canary_percent")
    ]
    if edges:
        say(
            f"note: {', '.join(edges)} judge a canary (edge_canary_percent) only in a rolling "
            "deploy (--batch-size N); this one goes to every host at once"
        )


def _roll_out(
    inventory: str, deploy: str, names: list[str], batch_size: int, canary: int, yes: bool
) -> None:
    """Show the batches, ask once (unless ``yes``), then roll out with progress on stderr."""
    from llmhost.canary import Canary

    batches = converge.rollout_batches(names, batch_size, canary)
    plan = "; ".join(f"{n}: {', '.join(b)}" for n, b in enumerate(batches, 1))
    say(f"rollout in {len(batches)} batch(es): {plan}")
    share = Canary.planned(inventory, batches[0], say)
    if share is not None:
        say(share.describe())
    if not yes:
        click.confirm("Apply, batch by batch?", abort=True, err=True)
    try:
        converge.roll_out(inventory, deploy, names, batch_size, canary, _echo_batch, share)
    except converge.RolloutFailed as error:
        raise LlmhostFailure(str(error)) from error


def _echo_batch(progress: converge.BatchProgress) -> None:
    head = f"batch {progress.number}/{progress.total}"
    if progress.result is None:
        say(f"{head}: {', '.join(progress.hosts)}")
    else:
        say(f"{head}: done ({progress.result.changes} changes)")


@click.command()
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
    say(f"rollback: {', '.join(names)}")
    result = converge.run(
        os.path.abspath(inventory),
        str(REPO_ROOT / converge.ROLLBACK),
        limit=hosts,
        stream_stderr=True,
    )
    if result.returncode != 0 or result.errors:
        raise LlmhostFailure(f"rollback failed (exit {result.returncode}); see above")


@click.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
@limit_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per host.")
def status(inventory: str, limit: tuple[str, ...], as_json: bool) -> None:
    """Per serving host: active colour, each colour's release and health, last gate result."""
    from llmhost.status import collect

    rows = collect(os.path.abspath(inventory), limit)
    failed = False
    for name, found in rows:
        if as_json:
            click.echo(json.dumps({"host": name, **found}, sort_keys=True))
            continue
        if "error" in found:
            failed = True
            click.echo(f"{name}: {found['error']}")
            continue
        _echo_host_status(name, found)
    if failed:
        sys.exit(1)


def _echo_host_status(name: str, found: dict[str, Any]) -> None:
    click.echo(f"{name}: active {found['active']} (gateway -> {found['gateway_sends_to']})")
    for colour, info in found["colours"].items():
        release = info["release"] or {}
        label = f"{release.get('id')} {release.get('model')}" if release else "no release"
        click.echo(f"  {colour:5} {label:40} {info['health']}")
    click.echo(f"  last gate: {_gate_line(found['last_gate'])}")
    if found.get("last_canary"):
        click.echo(f"  last canary: {_canary_line(found['last_canary'])}")


def _canary_line(verdict: dict[str, Any]) -> str:
    edges = ", ".join(verdict.get("edges") or [])
    return (
        f"release {verdict.get('release')} {verdict.get('decision')}: {verdict.get('reason')} "
        f"({verdict.get('percent')}% through {edges}; {verdict.get('time')})"
    )


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


@click.command()
@click.argument("inventory", type=click.Path(dir_okay=False))
def bootstrap(inventory: str) -> None:
    """Take INVENTORY's hosts from blank to serving behind the gate, in one command.

    \b
    The first install, in the order it needs (each step is the command printed):
      1. check offline (as if no host served a model yet), and converge the
         registry hosts alone: base, the registry (deploy/registry.py);
      2. mirror each model a serving host names (llmhost models mirror NAME);
      3. build llama-server for each class a llama.cpp host has, push it to every
         registry (llmhost runtimes build --class CLASS); with a vLLM host, push the
         wheels of its lock (llmhost runtimes publish-vllm);
      4. check again and converge deploy/site.py in full: monitoring, the model and
         the engine pulled by digest, the gate (soak and eval), the cutover.
    Every step is idempotent: after a failure, fix what it says and run it again.

    \b
    A single box, on the box itself as root (its one host is `@local`):
      llmhost keys add ops
      llmhost bootstrap inventories/single_box.py
    """
    import subprocess

    from llmhost.bootstrap import REGISTRY_DEPLOY, WITHOUT_MODELS, plan, push_commands, summary
    from llmhost.demo import Progress
    from llmhost.inventory import load_inventory
    from llmhost.secrets import secrets_directory

    path = os.path.abspath(inventory)
    _checked_hosts(path, (), WITHOUT_MODELS)
    loaded = load_inventory(path)
    found = plan(loaded)
    pushes = push_commands(found, path)
    stages = (
        "converging the registry hosts: base, registry (deploy/registry.py)",
        *(text for text, _ in pushes),
        "converging every host: monitoring, then pull by digest, start, gate, cut over",
    )
    progress = Progress(stages=stages)
    say(progress.next())
    _converge_or_fail(path, str(REPO_ROOT / REGISTRY_DEPLOY), limit=("registry",))
    for _, argv in pushes:
        say(progress.next())
        say("$ llmhost " + " ".join(argv[3:]))
        # Their output is progress here: stdout is the summary alone.
        if subprocess.run(argv, stdout=sys.stderr, check=False).returncode != 0:
            raise LlmhostFailure(f"`llmhost {' '.join(argv[3:])}` failed; see above")
    say(progress.next())
    _checked_hosts(path, ())
    _converge_or_fail(path, str(REPO_ROOT / converge.SITE))
    say(f"done in {progress.elapsed()}")
    first = next(iter(loaded.inventory))
    click.echo(summary(found, inventory, str(secrets_directory(first.data, first.name))))


def _converge_or_fail(inventory: str, deploy: str, limit: tuple[str, ...] = ()) -> None:
    result = converge.run(inventory, deploy, limit=limit, stream_stderr=True)
    if result.returncode != 0 or result.errors:
        raise LlmhostFailure(f"the converge failed (exit {result.returncode}); see above")
    say(result.summary())


@click.command()
@click.option("--hosts", "count", default=1, show_default=True, help="Test hosts to converge.")
@click.option(
    "--down",
    "tear_down",
    is_flag=True,
    help="Take the demo down instead: every host, namespace, link, mount and process.",
)
def demo(count: int, tear_down: bool) -> None:
    """Run the main job end to end on throwaway local test hosts.

    \b
    1. boot Debian 12 hosts (systemd-nspawn, own network namespaces);
    2. converge deploy/site.py over SSH: base, the registry (first two hosts),
       monitoring (Prometheus and Alertmanager on the first host);
    3. make a tiny llama GGUF, verify it against its catalog entry, push it to
       the registry and record its digest;
    4. build llama-server for class `cpu` from the pinned source (about five
       minutes on two cores the first time, then cached) and push it;
    5. converge with the hosts serving it: each pulls model and engine by
       digest, verified while streaming, starts the blue colour, soaks and
       evaluates it (the gate) and cuts the gateway (nginx: HTTPS, API key,
       limits, audit log) over to it;
    6. converge once more and require zero changes;
    7. ask each host's gateway for a completion with the demo identity's key.
    Each stage is a line on stderr with the time since the start; at the end
    stdout gets the gateway URLs, the key, the CA, a curl that works, the
    gate's reports, Prometheus through an SSH tunnel, and how to take it down.
    Needs root; installs nothing itself (see the README's first line).
    """
    from llmhost.testing.testbed import Testbed

    testbed = Testbed()
    if tear_down:
        testbed.down()
        say(
            "the demo is down: no host, namespace, link, mount or process is left "
            "(kept: the host image and the llama-server build cache; "
            "`llmhost testbed down --purge-image` removes the image)"
        )
        return
    _run_demo(testbed, count)


def _run_demo(testbed: Testbed, count: int) -> None:
    from llmhost.demo import (
        DEMO_MODEL,
        INVENTORY,
        DemoFailed,
        Progress,
        ask_demo_model,
        demo_catalog,
        demo_facts,
        demo_key,
        mirror_demo_model,
        publish_demo_runtime,
        summary,
    )

    progress = Progress()
    try:
        say(progress.next())
        hosts = testbed.up(count)
        say(f"testbed: {', '.join(f'{h.name} ({h.address})' for h in hosts)}")
        say(progress.next())
        _converge(INVENTORY)
        say(progress.next())
        catalog = demo_catalog(testbed)
        os.environ["LLMHOST_MODELS_DIR"] = str(catalog)
        digest = mirror_demo_model(testbed, catalog)
        say(f"mirrored: {DEMO_MODEL} as {digest}")
        say(progress.next())
        os.environ["LLMHOST_RUNTIME_BUILDS"] = str(testbed.root / "runtime-builds.toml")
        build = publish_demo_runtime(testbed)
        say(f"llama.cpp for class cpu: {build}")
        key = demo_key(testbed)
        say(progress.next())
        _converge(INVENTORY, {"model_name": DEMO_MODEL})
        say(progress.next())
        _require_idempotent(INVENTORY, {"model_name": DEMO_MODEL})
        say(progress.next())
        for host in hosts:
            say(f"{host.name}: {ask_demo_model(testbed, host)}")
        facts = demo_facts(testbed, hosts, key)
    except DemoFailed as error:
        raise LlmhostFailure(
            f"{error}\n(after {progress.elapsed()}; the hosts stay up to look at: "
            "`llmhost testbed ssh tb1`; `llmhost demo --down` removes them)"
        ) from error
    say(f"done in {progress.elapsed()}")
    click.echo(summary(facts))


def _converge(inventory: str, data: dict[str, str] | None = None) -> None:
    from llmhost.demo import converge_hosts

    say(converge_hosts(inventory, data).summary())


def _require_idempotent(inventory: str, data: dict[str, str] | None = None) -> None:
    """Converge again and require that nothing changed."""
    from llmhost.demo import require_idempotent

    require_idempotent(inventory, data)
    say("idempotent: second converge changed 0 operations")
