"""The gateway's cutover: point it at the colour that runs the wanted release.

preflight  the gate's plan (and in it the runtime's: which colour runs, or is being
           given, the wanted release; whether releases must pass a gate) and the
           gateway's current upstream colour
service    when they differ: on the host, one step that cannot half-happen
           (`runtimectl cutover`): the colour answers /health and a one-token
           completion, the upstream include is replaced, `nginx -t`, a graceful reload
           (in-flight requests finish on the old colour), state.json records the switch,
           and the old colour stays warm for `gateway_rollback_window_s`, then stops.
           Any failure puts the previous include back; the active colour keeps serving.
           Behind an edge the host leaves the edge's pool for the switch (its /healthz
           answers 503) and rejoins before the next host, which waits its turn.

It runs last in deploy/site.py, after the runtime has staged the idle colour and the gate
has passed it; with the gate enabled, the switch itself refuses a release whose verdict
in state.json is not a pass (`--require-gate`), however the cutover was started.
It acts on the gate's plan, the stage just before it, and on nothing further up.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import FileContents
from pyinfra.operations import server

from llmhost.onhost.layout import GATEWAY_DRAIN_FLAG, GATEWAY_UPSTREAM
from llmhost.onhost.runtimectl import colour_in
from llmhost.settings import from_data
from roles._common.edges import edges_in_front_of
from roles._common.onhost import runtimectl
from roles._common.scrapers import cutover_wait_s, watchers
from roles.gate import preflight as gate_plan
from roles.gateway.defaults import GatewaySettings


@deploy("llmhost cutover")
def cutover() -> None:
    gate = gate_plan()
    plan = gate.runtime
    settings = from_data(GatewaySettings, host.data, host.name)
    current = colour_in("\n".join(host.get_fact(FileContents, path=GATEWAY_UPSTREAM) or []))
    if plan.wanted_on == plan.active and current == plan.active:
        host.noop(f"the gateway already sends to {plan.active} (release {plan.release.id})")
        return
    ports = ",".join(f"{c}={p}" for c, p in sorted(plan.settings.runtime_ports.items()))
    gated = gate.settings.gate_enabled
    drain = drain_arguments()
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
                GATEWAY_UPSTREAM,
                "--ready-timeout",
                str(plan.settings.runtime_ready_timeout_s),
                "--rollback-window",
                str(settings.gateway_rollback_window_s),
                *(["--require-gate"] if gated else []),
                *watched_arguments(),
                *drain,
            )
        ],
        # Behind an edge, one host at a time leaves its pool: the others keep serving.
        _serial=bool(drain),
    )


def drain_arguments() -> list[str]:
    """Behind an edge, the host leaves its pool for the switch and rejoins before the next.

    The waits are the slowest edge's: checks between leaving (or rejoining) and being
    seen to, plus a margin.
    """
    edges = edges_in_front_of(host.name)
    if not edges:
        return []
    leave = max(settings.drain_wait_s() for settings in edges)
    rejoin = max(settings.rejoin_wait_s() for settings in edges)
    return [
        "--drain-flag",
        GATEWAY_DRAIN_FLAG,
        "--drain-wait",
        f"{leave:g}",
        "--rejoin-wait",
        f"{rejoin:g}",
    ]


def watched_arguments() -> list[str]:
    """Each monitoring host's Prometheus must watch this host before it takes new traffic.

    An inventory without monitoring hosts cuts over unwatched (`llmhost check` warns).
    """
    urls = watchers()
    if not urls:
        return []
    wait = str(cutover_wait_s(host.name, host.data))
    watched = (part for url in urls for part in ("--watched-by", url))
    return [*watched, "--host", host.name, "--watched-timeout", wait]
