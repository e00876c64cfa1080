"""The end-to-end demo: a tiny llama GGUF made here, mirrored, pulled by digest, served.

It is generated deterministically (same bytes every run), so the demo needs no
hub and its catalog entry is the same each time. The demo says where it is at each
stage (`stage_line`) and ends with what a newcomer needs to use what it built
(`summary`: the gateway, the key, a curl that works, the gate's reports,
Prometheus, how to take it all down), both pure functions of what they show.
"""

from __future__ import annotations

import http.client
import json
import shlex
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmhost import converge
from llmhost.catalog import find, model_toml
from llmhost.mirror import RegistryAccess, mirror
from llmhost.onhost.layout import STATE_FILE
from llmhost.testing.testbed import Testbed, TestbedError, TestbedHost
from llmhost.testing.testmodels import write_tiny_gguf

DEMO_MODEL = "tiny-llama"
DEMO_IDENTITY = "demo"
DEMO_PROMPT = "Hello"
INVENTORY = "inventories/testbed.py"
# What the demo does, in order: one progress line each, `[n/7 mm:ss] ...`.
STAGES = (
    "booting the test hosts",
    "converging them: base, registry, monitoring (Prometheus on the first host)",
    f"mirroring {DEMO_MODEL} to the registry",
    "building llama-server for class cpu (about 5 minutes the first time, then cached)",
    f"serving {DEMO_MODEL}: pull by digest, start blue, gate it, cut the gateway over",
    "converging again: nothing may change",
    "asking each host's gateway for a completion",
)


def stage_line(number: int, total: int, elapsed_s: float, text: str) -> str:
    """``[2/7 01:23] text...``: which stage of how many, and the time since the start."""
    minutes, seconds = divmod(int(elapsed_s), 60)
    return f"[{number}/{total} {minutes:02d}:{seconds:02d}] {text}..."


@dataclass
class Progress:
    """The demo's stages as it enters them, timed from when it started."""

    stages: tuple[str, ...] = STAGES
    started: float = field(default_factory=lambda: time.monotonic())
    done: int = 0

    def next(self) -> str:
        self.done += 1
        return stage_line(
            self.done, len(self.stages), time.monotonic() - self.started, self.stages[self.done - 1]
        )

    def elapsed(self) -> str:
        minutes, seconds = divmod(int(time.monotonic() - self.started), 60)
        return f"{minutes:02d}:{seconds:02d}"


# -- what the demo leaves running, and how to use it -------------------------------------


@dataclass(frozen=True)
class DemoHost:
    name: str
    address: str
    gateway_port: int
    gate_report: str | None  # the control machine's copy of the gate's report.html

    @property
    def url(self) -> str:
        return f"https://{self.address}:{self.gateway_port}"


@dataclass(frozen=True)
class DemoFacts:
    """Everything the closing summary shows; gathered once the demo is up."""

    hosts: tuple[DemoHost, ...]
    model: str  # the name clients send
    api_key: str
    keys_file: str
    ca_file: str
    monitoring: DemoHost  # runs Prometheus
    prometheus_port: int
    ssh: tuple[str, ...]  # ssh to the monitoring host: options, then user@address last
    inventory: str = INVENTORY


def curl_argv(facts: DemoFacts, host: DemoHost) -> list[str]:
    """A completion through ``host``'s gateway: HTTPS checked against the CA, the key."""
    body = {"model": facts.model, "prompt": DEMO_PROMPT, "max_tokens": 8, "temperature": 0}
    return [
        "curl", "--fail-with-body", "--cacert", facts.ca_file,
        "-H", f"Authorization: Bearer {facts.api_key}",
        "-H", "Content-Type: application/json",
        "-d", json.dumps(body),
        f"{host.url}/v1/completions",
    ]  # fmt: skip


def tunnel_argv(facts: DemoFacts) -> list[str]:
    """SSH that forwards 127.0.0.1:PORT here to Prometheus on the monitoring host."""
    port = facts.prometheus_port
    *options, destination = facts.ssh
    return [*options, "-N", "-L", f"{port}:127.0.0.1:{port}", destination]


def summary(facts: DemoFacts) -> str:
    """What the demo built and how to use it, as text: a pure function of ``facts``."""
    first = facts.hosts[0]
    width = max(len(h.name) for h in facts.hosts)
    lines = [
        f"The demo is up: {len(facts.hosts)} host(s), each serving {facts.model} behind its "
        "gateway (HTTPS, API key, rate limits, audit log).",
        "",
        *(f"  gateway   {host.name:<{width}}  {host.url}" for host in facts.hosts),
        f"  model     {facts.model}",
        f"  API key   {facts.api_key}  (identity `{DEMO_IDENTITY}`, in {facts.keys_file})",
        f"  CA        {facts.ca_file}",
        "",
        f"Ask {first.name} for a completion:",
        "",
        f"  {shlex.join(curl_argv(facts, first))}",
        "",
        "The gate's reports (soak and eval of the release, before its cutover):",
        "",
        *(f"  {host.name:<{width}}  {host.gate_report or 'none recorded'}" for host in facts.hosts),
        "",
        f"Prometheus runs on {facts.monitoring.name} ({facts.monitoring.address}), closed to "
        "this machine (`monitoring_ui_allow_from` is empty). Open a tunnel, then browse "
        f"http://127.0.0.1:{facts.prometheus_port}/alerts:",
        "",
        f"  {shlex.join(tunnel_argv(facts))}",
        "",
        f"A shell on a host: llmhost testbed ssh {first.name}",
        "Take it all down (every host, namespace, link, mount and process):",
        "",
        "  llmhost demo --down",
    ]
    return "\n".join(lines)


