"""The residency audit: every endpoint the configured stack calls, and the region it is in.

Host regions are checked since the first release; this is the other half. A host in
gb-lon1 that installs packages from a mirror in Virginia, sends alerts to a webhook in
Oregon or pulls weights through a proxy nobody located has left the UK and the EU all
the same. So each role says what it will call for a host (``endpoints()`` in its
package, beside its ``check()``): package mirrors, the vendors' APT repositories (NVIDIA's,
Grafana's), proxies, time servers, registries, the model and runtime sources the control
machine fetches for the host, the alert webhook. Each endpoint gets a region, from one of
(first match wins):

1. loopback, on the host that calls it: that host's own region;
2. one of the inventory's own hosts (by name, ``ssh_hostname``, ``registry_address``
   or ``gateway_server_names``): that host's region;
3. ``residency_endpoints``, the operator's declarations: a host name, an address,
   ``.domain`` (every name below it) or a network (CIDR), most specific first.

An endpoint with no region, or with one outside ``residency_allowed_regions``, is a
failure: ``llmhost check`` and ``llmhost deploy`` refuse the host, and so does a plain
``pyinfra ... deploy/site.py``. Nothing is resolved through DNS (the audit runs
offline, and a name's address says little about where a CDN serves it from): a name
is declared as a name.

Adding a role that calls out (the edge role's fallbacks, say) is adding its
``endpoints()``; `roles/_common/site.py` collects them in the order of deploy/site.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from llmhost.errors import ConfigError
from llmhost.residency import DEFAULT_ENDPOINTS, REGION_EXAMPLE, REGION_PATTERN, region_allowed

# What an endpoint is for; `kind` in the audit's output.
PACKAGE_MIRROR = "package-mirror"
EGRESS_PROXY = "egress-proxy"
NTP = "ntp"
REGISTRY = "registry"
MODEL_SOURCE = "model-source"
RUNTIME_SOURCE = "runtime-source"
ALERT_WEBHOOK = "alert-webhook"
MONITORING = "monitoring"
GRAFANA_REPOSITORY = "grafana-repository"
NVIDIA_REPOSITORY = "nvidia-repository"
SERVING_GATEWAY = "serving-gateway"  # an edge's pool: the serving hosts' gateways
FALLBACK = "fallback"  # the edge role's fallback tiers: another region's edge, a hosted API
KINDS = (
    PACKAGE_MIRROR, EGRESS_PROXY, NTP, REGISTRY, MODEL_SOURCE, RUNTIME_SOURCE, ALERT_WEBHOOK,
    MONITORING, GRAFANA_REPOSITORY, NVIDIA_REPOSITORY, SERVING_GATEWAY, FALLBACK,
)  # fmt: skip

HOST_SIDE = "host"  # the host itself calls it
CONTROL_SIDE = "control"  # the control machine calls it, for the host (mirror, build)

DECLARATIONS_KEY = "residency_endpoints"
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


@dataclass(frozen=True)
class Call:
    """One endpoint a role will call for a host, as the role's ``endpoints()`` lists it."""

    kind: str
    target: str  # a URL, host:port, or a host name or address
    key: str | None  # the setting (or file key) it comes from; None: it follows from groups
    via: str | None = None  # the egress proxy it goes through
    side: str = HOST_SIDE
    note: str = ""  # what calls it, or why it is there
    secret_path: bool = False  # the URL's path and query may hold a token: never shown
    region: str | None = None  # the region its setting states (a fallback tier's `region`)


def call_via_proxy(
    kind: str,
    target: str,
    key: str | None,
    proxy: str | None,
    no_proxy: Iterable[str],
    **details: Any,
) -> Call:
    """A call that goes through ``proxy`` unless ``no_proxy`` names its host."""
    address = address_of(target)
    via = proxy if proxy and not bypasses_proxy(address, no_proxy) else None
    return Call(kind, target, key, via=via, **details)


def address_of(target: str) -> str:
    """The host part of a URL, ``host:port`` or bare host, lower case, without brackets."""
    text = target.strip()
    if "://" in text:
        try:
            host = urlsplit(text).hostname or ""
        except ValueError:
            host = ""
    else:
        found = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::\d+)?", text) or re.fullmatch(
            r"([^:\[\]/\s]+)(?::\d+)?", text
        )
        host = found.group(1) if found else text
    return host.strip("[]").rstrip(".").lower()


