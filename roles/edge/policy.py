"""Who may use the edge and where their requests may go, from the inventory's data.

Each entry the operator writes (an identity's policy, a fallback cluster, the hosted
API) is checked here into a small record the template renders, with the key and the
fix named when it is wrong. Nothing here contacts a host.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmhost.errors import ConfigError
from llmhost.residency import REGION_EXAMPLE, REGION_PATTERN
from llmhost.secrets import hosted_api_key
from roles._common.checks import check_host_port, join_host_port, split_host_port
from roles.edge.defaults import EdgeSettings

NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # teams, features, clusters: safe in a log line
SYSTEM_CA = "@system-ca"  # HAProxy: the machine's own trust store


@dataclass(frozen=True)
class Identity:
    """An API key the edge admits, the identity it names, and that identity's policy."""

    name: str
    key: str
    team: str  # "" when the identity has none
    hosted_fallback: bool

    def map_line(self) -> str:
        """``<key> <identity>:<team>:<0|1>``, one line of the edge's root-only map."""
        return f"{self.key} {self.name}:{self.team}:{int(self.hosted_fallback)}"


@dataclass(frozen=True)
class FallbackCluster:
    """Another region's edge, used when no serving host of this one is up."""

    name: str
    address: str  # host:port
    verify_name: str  # the host part: its certificate's name
    region: str


@dataclass(frozen=True)
class HostedFallback:
    """An OpenAI-compatible API: the last resort, for identities whose policy allows it."""

    url: str
    address: str  # host:port
    host: str
    path: str  # the URL's path, without a trailing slash ("/v1")
    key: str
    region: str
    ca_pem: str | None  # the CA that signs its certificate; None: the system's


def refuse(host: str, key: str, problem: str, fix: str) -> ConfigError:
    return ConfigError(problem, key=key, fix=fix, host=host)