def demo_facts(testbed: Testbed, hosts: list[TestbedHost], api_key: str) -> DemoFacts:
    """The facts of the running demo: the ports its data gives, each host's last gate."""
    from roles._common.ports import ports_in_use

    found = []
    ports: dict[str, int] = {}
    for index, host in enumerate(hosts):
        data = {**testbed.inventory_data(host), "model_name": DEMO_MODEL}
        # inventories/testbed.py: the first host is the `monitoring` group (Prometheus)
        ports = ports_in_use(host.name, data, ("monitoring",) if index == 0 else ()) | ports
        state = json.loads(testbed.ssh(host, f"cat {STATE_FILE}"))
        control = (state.get("last_gate") or {}).get("control_report")
        found.append(
            DemoHost(
                name=host.name,
                address=host.address,
                gateway_port=ports_in_use(host.name, data, ())["gateway_port"],
                gate_report=f"{control}/report.html" if control else None,
            )
        )
    secrets = testbed.root / "secrets"
    return DemoFacts(
        hosts=tuple(found),
        model=DEMO_MODEL,
        api_key=api_key,
        keys_file=str(secrets / "api-keys.json"),
        ca_file=str(secrets / "ca" / "ca.crt"),
        monitoring=found[0],
        prometheus_port=ports["monitoring_prometheus_port"],
        ssh=tuple(testbed.ssh_argv(hosts[0])),
    )


class DemoFailed(Exception):
    """A converge of the demo's hosts failed, or its repeat changed something."""


def converge_hosts(inventory: str, data: dict[str, str] | None = None) -> converge.RunResult:
    """Converge the demo's hosts, pyinfra's output streamed."""
    result = converge.run(inventory, data=data, stream_stderr=True)
    if result.returncode != 0 or result.report is None or result.errors:
        raise DemoFailed(f"converge failed (exit {result.returncode})")
    return result


def require_idempotent(inventory: str, data: dict[str, str] | None = None) -> None:
    """Converge again, quietly, and fail unless nothing changed: the demo proves idempotence."""
    second = converge.run(inventory, data=data, stream_stderr=False)
    if second.returncode != 0 or second.report is None or second.errors:
        raise DemoFailed(
            f"second converge failed (exit {second.returncode}):\n{second.stderr[-3000:]}"
        )
    if second.changes:
        changed = "\n  ".join(second.changed_operations())
        raise DemoFailed(f"second converge was not idempotent:\n  {changed}")


def demo_catalog(testbed: Testbed) -> Path:
    """The demo's catalog directory, with the model file written (unmirrored) if new."""
    root = testbed.root / "demo"
    weights = root / "weights" / f"{DEMO_MODEL}.gguf"
    if not weights.exists():
        write_tiny_gguf(weights)
    catalog = root / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    entry = catalog / f"{DEMO_MODEL}.toml"
    if not entry.exists():
        source = {"kind": "local", "path": str(weights.parent)}
        entry.write_text(model_toml(DEMO_MODEL, "gguf", source, [(weights.name, weights)]))
    return catalog


def mirror_demo_model(testbed: Testbed, catalog: Path) -> str:
    """Push the demo model to the first testbed host's registry; returns its digest."""
    registry = f"{testbed.hosts()[0].address}:5000"
    access = RegistryAccess.from_secrets(registry, testbed.root / "secrets")
    return mirror(find(DEMO_MODEL, catalog), access)


def publish_demo_runtime(testbed: Testbed) -> str:
    """Build llama-server for class cpu (cached) and push it to the first host's registry."""
    from llmhost.hardware import load_classes
    from llmhost.runtimes import build_llama_cpp, load_sources, publish_build

    source = load_sources().llama_cpp
    registry = f"{testbed.hosts()[0].address}:5000"
    access = RegistryAccess.from_secrets(registry, testbed.root / "secrets")
    artifact = build_llama_cpp(source, load_classes()["cpu"], Path.home() / ".cache" / "llmhost")
    return publish_build(artifact, "cpu", source.repository, [access]).digest


def demo_key(testbed: Testbed) -> str:
    """The demo identity's API key (made once, kept in the testbed's secrets)."""
    from llmhost.secrets import add_api_key, api_keys

    secrets = testbed.root / "secrets"
    return api_keys(secrets).get(DEMO_IDENTITY) or add_api_key(secrets, DEMO_IDENTITY)


def ask_demo_model(testbed: Testbed, host: TestbedHost) -> str:
    """One completion through the host's gateway: HTTPS, the demo's key, the active colour."""
    context = ssl.create_default_context(cafile=str(testbed.root / "secrets" / "ca" / "ca.crt"))
    connection = http.client.HTTPSConnection(host.address, 8000, context=context, timeout=60)
    body = json.dumps({"prompt": "Hello", "max_tokens": 8, "temperature": 0})
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {demo_key(testbed)}"}
    connection.request("POST", "/v1/completions", body, headers)
    response = connection.getresponse()
    answer = json.loads(response.read())
    if response.status != 200:
        raise TestbedError(f"{host.name}: the gateway answered {response.status}: {answer}")
    state = json.loads(testbed.ssh(host, f"cat {STATE_FILE}"))
    tokens, text = answer["usage"]["completion_tokens"], answer["choices"][0]["text"]
    return (
        f"https://{host.address}:8000 (active colour {state['active']}) generated "
        f"{tokens} tokens: {text!r}"
    )
