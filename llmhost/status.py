"""`llmhost status`: ask each serving host, over pyinfra's own connections, what it serves."""

from __future__ import annotations

import json
import logging
from typing import Any

from llmhost.errors import ConfigError


def collect(inventory: str, limit: tuple[str, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
    """(host, status) for every host with a model; unreachable hosts carry an error."""
    from pyinfra.api.connect import connect_all
    from pyinfra.context import ctx_host, ctx_state

    from llmhost.inventory import load_inventory

    logging.getLogger("pyinfra").setLevel(logging.CRITICAL)
    found = load_inventory(inventory)
    loaded, state = found.inventory, found.state
    chosen = [
        h
        for h in loaded
        if h.data.get("model_name")
        and (not limit or h.name in limit or any(g in limit for g in h.groups))
    ]
    if not chosen:
        raise ConfigError(
            f"no host in {inventory} serves a model",
            key="model_name",
            fix="set model_name on the serving hosts",
        )
    with ctx_state.use(state):
        connect_all(state)
    rows = []
    for host in chosen:
        if host not in state.activated_hosts:
            rows.append((host.name, {"error": "unreachable over SSH"}))
            continue
        command = status_command(host.name, host.data)
        with ctx_state.use(state), ctx_host.use(host):
            ok, output = host.run_shell_command(command)
        text = "\n".join(output.stdout_lines)
        try:
            rows.append((host.name, json.loads(text) if ok else {"error": output.stderr}))
        except ValueError:
            rows.append((host.name, {"error": f"unexpected answer: {text[:200]}"}))
    return rows


def status_command(name: str, data: Any) -> str:
    """The command that prints serving host ``name``'s status as JSON (runtimectl's)."""
    from llmhost.onhost.layout import GATEWAY_UPSTREAM
    from llmhost.settings import from_data
    from roles._common.onhost import runtimectl
    from roles.runtime.defaults import RuntimeSettings

    ports = from_data(RuntimeSettings, data, name).runtime_ports
    pairs = ",".join(f"{c}={p}" for c, p in sorted(ports.items()))
    return runtimectl("status", "--upstream", GATEWAY_UPSTREAM, "--ports", pairs)