def check_name(host: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise refuse(
            host, key, f"{value!r} is not a name", "use lower-case letters, digits and '-'"
        )
    return value


def check_region(host: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not REGION_PATTERN.fullmatch(value):
        raise refuse(
            host, key, f"{value!r} is not a region", f"give the region, e.g. {REGION_EXAMPLE!r}"
        )
    return value


def check_fields(
    host: str, key: str, entry: dict[str, Any], required: set[str], known: set[str]
) -> None:
    missing = sorted(required - set(entry))
    unknown = sorted(set(entry) - known)
    if missing or unknown:
        problem = "; ".join(
            part
            for part in (
                f"missing {', '.join(missing)}" if missing else "",
                f"unknown {', '.join(unknown)}" if unknown else "",
            )
            if part
        )
        raise refuse(host, key, problem, f"give {', '.join(sorted(known))}")


def identities(host: str, settings: EdgeSettings, keys: dict[str, str]) -> list[Identity]:
    """Every identity with a key, each with its policy (none listed: no team, no hosted)."""
    if not keys:
        raise refuse(
            host,
            "edge_identities",
            "no API keys in the secrets directory: nobody could use this edge",
            "llmhost keys add <identity> --inventory <your inventory>",
        )
    unknown = sorted(set(settings.edge_identities) - set(keys))
    if unknown:
        raise refuse(
            host,
            "edge_identities",
            f"gives a policy to identities with no key: {', '.join(unknown)}",
            f"llmhost keys add {unknown[0]}, or remove it from edge_identities",
        )
    found = []
    for name in sorted(keys):
        policy = settings.edge_identities.get(name, {})
        where = f"edge_identities.{name}"
        check_fields(host, where, policy, set(), {"team", "hosted_fallback"})
        team = policy.get("team", "")
        if team:
            check_name(host, f"{where}.team", team)
        hosted = policy.get("hosted_fallback", False)
        if not isinstance(hosted, bool):
            raise refuse(
                host,
                f"{where}.hosted_fallback",
                f"{hosted!r} is not true or false",
                "use True or False",
            )
        found.append(Identity(name, keys[name], team, hosted))
    return found


@dataclass(frozen=True)
class TeamQuota:
    team: str
    requests_per_minute: int | None  # counted at each edge over the last 60 s
    tokens_per_hour: int | None  # counted at the gateways, summed by Prometheus


QUOTA_KINDS = ("requests_per_minute", "tokens_per_hour")


def team_quotas(host: str, settings: EdgeSettings) -> list[TeamQuota]:
    found = []
    for team, quota in sorted(settings.edge_teams.items()):
        where = f"edge_teams.{team}"
        check_name(host, "edge_teams", team)
        check_fields(host, where, quota, set(), set(QUOTA_KINDS))
        if not quota:
            raise refuse(host, where, "gives no quota", f"give {' or '.join(QUOTA_KINDS)}")
        for kind, value in quota.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise refuse(host, f"{where}.{kind}", f"{value!r} is not a count", "give 1 or more")
        found.append(
            TeamQuota(team, quota.get("requests_per_minute"), quota.get("tokens_per_hour"))
        )
    return found


def features(host: str, settings: EdgeSettings) -> list[str]:
    for feature in settings.edge_features:
        check_name(host, "edge_features", feature)
    return sorted(set(settings.edge_features))


def fallback_clusters(host: str, settings: EdgeSettings) -> list[FallbackCluster]:
    found = []
    for index, entry in enumerate(settings.edge_fallback_clusters):
        where = f"edge_fallback_clusters[{index}]"
        check_fields(
            host, where, entry, {"name", "address", "region"}, {"name", "address", "region"}
        )
        name = check_name(host, f"{where}.name", entry["name"])
        check_host_port(host, f"{where}.address", str(entry["address"]))
        parsed = split_host_port(str(entry["address"]))
        assert parsed is not None  # checked just above
        found.append(
            FallbackCluster(
                name,
                str(entry["address"]),
                parsed[0],
                check_region(host, f"{where}.region", entry["region"]),
            )
        )
    names = [cluster.name for cluster in found]
    if len(set(names)) != len(names):
        raise refuse(host, "edge_fallback_clusters", "two clusters share a name", "name each once")
    return found


def hosted_fallback(host: str, settings: EdgeSettings, secrets: Path) -> HostedFallback | None:
    entry = settings.edge_hosted_fallback
    if entry is None:
        return None
    key = "edge_hosted_fallback"
    check_fields(
        host, key, entry, {"url", "key_file", "region"}, {"url", "key_file", "region", "ca_file"}
    )
    url = str(entry["url"])
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        raise refuse(
            host,
            f"{key}.url",
            f"{url!r} is not an https:// URL",
            "give the API's base URL, e.g. https://api.example.eu/v1 (keys never travel plain)",
        )
    port = parts.port or 443
    address = join_host_port(parts.hostname, port)
    ca_pem = None
    if entry.get("ca_file"):
        path = Path(str(entry["ca_file"]))
        if not path.is_file():
            raise refuse(
                host, f"{key}.ca_file", f"{path} does not exist on this machine", "give a PEM file"
            )
        ca_pem = path.read_text()
    try:
        secret = hosted_api_key(secrets, str(entry["key_file"]))
    except ConfigError as error:
        raise refuse(host, error.key or key, error.problem, error.fix) from error
    return HostedFallback(
        url=url,
        address=address,
        host=parts.hostname,
        path=parts.path.rstrip("/"),
        key=secret,
        region=check_region(host, f"{key}.region", entry["region"]),
        ca_pem=ca_pem,
    )


@dataclass(frozen=True)
class CanaryRule:
    """How a rollout's first batch is judged behind this edge (`edge_canary_*`)."""

    percent: int
    window_s: int
    max_error_percent: float
    max_latency_ratio: float  # 0: latency not judged
    min_requests: int


def canary_rule(host: str, settings: EdgeSettings) -> CanaryRule | None:
    """The edge's canary rule, or None when it takes no percentage canary (percent 0)."""
    percent = settings.edge_canary_percent
    if not 0 <= percent <= 99:
        raise refuse(
            host,
            "edge_canary_percent",
            f"{percent} is not a share from 0 to 99",
            "give the canary's percent of the edge's requests (0: no percentage canary)",
        )
    if not 0 <= settings.edge_canary_max_error_percent <= 100:
        raise refuse(
            host,
            "edge_canary_max_error_percent",
            f"{settings.edge_canary_max_error_percent} is not a percentage",
            "give the most 5xx answers, in percent of the canary's, e.g. 1.0",
        )
    ratio = settings.edge_canary_max_latency_ratio
    if ratio != 0 and ratio < 1:
        raise refuse(
            host,
            "edge_canary_max_latency_ratio",
            f"{ratio} would roll back a canary as fast as the other hosts",
            "give 1 or more (e.g. 2.0: twice the others' time to first byte), or 0",
        )
    for key, minimum in (("edge_canary_window_s", 10), ("edge_canary_min_requests", 1)):
        if getattr(settings, key) < minimum:
            raise refuse(
                host, key, f"{getattr(settings, key)} is below {minimum}", f"use {minimum} or more"
            )
    if percent == 0:
        return None
    return CanaryRule(
        percent,
        settings.edge_canary_window_s,
        settings.edge_canary_max_error_percent,
        ratio,
        settings.edge_canary_min_requests,
    )
