"""Public settings of the edge role: HAProxy in front of the serving hosts' gateways."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from llmhost.settings import setting

EDGE_DIR = "/etc/haproxy/llmhost"  # root:haproxy 0750: the certificate's key lives here
CONFIG = f"{EDGE_DIR}/edge.cfg"
CERTIFICATE = f"{EDGE_DIR}/edge.pem"  # certificate, chain and key in one file, as HAProxy reads
CA_FILE = f"{EDGE_DIR}/gateways-ca.crt"  # what a gateway's certificate must be signed by
HOSTED_CA_FILE = f"{EDGE_DIR}/hosted-ca.crt"  # the hosted API's CA, when the operator gives one
IDENTITIES_MAP = f"{EDGE_DIR}/identities.map"  # root-only: API key -> identity:team:hosted
AUDIT_TAG = "llmhost_edge"  # the journal's tag of the edge's audit lines (`journalctl -t`)
VENDOR_UNIT = "haproxy.service"
DROPIN = f"/etc/systemd/system/{VENDOR_UNIT}.d/llmhost.conf"
ADMIN_SOCKET = "/run/haproxy/llmhost-admin.sock"  # root-only: `show servers state`, drain
PACKAGES = ["haproxy", "socat"]  # socat: the admin socket, by hand (runbook)
BACKEND = "llmhost_serving"  # the backend of the serving hosts, as the admin socket names it
HOSTED_BACKEND = "llmhost_hosted"
TEAM_REQUESTS = "llmhost_team_requests"  # the stick table of each team's request rate
# A rollout's canary: the hosts of its first batch, one server each in this backend
# (disabled until a rollout enables them), drawn for the share the map's `percent` gives.
CANARY_BACKEND = "llmhost_canary"
CANARY_MAP = f"{EDGE_DIR}/canary.map"  # `percent 0` on disk; a rollout sets it at runtime
# Teams with a token quota, `<team> 0` on disk; the quota timer sets 1 for a team over it.
TOKENS_MAP = f"{EDGE_DIR}/teams-over-tokens.map"
OIDC_DIR = f"{EDGE_DIR}/oidc"  # the SSO issuer's public keys, one PEM each
QUOTA_SERVICE = "llmhost-edge-quota.service"
QUOTA_TIMER = "llmhost-edge-quota.timer"


@dataclass(frozen=True)
class EdgeSettings:
    edge_port: int = setting(8443, "TCP port clients reach the edge on (HTTPS)")
    edge_server_names: list[str] = setting(
        [], "Names clients use for the edge (certificate SANs); empty: `ssh_hostname`"
    )
    edge_serving_group: str | None = setting(
        None,
        "Inventory group whose serving hosts the edge spreads requests over; unset: every "
        "host of the inventory with a `model_name`",
    )
    edge_gateway_ca: str | None = setting(
        None,
        "Control-machine path of the CA (PEM) that signs the serving hosts' gateway "
        "certificates, which the edge verifies; unset: the llmhost CA",
    )
    edge_check_interval_ms: int = setting(
        1000, "Milliseconds between two health checks (`/healthz`) of each serving host"
    )
    edge_check_fall: int = setting(
        2, "Failed checks in a row that take a serving host out of the pool"
    )
    edge_check_rise: int = setting(2, "Passed checks in a row that put it back")
    edge_retries: int = setting(
        2,
        "Times a request is sent again to another host when its host failed before the "
        "first byte of an answer (refused, reset, or a 502/503 from its gateway)",
    )
    edge_timeout_s: int = setting(
        600, "Longest wait for a serving host's answer, and between two of its streamed parts"
    )
    edge_metrics_port: int = setting(
        8405, "Port of HAProxy's Prometheus metrics (`/metrics`), open to the monitoring hosts"
    )
    edge_identities: dict[str, dict[str, Any]] = setting(
        {},
        "Policy of each identity (of `api-keys.json`): `team` (its quota and cost are "
        "counted there) and `hosted_fallback` (true: may be served by the hosted API); an "
        "identity not listed is admitted, with no team and no hosted fallback",
    )
    edge_teams: dict[str, dict[str, int]] = setting(
        {},
        "Quotas of each team: `requests_per_minute` (counted at this edge over the last "
        "60 s) and `tokens_per_hour` (prompt and completion tokens over the last hour, "
        "every gateway's, from the monitoring hosts' Prometheus); over either: 429 naming "
        "the team. A team not listed has none",
    )
    edge_token_quota_interval_s: int = setting(
        15, "Seconds between two reads of each team's tokens from Prometheus (token quotas)"
    )
    edge_features: list[str] = setting(
        [],
        "Feature tags a request may carry in `X-Llmhost-Feature`; any other tag gets 400",
    )
    edge_fallback_clusters: list[dict[str, str]] = setting(
        [],
        "Other regions' edges, tried in this order when no serving host here is up: each "
        "`{name, address (host:port), region}`; its region passes the residency audit",
    )
    edge_hosted_fallback: dict[str, str] | None = setting(
        None,
        "The last resort when no cluster is up, an OpenAI-compatible API: `{url (https, "
        "base URL with /v1), key_file (in secrets_dir), region, ca_file (optional)}`; only "
        "for identities whose policy has `hosted_fallback`",
    )
    edge_oidc: dict[str, Any] | None = setting(
        None,
        "SSO: OIDC bearer tokens checked at the edge: `{issuer, audience, jwks_file (the "
        "issuer's JWKS, a file on the control machine), gateway_identity (an API key "
        "identity the edge presents to the gateways for SSO requests), identity_claim "
        "(default sub), team_claim (optional), hosted_fallback (default false)}`",
    )
    edge_allow_from: list[str] = setting(
        [], "Source networks (CIDR) allowed to reach the edge; empty means from anywhere"
    )
    edge_canary_percent: int = setting(
        0,
        "Share of this edge's requests (0-99) the first batch of a rolling deploy "
        "(`llmhost deploy --batch-size`) takes while it is judged; 0: no percentage canary",
    )
    edge_canary_window_s: int = setting(
        300, "Seconds the canary is judged for before the rollout goes on"
    )
    edge_canary_max_error_percent: float = setting(
        1.0,
        "Most 5xx answers, in percent of the canary's answers, before it is rolled back "
        "(judged as soon as it has `edge_canary_min_requests` answers)",
    )
    edge_canary_max_latency_ratio: float = setting(
        2.0,
        "Most the canary's mean time to an answer's first byte may be, as a multiple of "
        "the other hosts' (judged at the end of the window); 0: not judged",
    )
    edge_canary_min_requests: int = setting(
        20,
        "Fewest answers the canary must give within its window to be judged; fewer, and "
        "the rollout stops there, the canary neither promoted nor rolled back",
    )

    def asks_for_tokens(self) -> bool:
        """A team has a token quota: the edge asks Prometheus for each team's tokens."""
        return any(quota.get("tokens_per_hour") for quota in self.edge_teams.values())

    def drain_wait_s(self) -> float:
        """Long enough for this edge to take a host out of its pool after it asked."""
        return (self.edge_check_fall + 1) * self.edge_check_interval_ms / 1000 + 1

    def rejoin_wait_s(self) -> float:
        """Long enough for this edge to put a host back in its pool after it is ready."""
        return (self.edge_check_rise + 1) * self.edge_check_interval_ms / 1000 + 1
