"""`llmhost residency`: where the configured stack sends anything, checked against the policy."""

from __future__ import annotations

import json
import sys

import click

limit_option = click.option(
    "--limit", multiple=True, help="Only hosts or groups matching this (repeatable)."
)


@click.group()
def residency() -> None:
    """UK/EU data residency: the regions of hosts, and of every endpoint they call."""


@residency.command("audit")
@click.argument("inventory", type=click.Path(dir_okay=False))
@limit_option
@click.option(
    "--json", "as_json", is_flag=True, help='Print {"ok", "endpoints", "failures"} as JSON.'
)
def audit(inventory: str, limit: tuple[str, ...], as_json: bool) -> None:
    """List every endpoint INVENTORY's hosts will call, with its region; fail outside policy.

    \b
    Per host: package mirrors (or the distribution's archive), the egress proxy,
    NTP servers, NVIDIA's repository on GPU classes and Grafana's on monitoring
    hosts (or their mirrors), registries (models and runtime builds: primary and
    fallback), the model and runtime sources the control machine fetches for the
    host (the Hugging Face hub, the llama.cpp source, PyPI), the alert webhook,
    the monitoring hosts' Prometheus. An endpoint takes the region of the inventory
    host it is (loopback: the calling host), else the one `residency_endpoints`
    declares for its name, domain, address or network. No region, or one outside
    `residency_allowed_regions`, fails; `llmhost check` and `llmhost deploy` refuse
    the same. No host is contacted and nothing is resolved.
    Exit 0 every endpoint allowed, 1 some are not, 2 the inventory cannot be read.
    """
    from llmhost.inventory import load_inventory
    from roles._common.site import audit_site

    loaded = load_inventory(inventory, limit)
    found = audit_site(loaded.inventory, loaded.state, [h.name for h in loaded.hosts])
    if as_json:
        click.echo(json.dumps(found.as_json(), indent=2))
    else:
        regions = {h.name: h.data.get("region") for h in loaded.hosts}
        click.echo(found.table(regions))
    if not found.ok:
        sys.exit(1)
