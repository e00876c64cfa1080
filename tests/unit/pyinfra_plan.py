"""Plan a deploy for one fake host whose facts are given, without connecting anywhere.

pyinfra operations decide their commands from facts at prepare time, so a role
can be tested the way pyinfra tests its own operations: given these facts,
expect these commands (or none: a noop). Facts not given take sensible values
for a fresh Debian 12 host: nothing installed, no files, no units.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import Any

from pyinfra.api import Config, Inventory, State
from pyinfra.api.deploy import add_deploy
from pyinfra.api.host import Host
from pyinfra.context import ctx_host, ctx_inventory, ctx_state

# Roles make a CA and credentials on first use: keep them out of the repository.
SECRETS_DIR = tempfile.mkdtemp(prefix="llmhost-unit-secrets-")

FRESH_DEBIAN_12: dict[str, Any] = {
    "Os": "Linux",
    "Which": lambda command, **_: f"/usr/bin/{command}",
    "Users": {},
    "Groups": [],
    "DebPackages": {},
    "SystemdStatus": {},
    "SystemdEnabled": {},
    "Platform": {
        "pid1": "systemd",
        "os_id": "debian",
        "os_version": "12",
        "os_codename": "bookworm",
        "container": "none",
        "ssh_client": "192.0.2.10",
        "sshd_includes_dropins": True,
    },
}


def plan(
    deploy: Callable[[], None],
    data: dict[str, Any],
    facts: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    groups: list[str] | None = None,
) -> dict[str, list[str]]:
    """Operation name (without the deploy's prefix) -> the commands it would run, in order.

    An empty list is a noop. Conditional operations (``_if``) list their commands.
    """
    known = {**FRESH_DEBIAN_12, **(facts or {})}
    data = {"secrets_dir": SECRETS_DIR, **data}

    def get_fact(self: Host, cls: type, *args: Any, **kwargs: Any) -> Any:
        value = known.get(cls.__name__, cls.default())  # type: ignore[attr-defined]
        return value(**kwargs) if callable(value) else value

    original = Host.get_fact
    Host.get_fact = get_fact  # type: ignore[method-assign]
    try:
        inventory = Inventory(
            ([("host1", data)], {}), **{group: (["host1"], {}) for group in groups or []}
        )
        state = State(inventory, Config(**(config or {})))
        host = inventory.get_host("host1")
        with ctx_inventory.use(inventory):
            add_deploy(state, deploy, host=host)
        planned: dict[str, list[str]] = {}
        with ctx_state.use(state), ctx_host.use(host):
            for op_hash in state.get_op_order():
                # "llmhost base | chrony: time sources" -> "chrony: time sources"
                names = [n.split(" | ", 1)[-1] for n in state.op_meta[op_hash].names]
                name = ", ".join(sorted(names))
                op_data = state.get_op_data_for_host(host, op_hash)
                planned[name] = [str(command) for command in op_data.command_generator()]
        return planned
    finally:
        Host.get_fact = original  # type: ignore[method-assign]
