"""The gateway's rollback: back to the previous colour, restarted first if it is cold.

There is nothing to plan: which colour is previous, and whether it is warm, is
decided on the host at the moment of the switch by `runtimectl rollback`, which
refuses (and switches nothing) when the previous colour never ran a release or does
not become ready.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import server

from llmhost.onhost.layout import GATEWAY_UPSTREAM
from llmhost.settings import from_data
from roles._common.onhost import runtimectl
from roles.gateway.defaults import GatewaySettings
from roles.runtime.defaults import RuntimeSettings


@deploy("llmhost rollback")
def rollback() -> None:
    runtime = from_data(RuntimeSettings, host.data, host.name)
    gateway = from_data(GatewaySettings, host.data, host.name)
    ports = ",".join(f"{c}={p}" for c, p in sorted(runtime.runtime_ports.items()))
    server.shell(
        name="Rollback: gateway to the previous colour",
        commands=[
            runtimectl(
                "rollback",
                "--ports",
                ports,
                "--upstream",
                GATEWAY_UPSTREAM,
                "--ready-timeout",
                str(runtime.runtime_ready_timeout_s),
                "--rollback-window",
                str(gateway.gateway_rollback_window_s),
            )
        ],
    )
