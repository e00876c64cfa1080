"""Node exporter by llmhost's monitoring role and by Ansible's, side by side on the same hosts.

    python bench/ansible_node_exporter.py --collection PATH [--ansible-playbook PATH]
                                          [--hosts 1 4] [--rounds 4] [--wait-minutes 30]

--collection is a checkout of github.com/prometheus-community/ansible (the collection
`prometheus.prometheus`; no release of the `ansible` package on PyPI ships it), and
--ansible-playbook the `ansible-playbook` of an environment with `pip install ansible`
(for ansible-core and community.general). Nothing of either is kept in this repository.

The work, on testbed hosts that the base role has prepared (untimed):
  llmhost  bench/node_exporter_deploy.py: the monitoring role on a host that is neither
           a `monitoring` host nor serving: Debian's node exporter package, a drop-in with its
           flags and hardening, the textfile directory, a firewall rule; port 9100.
  Ansible  the `prometheus.prometheus.node_exporter` role (user and group, the binary from
           a release archive checked against its sha256sums.txt, a templated unit, its config
           and textfile directories); port 9101. Both run offline: the archive is Debian's
           binary, version 1.5.0 (the package's own), packed as a release archive and
           served from this machine; the package is put in each host's APT cache.
Each round resets one side (its exporter stopped and every file it installed removed),
times a converge of the hosts, then a re-run, which must change nothing, and checks that
the exporter answers; then the other side, in ABBA order. Medians over the rounds, and the
ratios llmhost / Ansible. Ansible runs with its defaults (SSH ControlPersist 60 s: its
re-run reuses the converge's connections; no pipelining); pyinfra with its own (a new
connection per run). Waits while another run holds the testbed, and takes it down at the
end. Needs root.
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import io
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._testbed import wait_for_testbed  # noqa: E402
from llmhost import converge  # noqa: E402
from llmhost.onhost.layout import NODE_TEXTFILE_DIR  # noqa: E402
from llmhost.testing.testbed import Testbed, TestbedHost  # noqa: E402
from roles._common.operations import FIREWALL_RULES_DIR, FIREWALL_UNIT  # noqa: E402
from roles.monitoring import EXPORTER_FIREWALL  # noqa: E402
from roles.monitoring.defaults import NODE_EXPORTER_UNIT  # noqa: E402

DEPLOY = "bench/node_exporter_deploy.py"
PACKAGE = "prometheus-node-exporter"
VERSION = "1.5.0"  # Debian 12's package, binary and archive alike
ARCHIVE = f"node_exporter-{VERSION}.linux-amd64"
LLMHOST_PORT = 9100
ANSIBLE_PORT = 9101
PLAYBOOK = """\
- hosts: bench
  pre_tasks:
    - name: Package facts (the role's unit template reads systemd's version)
      ansible.builtin.package_facts:
  roles:
    - role: prometheus.prometheus.node_exporter
      vars:
        node_exporter_version: "{version}"
        node_exporter_binary_url: "{base}/{archive}.tar.gz"
        node_exporter_checksums_url: "{base}/sha256sums.txt"
        node_exporter_web_listen_address: "0.0.0.0:{port}"
        node_exporter_local_cache_path: "{cache}"
