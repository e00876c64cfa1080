"""The end-to-end demo: a tiny llama GGUF made here, mirrored, pulled by digest, served.

It is generated deterministically (same bytes every run), so the demo needs no
hub and its catalog entry is the same each time.
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path

from llmhost import converge
from llmhost.catalog import find, model_toml
from llmhost.mirror import RegistryAccess, mirror
from llmhost.onhost.layout import STATE_FILE
from llmhost.testing.testbed import Testbed, TestbedError, TestbedHost
from llmhost.testing.testmodels import write_tiny_gguf

DEMO_MODEL = "tiny-llama"


class DemoFailed(Exception):
    """A converge of the demo's hosts failed, or its repeat changed something."""


def converge_hosts(inventory: str, data: dict[str, str] | None = None) -> int:
    """Converge the demo's hosts, pyinfra's output streamed; the operations that changed."""
    result = converge.run(inventory, data=data, stream_stderr=True)
    if result.returncode != 0 or result.report is None or result.errors:
        raise DemoFailed(f"converge failed (exit {result.returncode})")
    return result.changes


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
    return api_keys(secrets).get("demo") or add_api_key(secrets, "demo")


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