def shown(call: Call) -> str:
    """The endpoint as it may be printed: no password, and no path where a token may hide."""
    if "://" not in call.target:
        return call.target
    try:
        parts = urlsplit(call.target)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return re.sub(r"//[^/@]*@", "//***@", call.target)
    netloc = f"[{host}]" if ":" in host else host
    user = "***@" if parts.username or parts.password else ""
    rest = "/..." if call.secret_path and (parts.path not in ("", "/") or parts.query) else ""
    if not call.secret_path:
        rest = parts.path + (f"?{parts.query}" if parts.query else "")
    return f"{parts.scheme}://{user}{netloc}{port}{rest}"


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def is_loopback(address: str) -> bool:
    ip = _ip(address)
    return address in LOOPBACK_NAMES or (ip is not None and ip.is_loopback)


def bypasses_proxy(address: str, no_proxy: Iterable[str]) -> bool:
    """Whether a `no_proxy` entry (host, ``.domain`` or ``domain``, address, CIDR) covers it."""
    ip = _ip(address)
    for entry in no_proxy:
        pattern = entry.strip().lower().rstrip(".")
        if ip is not None and "/" in pattern:
            try:
                if ip in ipaddress.ip_network(pattern, strict=False):
                    return True
            except ValueError:
                continue
        elif pattern.startswith("."):
            if address.endswith(pattern) or address == pattern[1:]:
                return True
        elif address == pattern or address.endswith("." + pattern):
            return True
    return False


# -- declarations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Declaration:
    pattern: str  # as the operator wrote it
    region: str
    where: str  # which part of the inventory set it


@dataclass(frozen=True)
class Declarations:
    """`residency_endpoints` of one host, from every part of the inventory that sets it.

    pyinfra would keep only the most specific part's map (the host's replaces its
    groups'); declarations are facts about endpoints, so they add up instead, and two
    parts that disagree about one endpoint are an error.
    """

    exact: dict[str, Declaration] = field(default_factory=dict)  # names and addresses
    domains: dict[str, Declaration] = field(default_factory=dict)  # ".internal.example"
    networks: dict[ipaddress.IPv4Network | ipaddress.IPv6Network, Declaration] = field(
        default_factory=dict
    )

    @classmethod
    def from_places(
        cls, host: str, places: Iterable[tuple[str, Mapping[str, Any]]]
    ) -> Declarations:
        """From each (where, data) part of the inventory, over llmhost's own defaults."""
        found = cls()
        defaults = ("by llmhost's default", {DECLARATIONS_KEY: DEFAULT_ENDPOINTS})
        for where, data in [defaults, *places]:
            declared = data.get(DECLARATIONS_KEY)
            if declared is None:
                continue
            if not isinstance(declared, dict):
                raise ConfigError(
                    f"expected a dict of endpoint to region, got {type(declared).__name__} "
                    f"(set {where})",
                    key=DECLARATIONS_KEY,
                    fix=DECLARE_FIX,
                    host=host,
                )
            for pattern, region in declared.items():
                found._add(host, Declaration(str(pattern), region, where))
        return found

    def _add(self, host: str, declaration: Declaration) -> None:
        pattern, region = declaration.pattern, declaration.region
        if not isinstance(region, str) or not REGION_PATTERN.fullmatch(region):
            raise ConfigError(
                f"{pattern!r} is declared in {region!r}, which is not a region code "
                f"(set {declaration.where})",
                key=DECLARATIONS_KEY,
                fix=f"give a lower-case region code such as {REGION_EXAMPLE!r} or 'de-fra'",
                host=host,
            )
        table: dict[Any, Declaration]
        normal: Any
        text = pattern.strip().lower().rstrip(".")
        if text.startswith("*."):
            text = text[1:]
        if "/" in text and "://" not in text:
            try:
                normal, table = ipaddress.ip_network(text, strict=False), self.networks
            except ValueError:
                normal, table = None, self.networks
        elif text.startswith(".") and len(text) > 1:
            normal, table = text, self.domains
        else:
            normal, table = address_of(text), self.exact
        if not normal or not _well_formed(str(normal).lstrip(".")):
            raise ConfigError(
                f"{pattern!r} is not a host, domain, address, network or URL "
                f"(set {declaration.where})",
                key=DECLARATIONS_KEY,
                fix=DECLARE_FIX,
                host=host,
            )
        earlier = table.get(normal)
        if earlier is not None and earlier.region != region:
            raise ConfigError(
                f"{pattern!r} is declared in {earlier.region!r} {earlier.where} and in "
                f"{region!r} {declaration.where}",
                key=DECLARATIONS_KEY,
                fix="declare each endpoint once, with the region it is really in",
                host=host,
            )
        table[normal] = declaration

    def region_of(self, address: str) -> tuple[str, str] | None:
        """(region, which declaration) for ``address``, the most specific first."""
        ip = _ip(address)
        key = str(ip) if ip is not None else address
        if key in self.exact:
            return self._found(self.exact[key])
        if ip is None:
            for domain in sorted(self.domains, key=len, reverse=True):
                if address.endswith(domain):
                    return self._found(self.domains[domain])
            return None
        containing = [n for n in self.networks if n.version == ip.version and ip in n]
        if containing:
            return self._found(self.networks[max(containing, key=lambda n: n.prefixlen)])
        return None

    @staticmethod
    def _found(declaration: Declaration) -> tuple[str, str]:
        return declaration.region, f"{DECLARATIONS_KEY}[{declaration.pattern!r}]"