"""
RESET_LLMHOST = (
    f"systemctl disable --now {NODE_EXPORTER_UNIT} 2>/dev/null; "
    f"apt-get purge -y -q {PACKAGE} >/dev/null && "
    f"rm -rf /etc/systemd/system/{NODE_EXPORTER_UNIT}.d {NODE_TEXTFILE_DIR} "
    f"{FIREWALL_RULES_DIR}/{EXPORTER_FIREWALL}.nft && "
    f"systemctl daemon-reload && systemctl try-reload-or-restart {FIREWALL_UNIT} && "
    f"cp /root/bench-debs/*.deb /var/cache/apt/archives/"
)
RESET_ANSIBLE = (
    "systemctl disable --now node_exporter 2>/dev/null; "
    "rm -rf /usr/local/bin/node_exporter /etc/systemd/system/node_exporter.service "
    "/etc/node_exporter /var/lib/node_exporter && "
    "{ userdel node-exp 2>/dev/null; groupdel node-exp 2>/dev/null; true; } && "
    "systemctl daemon-reload"
)


@dataclass(frozen=True)
class Timing:
    converge_s: float
    noop_s: float


@dataclass(frozen=True)
class Side:
    name: str
    port: int
    reset: str
    converge: Callable[[], int]  # runs once on every host; returns the changes it made


# -- the offline inputs ---------------------------------------------------------------------


def download_package(directory: Path) -> Path:
    """Debian's node exporter package, as the hosts' APT would fetch it."""
    subprocess.run(
        ["apt-get", "download", "-q", PACKAGE], cwd=directory, check=True, capture_output=True
    )
    return next(directory.glob(f"{PACKAGE}_*.deb"))


def release_archive(deb: Path, directory: Path) -> None:
    """The package's binary packed as node exporter's release archive, and its checksums."""
    unpacked = directory / "unpacked"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        binary = unpacked / "usr/bin/prometheus-node-exporter"
        archive.add(binary, arcname=f"{ARCHIVE}/node_exporter")
    data = buffer.getvalue()
    (directory / f"{ARCHIVE}.tar.gz").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (directory / "sha256sums.txt").write_text(f"{digest}  {ARCHIVE}.tar.gz\n")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(directory: Path) -> str:
    """A local HTTP server for the archive (the role downloads it on the control machine)."""
    handler = partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


# -- the two sides ------------------------------------------------------------------------


def llmhost_inventory(testbed: Testbed, hosts: list[TestbedHost], path: Path) -> str:
    entries = [
        (
            host.name,
            {**testbed.inventory_data(host), "monitoring_scrape_from": [f"{host.gateway}/32"]},
        )
        for host in hosts
    ]
    path.write_text(f"bench = {entries!r}\n")
    return str(path)


def llmhost_converge(inventory: str) -> int:
    result = converge.run(inventory, DEPLOY)
    if result.returncode != 0 or result.errors:
        raise SystemExit(f"llmhost's run failed:\n{result.stderr[-3000:]}")
    return result.changes


def ansible_inventory(testbed: Testbed, hosts: list[TestbedHost], path: Path) -> str:
    ssh_args = f"-o UserKnownHostsFile={testbed.known_hosts} -o StrictHostKeyChecking=yes"
    lines = ["[bench]"]
    lines += [
        f"{host.name} ansible_host={host.address} ansible_user=root "
        f"ansible_ssh_private_key_file={testbed.ssh_key} ansible_ssh_common_args='{ssh_args}'"
        for host in hosts
    ]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def ansible_converge(playbook: Path, inventory: str, args: argparse.Namespace, work: Path) -> int:
    environment = {
        "PATH": f"{Path(args.ansible_playbook).parent}:/usr/bin:/bin",
        "ANSIBLE_COLLECTIONS_PATH": str(work / "collections"),
        "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
        "HOME": str(work),
    }
    result = subprocess.run(
        [args.ansible_playbook, "-i", inventory, str(playbook)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )
    recap = re.findall(r"changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", result.stdout)
    if result.returncode != 0 or not recap or any(u != "0" or f != "0" for _, u, f in recap):
        raise SystemExit(f"Ansible's run failed:\n{result.stdout[-4000:]}{result.stderr[-2000:]}")
    return sum(int(changed) for changed, _, _ in recap)


def prepare(testbed: Testbed, hosts: list[TestbedHost], deb: Path, inventory: str) -> None:
    """Untimed: the base role, python3-apt (Ansible's apt module needs it), the package cached."""
    prepared = converge.run(inventory, DEPLOY, data={"bench_step": "prepare"})
    if prepared.returncode != 0:
        raise SystemExit(f"preparing the hosts failed:\n{prepared.stderr[-3000:]}")
    for host in hosts:
        testbed.ssh(host, "apt-get install -y -q --no-install-recommends python3-apt >/dev/null")
        testbed.ssh(host, "mkdir -p /root/bench-debs")
        testbed.put(host, f"/root/bench-debs/{deb.name}", deb.read_bytes(), mode="0644")


def check_exporter(testbed: Testbed, hosts: list[TestbedHost], side: Side) -> None:
    for host in hosts:
        metrics = testbed.ssh(
            host, f"python3 -c \"import urllib.request as u; print(u.urlopen("
            f"'http://127.0.0.1:{side.port}/metrics', timeout=10).read().decode())\"",
        )  # fmt: skip
        if "node_exporter_build_info" not in metrics or "node_systemd_unit_state" not in metrics:
            raise SystemExit(f"{host.name}: {side.name}'s exporter on {side.port} lacks metrics")


def time_side(testbed: Testbed, hosts: list[TestbedHost], side: Side) -> Timing:
    for host in hosts:
        testbed.ssh(host, side.reset)
    start = time.perf_counter()
    side.converge()
    converge_s = time.perf_counter() - start
    start = time.perf_counter()
    changes = side.converge()
    noop_s = time.perf_counter() - start
    if changes:
        raise SystemExit(f"{side.name}'s re-run changed {changes} thing(s): not idempotent")
    check_exporter(testbed, hosts, side)
    return Timing(converge_s, noop_s)


def run_rounds(
    testbed: Testbed, hosts: list[TestbedHost], sides: tuple[Side, Side], rounds: int
) -> dict[str, list[Timing]]:
    llmhost, ansible = sides
    times: dict[str, list[Timing]] = {llmhost.name: [], ansible.name: []}
    for side in sides:  # one untimed round each: caches and first connections
        time_side(testbed, hosts, side)
    for number in range(1, rounds + 1):
        order = sides if number % 2 else sides[::-1]
        for side in order:
            times[side.name].append(time_side(testbed, hosts, side))
        a, b = times[llmhost.name][-1], times[ansible.name][-1]
        print(
            f"  round {number} ({order[0].name} first): converge llmhost {a.converge_s:.1f} s, "
            f"Ansible {b.converge_s:.1f} s; no-op llmhost {a.noop_s:.1f} s, "
            f"Ansible {b.noop_s:.1f} s; no-op ratio {a.noop_s / b.noop_s:.2f}",
            flush=True,
        )
    return times


def summarise(count: int, times: dict[str, list[Timing]]) -> str:
    def median(name: str, field: str) -> float:
        return statistics.median(getattr(t, field) for t in times[name])

    lines = [f"{count} host(s), medians:"]
    for field, label in (("converge_s", "converge"), ("noop_s", "no-op re-run")):
        mine, theirs = median("llmhost", field), median("Ansible", field)
        ratios = [
            getattr(a, field) / getattr(b, field)
            for a, b in zip(times["llmhost"], times["Ansible"], strict=True)
        ]
        lines.append(
            f"  {label}: llmhost {mine:.2f} s, Ansible {theirs:.2f} s, ratio {mine / theirs:.2f} "
            f"(rounds {min(ratios):.2f}-{max(ratios):.2f})"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collection", type=Path, required=True)
    parser.add_argument("--ansible-playbook", default=shutil.which("ansible-playbook"))
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--wait-minutes", type=float, default=30)
    args = parser.parse_args()
    if not args.ansible_playbook or not Path(args.ansible_playbook).exists():
        parser.error("give --ansible-playbook: ansible-playbook from `pip install ansible`")
    if not (args.collection / "roles/node_exporter").is_dir():
        parser.error(f"{args.collection} is no checkout of prometheus-community/ansible")

    testbed = Testbed()
    if not wait_for_testbed(testbed, args.wait_minutes):
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        collection = work / "collections/ansible_collections/prometheus/prometheus"
        collection.parent.mkdir(parents=True)
        collection.symlink_to(args.collection.resolve())
        files = work / "files"
        files.mkdir()
        deb = download_package(files)
        release_archive(deb, files)
        playbook = work / "node_exporter.yml"
        playbook.write_text(
            PLAYBOOK.format(
                version=VERSION, base=serve(files), archive=ARCHIVE, port=ANSIBLE_PORT,
                cache=work / "ansible-cache",
            )
        )  # fmt: skip
        try:
            everyone = testbed.up(max(args.hosts))
            prepare(testbed, everyone, deb, llmhost_inventory(testbed, everyone, work / "all.py"))
            for count in sorted(args.hosts):
                hosts = everyone[:count]
                mine = llmhost_inventory(testbed, hosts, work / f"llmhost-{count}.py")
                theirs = ansible_inventory(testbed, hosts, work / f"ansible-{count}.ini")
                sides = (
                    Side("llmhost", LLMHOST_PORT, RESET_LLMHOST, partial(llmhost_converge, mine)),
                    Side(
                        "Ansible", ANSIBLE_PORT, RESET_ANSIBLE,
                        partial(ansible_converge, playbook, theirs, args, work),
                    ),
                )  # fmt: skip
                print(f"{count} host(s), {args.rounds} rounds:", flush=True)
                print(summarise(count, run_rounds(testbed, hosts, sides, args.rounds)), flush=True)
        finally:
            testbed.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
