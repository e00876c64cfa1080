"""The disaster-recovery rebuild: a blank host converged from the repository and the registry,
then proven equal to a twin that was never destroyed.

Three questions, each answered before or after the converge:

- **is everything the host runs pinned?** The model by its OCI digest, the engine by its
  build digest (llama.cpp) or hashed lock (vLLM), the Debian packages by a package lock
  taken from the twin (``base_package_lock``, see ``llmhost.packagelock``); the site
  check refuses a host whose model or engine is not, the rebuild one whose packages are
  not (unless told to take the archive's newest).
- **what does the rebuild still need from outside?** Every host-side call of the residency
  audit that fetches software or data and is neither an inventory host nor a configured
  mirror: the egress proxy, PyPI for vLLM until its wheels are published to the registry,
  a vendor repository without its mirror.
- **is the result the twin's?** The host-side ``fingerprint`` tool (package versions, the
  hash, mode and owner of every file under the managed roots, the active release and its
  engine binary's digest) on both, with each host's own name and address (and
  ``rebuild_host_values``) replaced by placeholders, compared line by line.
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from llmhost.endpoints import (
    EGRESS_PROXY,
    GRAFANA_REPOSITORY,
    HOST_SIDE,
    MODEL_SOURCE,
    NVIDIA_REPOSITORY,
    PACKAGE_MIRROR,
    REGISTRY,
    RUNTIME_SOURCE,
    Endpoint,
)
from llmhost.errors import ConfigError
from llmhost.settings import from_data, setting

# Calls that fetch software or data: what a host without egress must get from inside.
FETCHING_KINDS = (
    EGRESS_PROXY,
    PACKAGE_MIRROR,
    REGISTRY,
    MODEL_SOURCE,
    RUNTIME_SOURCE,
    GRAFANA_REPOSITORY,
    NVIDIA_REPOSITORY,
)
# Settings that point a host at an internal mirror: set, the endpoint is inside.
MIRROR_KEYS = (
    "base_apt_mirror",
    "base_apt_security_mirror",
    "nvidia_apt_mirror",
    "monitoring_grafana_apt_mirror",
)


@dataclass(frozen=True)
class RebuildSettings:
    rebuild_host_values: dict[str, str] = setting(
        {},
        "Values that differ between a host and its twin by design (a per-rack proxy or mirror "
        "address), as `{name: value}`: replaced by `{name}` in the host's fingerprint, like its "
        "own name and `ssh_hostname` always are, so `llmhost rebuild` compares the rest",
    )


def identity(name: str, data: Any) -> dict[str, str]:
    """The values that are this host's own, by placeholder name."""
    settings = from_data(RebuildSettings, data, name)
    values = {"host": name, "address": str(data.get("ssh_hostname") or name)}
    for key, value in settings.rebuild_host_values.items():
        if not isinstance(value, str) or not value or key in values:
            raise ConfigError(
                f"rebuild_host_values[{key!r}] must be a non-empty string under a name other "
                "than `host` and `address`",
                key="rebuild_host_values",
                fix="map a placeholder name to the value, e.g. {'rack_proxy': '10.0.4.1'}",
                host=name,
            )
        values[key] = value
    return values


def fingerprint_arguments(values: dict[str, str]) -> list[str]:
    """The host-side tool's arguments for ``values`` (never a secret: names and addresses)."""
    return [part for key, value in values.items() for part in ("--identity", f"{key}={value}")]


def needs_outside(endpoints: list[Endpoint], data: Any) -> list[str]:
    """One line per call that fetches from outside the inventory and its mirrors."""
    lines = []
    for endpoint in endpoints:
        if endpoint.side != HOST_SIDE or endpoint.kind not in FETCHING_KINDS:
            continue
        if _inside(endpoint, data):
            continue
        via = f" through {endpoint.via}" if endpoint.via else ""
        note = f" ({endpoint.note})" if endpoint.note else ""
        lines.append(f"{endpoint.kind} {endpoint.endpoint}{via}{note}, from `{endpoint.key}`")
    return sorted(set(lines))


def _inside(endpoint: Endpoint, data: Any) -> bool:
    if endpoint.kind == EGRESS_PROXY or endpoint.via:
        return False
    source = endpoint.region_from or ""
    if source.startswith(("inventory host", "loopback")):
        return True
    return endpoint.key in MIRROR_KEYS and bool(data.get(endpoint.key))


def pins(release: dict[str, Any], engine_pin: str) -> dict[str, str]:
    """What the host serves, by digest: the record `llmhost rebuild` prints before it runs."""
    return {
        "release": str(release["id"]),
        "model": f"{release['model']}@{release['model_digest']}",
        "engine": engine_pin,
    }


