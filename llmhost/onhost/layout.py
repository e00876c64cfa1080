"""Where llmhost keeps things on a host: the one source for both sides.

The roles write these paths and read them back as facts; the host-side tools
read and write them at run time. Both import the values from here, and a test
fails if a role restates one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SERVICE_USER = "llmhost"  # owns the blob store and models; runs the puller
CONFIG_DIR = "/etc/llmhost"
STATE_DIR = "/var/lib/llmhost"
# The active colour, the release each colour runs, the last gate verdicts.
STATE_FILE = f"{STATE_DIR}/state.json"
HELPERS_DIR = "/usr/local/lib/llmhost"
ONHOST_APP = f"{HELPERS_DIR}/onhost.pyz"  # this package, as a zipapp
LLMHOST_CA = "/usr/local/share/ca-certificates/llmhost-ca.crt"
# Kept inside every materialised model directory: the manifest it was built from.
MANIFEST_FILE = ".llmhost-manifest.json"

COLOURS = ("blue", "green")
RUNTIME_UNIT = "llmhost-runtime@{}.service"  # .format(colour)
ROLLBACK_WINDOW_UNIT = "llmhost-rollback-window-{}"  # .format(colour): the deferred stop
# node exporter's textfile collector reads *.prom here; runtimectl writes the state's
# metrics (active colour, releases, gate verdicts) as llmhost-state.prom.
NODE_TEXTFILE_DIR = "/var/lib/prometheus/node-exporter"
STATE_METRICS_FILE = f"{NODE_TEXTFILE_DIR}/llmhost-state.prom"
# Each release's gate reports on the host: result.json (the eval's answers among them),
# report.html, and eval-items.json (the prompts the eval sent).
GATES_DIR = f"{STATE_DIR}/gates"
# The production eval (`onhost.pyz eval-drift`, on a timer): the model's eval set as the
# deploy wrote it, and the directory the eval writes its metrics in (its only writable
# place), which node exporter reads through a link in the textfile directory.
EVAL_SET_FILE = f"{CONFIG_DIR}/eval-set.json"
EVAL_DIR = f"{NODE_TEXTFILE_DIR}/llmhost-eval"
EVAL_METRICS_NAME = "llmhost-eval.prom"
EVAL_METRICS_LINK = f"{NODE_TEXTFILE_DIR}/{EVAL_METRICS_NAME}"
GATEWAY_DIR = "/etc/nginx/llmhost"  # root-only: the API keys live here
# The gateway's upstream include: which colour nginx sends to. Written by the gateway
# role once, then only by `runtimectl cutover` / `rollback`.
GATEWAY_UPSTREAM = f"{GATEWAY_DIR}/upstream.conf"
# One JSON line per request (nginx), which the audit exporter turns into metrics.
GATEWAY_AUDIT_LOG = "/var/log/nginx/llmhost-audit.log"
# While this file exists the gateway's /healthz answers 503, so the edges in front of the
# host stop sending it requests: `runtimectl cutover` makes it for the switch alone. In
# /run, so a host that restarts mid-switch comes back in the pool.
GATEWAY_DRAIN_FLAG = "/run/llmhost-gateway-drain"


def empty_state() -> dict[str, Any]:
    """The state of a host no release was ever staged on."""
    return {"active": None, "colours": {}, "history": []}


def is_materialised(
    manifest_digest: str | None,
    files: Mapping[str, int],
    digest: str,
    sizes: Mapping[str, int],
) -> bool:
    """A model directory holds exactly the artifact ``digest`` names.

    ``manifest_digest`` is the sha256 of the manifest kept in the directory and
    ``files`` every other file in it (relative path -> size); ``sizes`` is what
    the artifact lists. A missing, truncated or extra file means it is not: the
    puller rebuilds such a directory, and the model role pulls again.
    """
    return manifest_digest == digest and dict(files) == dict(sizes)


# What `onhost.pyz fingerprint` hashes: everything llmhost (or a package it installs)
# configures, and the host-side tools. The model store and engine builds are not walked:
# the active release names its model digest, and the engine binary is hashed on its own.
FINGERPRINT_ROOTS = (
    CONFIG_DIR,
    "/etc/llmhost-registry",
    "/etc/nginx",
    "/etc/systemd/system",
    "/etc/systemd/timesyncd.conf.d",
    "/etc/prometheus",
    "/etc/default/prometheus-node-exporter",
    "/etc/default/prometheus",
    "/etc/default/prometheus-alertmanager",
    "/etc/grafana",
    "/etc/apt/sources.list",
    "/etc/apt/sources.list.d",
    "/etc/apt/preferences.d",
    "/etc/apt/apt.conf.d",
    "/etc/apt/keyrings",
    "/etc/modprobe.d",
    "/etc/ssh/sshd_config",
    "/etc/ssh/sshd_config.d",
    "/etc/chrony",
    "/etc/docker/registry",
    HELPERS_DIR,
    "/usr/local/share/ca-certificates",
)
# Each host's own by design: listed by the fingerprint, never hashed. Private keys, and the
# certificates issued to the host itself (their names are the host's).
FINGERPRINT_EXCLUDED = (
    "*.key",
    f"{GATEWAY_DIR}/tls.crt",
    "/etc/llmhost-registry/*.crt",
    "/etc/grafana/*.crt",
)
