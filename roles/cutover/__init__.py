"""Role cutover: point the gateway at the colour that runs the wanted release.

preflight  the runtime role's plan (which colour runs, or is being given, the wanted
           release) and the gateway's current upstream colour
service    when they differ: on the host, one step that cannot half-happen
           (`runtimectl.py cutover`): the colour answers /health and a one-token
           completion, the upstream include is replaced, `nginx -t`, a graceful reload
           (in-flight requests finish on the old colour), state.json records the switch,
           and the old colour stays warm for `gateway_rollback_window_s`, then stops.
           Any failure puts the previous include back; the active colour keeps serving.

It runs last in deploy/site.py, after the runtime has staged the idle colour and the gate
has passed it; with the gate enabled, the switch itself refuses a release whose verdict
in state.json is not a pass (`--require-gate`), however the cutover was started.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FileContents
from pyinfra.operations import server

from llmhost.runtimectl import colour_in
from llmhost.settings import from_data
from roles.gate.defaults import GateSettings
from roles.gateway.defaults import UPSTREAM, GatewaySettings
from roles.runtime import preflight as runtime_plan
from roles.runtime.operations import runtimectl


@deploy("llmhost cutover")
def cutover() -> None:
    plan = runtime_plan()
    settings = from_data(GatewaySettings, host.data, host.name)
    current = colour_in("\n".join(host.get_fact(FileContents, path=UPSTREAM) or []))
    if plan.wanted_on == plan.active and current == plan.active:
        host.noop(f"the gateway already sends to {plan.active} (release {plan.release.id})")
        return
    ports = ",".join(f"{c}={p}" for c, p in sorted(plan.settings.runtime_ports.items()))
    gated = from_data(GateSettings, host.data, host.name).gate_enabled
    server.shell(
        name=f"Cutover: gateway to {plan.wanted_on} (release {plan.release.id})",
        commands=[
            runtimectl(
                "cutover",
                "--to",
                plan.wanted_on,
                "--ports",
                ports,
                "--upstream",
                UPSTREAM,
                "--ready-timeout",
                str(plan.settings.runtime_ready_timeout_s),
                "--rollback-window",
                str(settings.gateway_rollback_window_s),
                *(["--require-gate"] if gated else []),
            )
        ],
    )
