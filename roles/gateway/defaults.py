"""Public settings of the gateway role: nginx in front of the runtime on each serving host."""

from __future__ import annotations

from dataclasses import dataclass

from llmhost.onhost.layout import GATEWAY_AUDIT_LOG, GATEWAY_DIR
from llmhost.settings import setting

SITE = "/etc/nginx/sites-enabled/llmhost-gateway.conf"
AUDIT_LOG = GATEWAY_AUDIT_LOG
KEYS = f"{GATEWAY_DIR}/api-keys.conf"
TLS_CERT = f"{GATEWAY_DIR}/tls.crt"
TLS_KEY = f"{GATEWAY_DIR}/tls.key"
USAGE_SCRIPT = f"{GATEWAY_DIR}/usage.js"  # njs: the answer's token counts for the audit line
PACKAGES = ["nginx", "libnginx-mod-http-js"]  # Debian's nginx and its njs module


@dataclass(frozen=True)
class GatewaySettings:
    gateway_port: int = setting(8000, "TCP port clients reach the gateway on (HTTPS by default)")
    gateway_tls: bool = setting(
        True, "Serve HTTPS with a certificate from the llmhost CA (or the operator's, below)"
    )
    gateway_tls_certificate: str | None = setting(
        None, "Control-machine path of the operator's certificate (PEM, with chain); unset: CA"
    )
    gateway_tls_key: str | None = setting(
        None, "Control-machine path of that certificate's key (uploaded root-only)"
    )
    gateway_server_names: list[str] = setting(
        [],
        "Names clients use for the gateway (certificate SANs); empty: `ssh_hostname` "
        "(`@local`: 127.0.0.1)",
    )
    gateway_identities: list[str] | None = setting(
        None, "Identities (in `api-keys.json`) this host admits; unset: every identity"
    )
    gateway_rate_limit_rps: int = setting(10, "Requests per second each identity may make")
    gateway_rate_limit_burst: int = setting(
        20, "Requests an identity may make above the rate before it gets 429"
    )
    gateway_max_body_kb: int = setting(1024, "Largest request body, in KiB; larger gets 413")
    gateway_read_timeout_s: int = setting(
        600, "Longest wait between two reads from the runtime (streamed tokens included)"
    )
    gateway_allow_from: list[str] = setting(
        [], "Source networks (CIDR) allowed to reach the gateway; empty means from anywhere"
    )
    gateway_rollback_window_s: int = setting(
        3600, "Seconds the previous colour stays warm after a cutover (0: until the next one)"
    )