DECLARE_FIX = (
    "map each endpoint to the region it is in, e.g. residency_endpoints = "
    "{'apt.internal.example': 'gb-lon1', '.internal.example': 'gb', '10.20.0.0/16': 'gb-lon1'} "
    "(a host name, an address, '.domain' for every name below it, or a network)"
)


def _well_formed(text: str) -> bool:
    from roles._common.checks import is_hostname_or_address

    return _ip(text) is not None or is_hostname_or_address(text) or _is_network(text)


def _is_network(text: str) -> bool:
    try:
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        return False
    return True


# -- the inventory's own hosts -----------------------------------------------------------


@dataclass(frozen=True)
class KnownHost:
    name: str
    region: Any  # as the inventory has it (the base role checks it)
    addresses: frozenset[str]  # every name and address it is reached by


def known_host(name: str, data: Any) -> KnownHost:
    """An inventory host and every name the stack may use for it."""
    names = {name, data.get("ssh_hostname"), data.get("registry_address")}
    servers = data.get("gateway_server_names")
    if isinstance(servers, list | tuple):
        names.update(servers)
    addresses = set()
    for item in names:
        if isinstance(item, str) and item:
            ip = _ip(address_of(item))
            addresses.add(str(ip) if ip is not None else address_of(item))
    return KnownHost(name, data.get("region"), frozenset(addresses))


# -- the audit ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One row of the audit: what is called, for which host, and where it is."""

    host: str
    side: str
    kind: str
    endpoint: str
    address: str
    key: str | None
    via: str | None
    note: str
    region: str | None
    region_from: str | None
    problem: str | None  # None: inside the policy
    fix: str | None
    # Another inventory host this endpoint is: a bad region there is that host's problem,
    # which its own check reports (the site check leaves it to that one).
    owner: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        found = asdict(self)
        del found["problem"], found["fix"], found["owner"]
        return {**found, "ok": self.ok}

    def failure_json(self) -> dict[str, Any]:
        return {
            "host": self.host,
            "side": self.side,
            "kind": self.kind,
            "endpoint": self.endpoint,
            "key": self.key,
            "problem": self.problem,
            "fix": self.fix,
        }

    def error(self) -> ConfigError:
        assert self.problem is not None and self.fix is not None
        return ConfigError(
            self.problem, key=self.key or DECLARATIONS_KEY, fix=self.fix, host=self.host
        )


@dataclass(frozen=True)
class HostContext:
    """What classifying one host's endpoints needs: its region, policy, the inventory."""

    name: str
    region: Any
    allowed: list[str]
    declarations: Declarations
    known: tuple[KnownHost, ...]


@dataclass(frozen=True)
class Location:
    region: str | None
    source: str | None  # how the region was found, for the reader
    host: str | None = None  # the inventory host the endpoint is (its own check owns its region)


def locate(address: str, side: str, context: HostContext) -> Location:
    """Where ``address``, called for ``context``'s host, is: its region and how it is known."""
    if side == HOST_SIDE and is_loopback(address):
        region = context.region if isinstance(context.region, str) else None
        return Location(region, "loopback: the host itself", context.name)
    ip = _ip(address)
    key = str(ip) if ip is not None else address
    for member in context.known:
        if key in member.addresses:
            region = member.region if isinstance(member.region, str) else None
            return Location(region, f"inventory host {member.name}", member.name)
    declared = context.declarations.region_of(key)
    if declared:
        return Location(*declared)
    return Location(None, None)


