"""`llmhost bootstrap`: an inventory's hosts from blank to serving behind the gate, in one go.

A first install has an order that a plain deploy cannot follow alone: a model or an engine
build can only be pushed to a registry that runs, and a serving host can only pull what
was pushed. So the bootstrap runs the steps a person would otherwise type, in order:

1. check the inventory offline as if no host served a model yet (what serving needs, the
   model's digest and the engine's build, comes in steps 2 and 3), then converge the
   registry hosts alone (``deploy/registry.py``: base, the registry; a host that serves
   already is left serving);
2. mirror each model a serving host names: ``llmhost models mirror NAME --inventory INV``;
3. build llama-server for each class a llama.cpp host has: ``llmhost runtimes build
   --class CLASS --inventory INV``; with a vLLM host, push its lock's wheels:
   ``llmhost runtimes publish-vllm --inventory INV``;
4. ``deploy/site.py`` in full, checked first: monitoring, the model pulled by digest,
   the engine, the gate (soak and eval), the cutover.

Each step is idempotent, so a bootstrap that failed is run again as it is. On a single
box the inventory's one host is ``@local`` and the bootstrap runs on the box itself.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

# Step 1 checks the inventory with this data: no model is mirrored yet.
WITHOUT_MODELS = {"model_name": ""}
REGISTRY_DEPLOY = "deploy/registry.py"


@dataclass(frozen=True)
class ServingHost:
    name: str
    model: str
    engine: str
    hardware: str
    gateway_url: str


@dataclass(frozen=True)
class Plan:
    """What the inventory's serving hosts need pushed before they can serve."""

    serving: tuple[ServingHost, ...]

    @property
    def models(self) -> list[str]:
        return sorted({host.model for host in self.serving})

    @property
    def llama_cpp_classes(self) -> list[str]:
        return sorted({host.hardware for host in self.serving if host.engine == "llama.cpp"})

    @property
    def runs_vllm(self) -> bool:
        return any(host.engine == "vllm" for host in self.serving)


def plan(loaded: Any) -> Plan:
    """The serving hosts of an inventory (``llmhost.inventory.load_inventory``) that name a
    model, with their engine, class and gateway URL."""
    from llmhost.hardware import check_hardware, load_classes
    from llmhost.settings import from_data
    from roles._common.checks import join_host_port
    from roles._common.ports import ports_in_use
    from roles._common.scrapers import address_of
    from roles._common.site import serves_a_model
    from roles.runtime.defaults import RuntimeSettings

    found = []
    for target in loaded.inventory:
        if "serving" not in target.groups or not serves_a_model(target):
            continue
        runtime = from_data(RuntimeSettings, target.data, target.name)
        hardware = check_hardware(target.data.get("hardware"), load_classes(), target.name)
        # What the gateway's certificate names (checked by the gateway role beforehand).
        names = target.data.get("gateway_server_names") or [address_of(target.name, target.data)]
        port = ports_in_use(target.name, target.data, target.groups)["gateway_port"]
        found.append(
            ServingHost(
                name=target.name,
                model=str(target.data.get("model_name")),
                engine=runtime.runtime_engine or hardware.runtime,
                hardware=hardware.name,
                gateway_url=f"https://{join_host_port(names[0], port)}",
            )
        )
    return Plan(tuple(found))


def llmhost_command(*args: str) -> list[str]:
    """``llmhost ARGS`` as this interpreter runs it (the checkout's own CLI)."""
    return [sys.executable, "-m", "llmhost.cli", *args]


def push_commands(found: Plan, inventory: str) -> list[tuple[str, list[str]]]:
    """(what it does, argv) for steps 2 and 3: each model mirrored, each build pushed."""
    commands = [
        (f"mirroring {name}", llmhost_command("models", "mirror", name, "--inventory", inventory))
        for name in found.models
    ]
    commands += [
        (
            f"building llama-server for class {name} (minutes the first time, then cached)",
            llmhost_command("runtimes", "build", "--class", name, "--inventory", inventory),
        )
        for name in found.llama_cpp_classes
    ]
    if found.runs_vllm:
        commands.append(
            (
                "publishing vLLM's wheels (its lock's, by their hashes)",
                llmhost_command("runtimes", "publish-vllm", "--inventory", inventory),
            )
        )
    return commands


def summary(found: Plan, inventory: str, secrets: str) -> str:
    """What the bootstrap leaves serving, and how to call it."""
    lines = [f"Bootstrapped: {len(found.serving)} serving host(s).", ""]
    lines += [f"  {h.name}  {h.gateway_url}  {h.model} on {h.engine}" for h in found.serving]
    first = found.serving[0] if found.serving else None
    lines += [
        "",
        f"  CA       {secrets}/ca/ca.crt",
        f"  API keys llmhost keys list --secrets-dir {secrets}  (add one: llmhost keys add NAME)",
        f"  status   llmhost status {inventory}",
    ]
    if first:
        body = f'{{"model": "{first.model}", "prompt": "Hello", "max_tokens": 8, "temperature": 0}}'
        lines += [
            "",
            "Ask it (with a key in $KEY):",
            "",
            f'  curl --fail-with-body --cacert {secrets}/ca/ca.crt -H "Authorization: Bearer '
            f"$KEY\" -H 'Content-Type: application/json' -d '{body}' "
            f"{first.gateway_url}/v1/completions",
        ]
    return "\n".join(lines)
