"""One network namespace and one veth pair per host, on 10.231.N.0/30.

The host side of the pair holds .1 (where the proxy and NTP server listen), the
guest side .2. Hosts reach each other (a registry on tb1, pulls on tb2) through
this machine: forwarding is switched on for the testbed's own links only, and a
guard table drops anything they send that is not for another testbed host, so
no host traffic ever leaves the machine. Only addresses inside namespaces the
testbed made are used.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

NETNS_PREFIX = "llmhost-tb"
VETH_PREFIX = "lhtb"
SUBNET = "10.231"
GUARD_TABLE = "llmhost-testbed"
GUARD_RULES = f"""
table inet {GUARD_TABLE}
delete table inet {GUARD_TABLE}
table inet {GUARD_TABLE} {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{VETH_PREFIX}*" oifname != "{VETH_PREFIX}*" drop
        iifname "{VETH_PREFIX}*" ip daddr != {SUBNET}.0.0/16 drop
    }}
}}
"""


@dataclass(frozen=True)
class HostNetwork:
    index: int

    @property
    def netns(self) -> str:
        return f"{NETNS_PREFIX}{self.index}"

    @property
    def veth_host(self) -> str:
        return f"{VETH_PREFIX}{self.index}h"

    @property
    def veth_guest(self) -> str:
        return f"{VETH_PREFIX}{self.index}g"

    @property
    def gateway(self) -> str:
        return f"{SUBNET}.{self.index}.1"

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index}.2"

    @property
    def subnet(self) -> str:
        return f"{SUBNET}.{self.index}.0/30"

    @property
    def netns_path(self) -> str:
        return f"/run/netns/{self.netns}"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def create(net: HostNetwork) -> None:
    """Namespace, veth pair, addresses, links up; removes a half-made one first."""
    destroy(net)
    _ip("netns", "add", net.netns)
    _ip("link", "add", net.veth_host, "type", "veth", "peer", "name", net.veth_guest)
    _ip("link", "set", net.veth_guest, "netns", net.netns)
    _ip("addr", "add", f"{net.gateway}/30", "dev", net.veth_host)
    _ip("link", "set", net.veth_host, "up")
    _ip("-n", net.netns, "addr", "add", f"{net.address}/30", "dev", net.veth_guest)
    _ip("-n", net.netns, "link", "set", net.veth_guest, "up")
    _ip("-n", net.netns, "link", "set", "lo", "up")
    _ip("-n", net.netns, "route", "add", "default", "via", net.gateway)
    ensure_guard()
    # Per link, not machine-wide: only packets arriving from testbed hosts are forwarded.
    Path(f"/proc/sys/net/ipv4/conf/{net.veth_host}/forwarding").write_text("1\n")


def ensure_guard() -> None:
    """Drop forwarded host traffic bound anywhere but another testbed host."""
    subprocess.run(["nft", "-f", "-"], input=GUARD_RULES, text=True, check=True)


def remove_guard() -> None:
    subprocess.run(["nft", "delete", "table", "inet", GUARD_TABLE], check=False,
                   capture_output=True)  # fmt: skip


def destroy(net: HostNetwork) -> None:
    _ip("link", "del", net.veth_host, check=False)
    _ip("netns", "del", net.netns, check=False)


def our_namespaces() -> list[str]:
    run = Path("/run/netns")
    if not run.is_dir():
        return []
    return sorted(p.name for p in run.iterdir() if p.name.startswith(NETNS_PREFIX))


def our_links() -> list[str]:
    result = _ip("-j", "link", "show", check=False)
    if result.returncode != 0 or not result.stdout.strip():
        return []
    names = [link["ifname"] for link in json.loads(result.stdout)]
    return sorted(n for n in names if n.startswith(VETH_PREFIX))


def index_of(name: str) -> int | None:
    """The host index a namespace or link name belongs to."""
    for prefix in (NETNS_PREFIX, VETH_PREFIX):
        if name.startswith(prefix):
            digits = name[len(prefix) :].rstrip("hg")
            return int(digits) if digits.isdigit() else None
    return None


def pids_in(netns: str) -> list[int]:
    """Processes living in ``netns``: everything that runs inside a testbed host."""
    result = _ip("netns", "pids", netns, check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]