def classify(call: Call, context: HostContext) -> Endpoint:
    address = address_of(call.target)
    location = locate(address, call.side, context)
    region, region_from = location.region, location.source
    stated = call.region
    if stated is not None and region is None:
        region, region_from = stated, f"stated by `{call.key}`"
    endpoint = shown(call)
    what = f"{call.kind} {endpoint}" + (f" ({call.note})" if call.note else "")
    if call.side == CONTROL_SIDE:
        what += ", called from the control machine"
    problem = fix = None
    setting = f"`{call.key}`" if call.key else "it"
    allowed = (
        region is not None
        and REGION_PATTERN.fullmatch(region) is not None
        and region_allowed(region, context.allowed)
    )
    if stated is not None and location.region is not None and stated != location.region:
        problem = (
            f"{what} is stated to be in {stated!r} by `{call.key}`, but is in "
            f"{location.region!r} ({location.source})"
        )
        fix = f"correct the `region` in `{call.key}`, or the other place that locates it"
    elif location.host is not None and not allowed:
        problem = f"{what} is {region_from}, whose `region` {region!r} is not an allowed region"
        fix = f"correct the `region` of {location.host} (its own check says how)"
    elif region is None:
        problem = f"{what} has no declared region"
        fix = (
            f"declare its region: residency_endpoints = {{{address!r}: '{REGION_EXAMPLE}'}} "
            "(in inventories/group_data/all.py, or wherever the endpoint is known), or point "
            f"{setting} at an endpoint whose region is declared"
        )
    elif not allowed:
        problem = (
            f"{what} is in {region!r} ({region_from}), outside `residency_allowed_regions` "
            f"({', '.join(context.allowed)})"
        )
        fix = (
            f"point {setting} at an endpoint in an allowed region: data may not leave the "
            "UK and the EU (or correct the declared region, if it is wrong)"
        )
    return Endpoint(
        host=context.name,
        side=call.side,
        kind=call.kind,
        endpoint=endpoint,
        address=address,
        key=call.key,
        via=shown(Call(call.kind, call.via, None)) if call.via else None,
        note=call.note,
        region=region,
        region_from=region_from,
        problem=problem,
        fix=fix,
        owner=location.host if location.host != context.name else None,
    )


def audit_calls(calls: Iterable[Call], context: HostContext) -> list[Endpoint]:
    """Each distinct call, classified (a registry the model and the runtime both pull from
    is listed once)."""
    seen: set[tuple[str, str, str, str | None]] = set()
    rows = []
    for call in calls:
        identity = (call.side, call.kind, shown(call), call.key)
        if identity in seen:
            continue
        seen.add(identity)
        rows.append(classify(call, context))
    return rows


@dataclass
class Audit:
    endpoints: list[Endpoint]

    @property
    def failures(self) -> list[Endpoint]:
        return [e for e in self.endpoints if not e.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "endpoints": [e.as_json() for e in self.endpoints],
            "failures": [e.failure_json() for e in self.failures],
        }

    def table(self, regions: Mapping[str, Any]) -> str:
        """For a person: one block per host, one line per endpoint, failures marked."""
        lines = []
        hosts = list(dict.fromkeys(e.host for e in self.endpoints))
        for host in hosts:
            rows = [e for e in self.endpoints if e.host == host]
            lines.append(f"{host} ({regions.get(host) or 'no region'})")
            cells = [
                ("", "kind", "endpoint", "region", "region from", "setting"),
                *(
                    (
                        "FAIL" if not e.ok else "ok",
                        e.kind + (" (control)" if e.side == CONTROL_SIDE else ""),
                        e.endpoint + (f" via {e.via}" if e.via else ""),
                        e.region or "undeclared",
                        e.region_from or "-",
                        e.key or "-",
                    )
                    for e in rows
                ),
            ]
            widths = [max(len(row[i]) for row in cells) for i in range(5)]
            for row in cells:
                padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
                lines.append("  " + "  ".join([*padded, row[5]]).rstrip())
        failures = self.failures
        lines.append("")
        if failures:
            lines.append(f"FAILED: {len(failures)} of {len(self.endpoints)} endpoint(s):")
            lines += [f"  {e.error()}" for e in failures]
        else:
            lines.append(
                f"ok: {len(self.endpoints)} endpoint(s) of {len(hosts)} host(s), "
                "every one in an allowed region"
            )
        return "\n".join(lines)
