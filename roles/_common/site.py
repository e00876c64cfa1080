"""Every role's offline check, for every host, in the order deploy/site.py runs the roles.

This is what `llmhost check` and `llmhost deploy` run before anything connects:
each role's ``check()`` (data, the catalog, the secrets on this machine; never a
fact) inside the same pyinfra contexts a deploy gives it, on the inventory pyinfra
itself loaded. Which roles a host gets follows deploy/site.py (a test holds the two
in step): a problem a role would refuse at deploy time is found here first.

The residency audit is part of it: each role's ``endpoints()`` (what it will call for
the host), every endpoint located (``llmhost.endpoints``); one outside the policy, or
nowhere declared, is a problem like any other, and deploy/site.py refuses it too
(`require_residency`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmhost.endpoints import (
    Audit,
    Call,
    Declarations,
    Endpoint,
    HostContext,
    audit_calls,
    known_host,
)
from llmhost.errors import ConfigError


@dataclass(frozen=True)
class Stage:
    role: str
    applies: Callable[[Any], bool]  # given the pyinfra Host
    check: Callable[[], object]  # the role's check(), run with the host in context
    warnings: Callable[[], list[str]] = list  # allowed, but worth a word before a deploy


def serves_a_model(host: Any) -> bool:
    return bool(host.data.get("model_name"))


def stages() -> list[Stage]:
    """The roles of deploy/site.py, in its order, each with when it runs and its check."""
    from roles import base, edge, gate, gateway, model, monitoring, nvidia, registry, runtime

    everyone: Callable[[Any], bool] = lambda host: True  # noqa: E731
    return [
        Stage("base", everyone, base.check),
        Stage("nvidia", everyone, nvidia.check),  # a noop on classes without GPUs
        Stage("registry", lambda host: "registry" in host.groups, registry.check),
        Stage("monitoring", everyone, monitoring.check, monitoring.warnings),
        Stage("edge", lambda host: "edge" in host.groups, edge.check),
        Stage("gateway", serves_a_model, gateway.check),
        Stage("model", serves_a_model, model.check),
        Stage("runtime", serves_a_model, runtime.check),
        Stage("gate", serves_a_model, gate.check, gate.warnings),
    ]


@dataclass
class SiteCheck:
    problems: list[ConfigError]  # each a line: host, key, what is wrong, the fix
    warnings: list[str]


# -- the residency audit: what every role will call for a host, and where it is ------------


def endpoint_calls(target: Any) -> list[Call]:
    """What the roles ``target`` gets will call for it, in the order of deploy/site.py.

    A role lists them in ``endpoints()`` in its package (a role without one calls
    nothing outside its host); run with the host in context, like its check. A role
    that comes later (the edge role's fallbacks, kind `fallback`) adds its own.
    """
    calls: list[Call] = []
    for stage in stages():
        listed = getattr(importlib.import_module(f"roles.{stage.role}"), "endpoints", None)
        if listed is not None and stage.applies(target):
            calls += listed()
    return calls


def host_context(target: Any, inventory: Any) -> HostContext:
    """What classifying ``target``'s endpoints needs, from the inventory, no host contacted."""
    from llmhost.residency import ResidencySettings
    from llmhost.settings import from_data
    from roles.base import data_sources

    settings = from_data(ResidencySettings, target.data, target.name)
    return HostContext(
        name=target.name,
        region=target.data.get("region"),
        allowed=settings.residency_allowed_regions,
        declarations=Declarations.from_places(target.name, data_sources().places()),
        known=tuple(known_host(member.name, member.data) for member in inventory),
    )


def audit_host() -> list[Endpoint]:
    """The current host's endpoints, each with its region and whether the policy allows it."""
    from pyinfra import host, inventory

    calls = endpoint_calls(host)
    return audit_calls(calls, host_context(host, inventory))


def audit_site(inventory: Any, state: Any, names: list[str]) -> Audit:
    """Every endpoint of each host in ``names``, in inventory order (ConfigError: bad data)."""
    from pyinfra.context import ctx_host, ctx_inventory, ctx_state

    found = Audit([])
    for name in names:
        target = inventory.get_host(name)
        with ctx_state.use(state), ctx_inventory.use(inventory), ctx_host.use(target):
            found.endpoints += audit_host()
    return found


def require_residency() -> None:
    """For deploy/site.py: refuse the host (before anything runs) when its audit fails.

    The host's own data is checked first (the base role's check, offline), so a malformed
    proxy or a missing region is said as such, not as an endpoint nobody located.
    """
    from roles.base import check

    check()
    # An endpoint that is another inventory host with a bad region: that host's own
    # preflight refuses it, naming it; this one need not fail for it first.
    failures = [e for e in audit_host() if not e.ok and e.owner is None]
    if failures:
        first = failures[0].error()
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ConfigError(
            first.problem + more,
            key=first.key,
            fix=f"{first.fix}; `llmhost residency audit INVENTORY` lists every endpoint",
            host=first.host,
        )


def check_site(inventory: Any, state: Any, names: list[str]) -> SiteCheck:
    """Run every applicable role's check for each host in ``names``, then its residency audit.

    Each role stops at its first problem, so a host shows at most one per role; a
    problem several roles find (they read some keys in common) is reported once. A
    host whose own data the base role refused is not audited: what it would call is
    not known yet.
    """
    from pyinfra.context import ctx_host, ctx_inventory, ctx_state

    found = SiteCheck([], [])
    for name in names:
        target = inventory.get_host(name)
        seen: set[str] = set()
        with ctx_state.use(state), ctx_inventory.use(inventory), ctx_host.use(target):
            base_failed = False
            for stage in stages():
                if not stage.applies(target):
                    continue
                try:
                    stage.check()
                    found.warnings += stage.warnings()
                except ConfigError as error:
                    base_failed = base_failed or stage.role == "base"
                    if str(error) not in seen:
                        seen.add(str(error))
                        found.problems.append(error)
            if base_failed:
                continue
            try:
                audited = [e.error() for e in audit_host() if not e.ok and e.owner is None]
            except ConfigError as unreadable:  # data a role could not read: said above, or here
                audited = [unreadable]
            for problem in audited:
                if str(problem) not in seen:
                    seen.add(str(problem))
                    found.problems.append(problem)
    return found
