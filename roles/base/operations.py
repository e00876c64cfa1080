"""Operations of the base role that later roles reuse: firewall rules and readiness waits.

Each function adds pyinfra operations for the current host; files are only
written when their content, owner or mode differ, and services only reload
when a file they read did change.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from pyinfra.api.operation import OperationMeta
from pyinfra.operations import server

from llmhost.render import put_template
from roles.base.defaults import FIREWALL_RULES_DIR, FIREWALL_UNIT


def split_sources(sources: Sequence[str]) -> tuple[list[str], list[str]]:
    """Source networks by family, normalised, so nft gets one rule per family."""
    ipv4: list[str] = []
    ipv6: list[str] = []
    for source in sources:
        network = ipaddress.ip_network(source, strict=False)
        (ipv4 if network.version == 4 else ipv6).append(str(network))
    return ipv4, ipv6


def firewall_rules(
    role: str, purpose: str, name: str, ports: Sequence[int], sources: Sequence[str] = ()
) -> OperationMeta:
    """Write an allow-rule file for ``ports`` (from ``sources``, or anywhere when empty).

    Returns the file operation; pass it to ``reload_firewall`` once a role has
    written all of its rule files.
    """
    ipv4, ipv6 = split_sources(sources)
    return put_template(
        name=f"Firewall: allow TCP {', '.join(map(str, ports))} ({purpose})",
        path="base/firewall-allow.nft.j2",
        dest=f"{FIREWALL_RULES_DIR}/{name}.nft",
        mode="0640",
        role=role,
        purpose=purpose,
        ports=sorted(set(ports)),
        ipv4_sources=ipv4,
        ipv6_sources=ipv6,
    )


def reload_firewall(*changed: OperationMeta) -> None:
    """Reload the llmhost table when any of ``changed`` wrote something.

    ``try-reload-or-restart`` is a no-op while the firewall is disabled, and the
    unit checks the rule set (``nft --check``) before it replaces the live table.
    """
    server.shell(
        name="Firewall: apply changed rules",
        commands=[f"systemctl try-reload-or-restart {FIREWALL_UNIT}"],
        _if=lambda: any(op.did_change() for op in changed),
    )


def wait_for_port(port: int, unit: str, timeout: int = 30) -> str:
    """A command that waits for a TCP listener on ``port``, else prints ``unit``'s log and fails."""
    return (
        f"for _ in $(seq {timeout * 5}); do "
        f"ss -ltnH 'sport = :{port}' | grep -q . && exit 0; "
        f"systemctl is-failed --quiet {unit} && break; sleep 0.2; done; "
        f"echo '{unit} is not listening on port {port}; its last log lines:' >&2; "
        f"journalctl -u {unit} -n 20 --no-pager >&2; exit 1"
    )
