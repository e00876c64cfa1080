"""Every role's offline check, for every host, in the order deploy/site.py runs the roles.

This is what `llmhost check` and `llmhost deploy` run before anything connects:
each role's ``check()`` (data, the catalog, the secrets on this machine; never a
fact) inside the same pyinfra contexts a deploy gives it, on the inventory pyinfra
itself loaded. Which roles a host gets follows deploy/site.py (a test holds the two
in step): a problem a role would refuse at deploy time is found here first.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    from roles import base, gate, gateway, model, monitoring, nvidia, registry, runtime

    everyone: Callable[[Any], bool] = lambda host: True  # noqa: E731
    return [
        Stage("base", everyone, base.check),
        Stage("nvidia", everyone, nvidia.check),  # a noop on classes without GPUs
        Stage("registry", lambda host: "registry" in host.groups, registry.check),
        Stage("monitoring", everyone, monitoring.check, monitoring.warnings),
        Stage("gateway", serves_a_model, gateway.check),
        Stage("model", serves_a_model, model.check),
        Stage("runtime", serves_a_model, runtime.check),
        Stage("gate", serves_a_model, gate.check, gate.warnings),
    ]


@dataclass
class SiteCheck:
    problems: list[ConfigError]  # each a line: host, key, what is wrong, the fix
    warnings: list[str]


def check_site(inventory: Any, state: Any, names: list[str]) -> SiteCheck:
    """Run every applicable role's check for each host in ``names``.

    Each role stops at its first problem, so a host shows at most one per role; a
    problem several roles find (they read some keys in common) is reported once.
    """
    from pyinfra.context import ctx_host, ctx_inventory, ctx_state

    found = SiteCheck([], [])
    for name in names:
        target = inventory.get_host(name)
        seen: set[str] = set()
        with ctx_state.use(state), ctx_inventory.use(inventory), ctx_host.use(target):
            for stage in stages():
                if not stage.applies(target):
                    continue
                try:
                    stage.check()
                    found.warnings += stage.warnings()
                except ConfigError as error:
                    if str(error) not in seen:
                        seen.add(str(error))
                        found.problems.append(error)
    return found