def package_pin(name: str, data: Any, *, unpinned: bool = False) -> str:
    """How the host's Debian packages are pinned (ConfigError: not at all, unless allowed)."""
    from llmhost.packagelock import LOCK_KEY, read_lock

    lock = data.get(LOCK_KEY)
    if lock:
        return f"{len(read_lock(lock, name))} Debian packages at the versions in {lock}"
    if unpinned:
        return "not pinned (--unpinned-packages): the newest versions the APT sources hold"
    raise ConfigError(
        "is unset, so the rebuild would install the newest versions the APT sources hold, "
        "not its twin's",
        key=LOCK_KEY,
        fix="`llmhost lock-packages INVENTORY TWIN --out inventories/locks/packages-ENV.json`, "
        "set base_package_lock to that file and converge the twin; or pass "
        "--unpinned-packages to take the sources' versions",
        host=name,
    )


def parse_fingerprint(name: str, ok: bool, stdout: str, stderr: str) -> dict[str, Any]:
    """The tool's JSON, or an error that says what to do."""
    if not ok:
        return {
            "error": f"the fingerprint tool failed on {name}: {stderr.strip()[-500:]} "
            "(a host llmhost never converged has no tool: converge it first)"
        }
    try:
        found = json.loads(stdout)
    except ValueError:
        return {"error": f"{name} answered something that is not JSON: {stdout[:200]}"}
    return found if isinstance(found, dict) else {"error": f"{name} answered {stdout[:200]}"}


def collect(inventory: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """Each host's fingerprint over pyinfra's own connections; an unreachable one carries an
    error."""
    from pyinfra.api.connect import connect_all
    from pyinfra.api.exceptions import PyinfraError
    from pyinfra.context import ctx_host, ctx_state

    from llmhost.inventory import load_inventory
    from roles._common.onhost import onhost_command

    logging.getLogger("pyinfra").setLevel(logging.CRITICAL)
    loaded = load_inventory(inventory, tuple(names))
    state = loaded.state
    chosen = [loaded.inventory.get_host(host.name) for host in loaded.hosts]
    state.limit_hosts = chosen
    found: dict[str, dict[str, Any]] = {}
    # None reachable: each says so below.
    with ctx_state.use(state), contextlib.suppress(PyinfraError):
        connect_all(state)
    for target in chosen:
        if target not in state.activated_hosts:
            found[target.name] = {"error": f"{target.name} is unreachable over SSH"}
            continue
        command = onhost_command(
            "fingerprint", *fingerprint_arguments(identity(target.name, target.data))
        )
        with ctx_state.use(state), ctx_host.use(target):
            ok, output = target.run_shell_command(command)
        found[target.name] = parse_fingerprint(
            target.name, ok, "\n".join(output.stdout_lines), "\n".join(output.stderr_lines)
        )
    return found


def host_pins(loaded: Any, name: str, *, unpinned_packages: bool = False) -> dict[str, str]:
    """What ``name`` runs, pinned, from the repository alone (ConfigError: unpinned)."""
    target = loaded.inventory.get_host(name)
    packages = package_pin(name, target.data, unpinned=unpinned_packages)
    return {**serving_pins(loaded, name), "packages": packages}


def serving_pins(loaded: Any, name: str) -> dict[str, str]:
    """What ``name`` serves, by digest (ConfigError: its model or engine is not pinned)."""
    from pyinfra.context import ctx_host, ctx_inventory, ctx_state

    from llmhost.runtimes import current_vllm_wheels, find_build, load_sources
    from roles._common.checks import on_host
    from roles._common.site import serves_a_model
    from roles.runtime import check as runtime_check

    target = loaded.inventory.get_host(name)
    if not serves_a_model(target):
        return {"release": "none: the host serves no model (model_name is unset)"}
    with ctx_state.use(loaded.state), ctx_inventory.use(loaded.inventory), ctx_host.use(target):
        wanted = runtime_check()
        with on_host(name):
            if wanted.release.engine == "llama.cpp":
                build = find_build(wanted.hardware.name).digest
                engine = f"llama.cpp, the build for class {wanted.hardware.name}: {build}"
            else:
                vllm = load_sources().vllm
                wheels = current_vllm_wheels(vllm)
                engine = f"vLLM {vllm.version}, every distribution hashed in {vllm.lock.name}"
                engine += f", its wheels {wheels.digest}" if wheels else ", from the index"
    return pins(wanted.release.summary(), engine)
