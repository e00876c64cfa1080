"""Bring testbed hosts up and down, find what a crash left behind, and describe them."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from llmhost.errors import ActionableError
from llmhost.testing.testbed import network, processes
from llmhost.testing.testbed.image import ensure_image
from llmhost.testing.testbed.network import HostNetwork

DEFAULT_MIRROR = "http://deb.debian.org/debian"
PROXY_PORT = 8888
# Each host's stand-in for an internal Debian mirror (a reverse proxy to the archive the
# image came from): what a host without egress installs packages from.
MIRROR_PORT = 8889
SECURITY_ARCHIVE = "http://security.debian.org/debian-security"
REGION = "gb-testbed"
HARDWARE = "cpu"
READY_TIMEOUT = 120.0
MACHINE_LOCK = Path("/run/lock/llmhost-testbed.lock")
# The only destinations a host's egress proxy forwards to: the package registries.
EGRESS_ALLOWED = (
    "deb.debian.org",
    "security.debian.org",
    "pypi.org",
    "files.pythonhosted.org",
)
# Where `llmhost models mirror` would fetch hub models (the tests serve them locally).
TEST_HUB = ("huggingface.co",)
REQUIRED_TOOLS = {
    "systemd-nspawn": "systemd-container",
    "debootstrap": "debootstrap",
    "tinyproxy": "tinyproxy",
    "chronyd": "chrony",
    "ssh": "openssh-client",
    "ssh-keygen": "openssh-client",
    "ip": "iproute2",
    "mount": "mount",
    "umount": "mount",
    "nft": "nftables",
}


class TestbedError(ActionableError, RuntimeError):
    """The testbed cannot do what was asked; the message says how to fix it."""


def default_root() -> Path:
    return Path(os.environ.get("LLMHOST_TESTBED_DIR", "/var/lib/llmhost-testbed"))


@dataclass
class TestbedHost:
    __test__ = False  # not a pytest test class, despite the name
    name: str
    index: int
    address: str
    gateway: str
    rootfs: str
    nspawn_pid: int
    proxy_pid: int
    ntp_pid: int
    mirror_pid: int = 0  # 0: recorded before hosts had a mirror (stale: replaced)

    @property
    def network(self) -> HostNetwork:
        return HostNetwork(self.index)

    def healthy(self) -> bool:
        return (
            processes.alive(self.nspawn_pid, self.rootfs)
            and processes.alive(self.proxy_pid, "tinyproxy")
            and processes.alive(self.ntp_pid, "chronyd")
            and processes.alive(self.mirror_pid, "tinyproxy")
        )

    @property
    def archive_mirror(self) -> str:
        """The host's Debian archives without egress: ``{this}/debian``, ``/debian-security``."""
        return f"http://{self.gateway}:{MIRROR_PORT}"


class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, root: Path | None = None, mirror: str | None = None) -> None:
        self.root = root or default_root()
        self.mirror = mirror or os.environ.get("LLMHOST_TESTBED_MIRROR", DEFAULT_MIRROR)
        self.state_file = self.root / "testbed.json"
        self.ssh_key = self.root / "ssh" / "id_ed25519"
        self.known_hosts = self.root / "ssh" / "known_hosts"
        self.images_dir = self.root / "images"
        self.hosts_dir = self.root / "hosts"

    # -- public -----------------------------------------------------------

    def hosts(self) -> list[TestbedHost]:
        """The hosts recorded as up (healthy or not), in index order."""
        if not self.state_file.exists():
            return []
        data = json.loads(self.state_file.read_text())
        return sorted((TestbedHost(**h) for h in data["hosts"]), key=lambda h: h.index)

    def up(self, count: int) -> list[TestbedHost]:
        """Exactly ``count`` healthy hosts: reuse healthy ones, replace stale ones."""
        if count < 1:
            raise TestbedError("--hosts must be at least 1")
        if count > 250:
            raise TestbedError("--hosts must be at most 250 (one 10.231.N.0/30 per host)")
        require_root(*REQUIRED_TOOLS)
        with self._lock():
            kept = {h.name: h for h in self._clean_stale()}
            self._ensure_ssh_key()
            image = self._run_step(
                "building the host image", ensure_image, self.images_dir, self.mirror
            )
            for extra in [h for h in kept.values() if h.index > count]:
                self._destroy_host(extra)
                del kept[extra.name]
            self._save(kept.values())  # an inventory read now must not list a removed host
            for index in range(1, count + 1):
                if f"tb{index}" not in kept:
                    kept[f"tb{index}"] = self._create_host(index, image)
                    self._save(kept.values())  # recorded at once: a crash leaves it findable
            self._write_known_hosts(kept.values())
            for host in sorted(kept.values(), key=lambda h: h.index):
                try:
                    self._wait_ready(host)
                except TestbedError:
                    console = Path(host.rootfs).parent / "console.log"
                    if console.exists():  # kept: the host's own account of what went wrong
                        shutil.copy(console, self.root / f"{host.name}-failed-console.log")
                    self._destroy_host(host)
                    del kept[host.name]
                    self._save(kept.values())
                    raise
            return sorted(kept.values(), key=lambda h: h.index)

    def down(self, purge_image: bool = False) -> None:
        """Stop every host and remove every process, namespace, link and mount made."""
        require_root("ip", "umount", "nft")
        with self._lock():
            for host in self.hosts():
                self._destroy_host(host)
            self._sweep_orphans(keep=[])
            network.remove_guard()
            self.state_file.unlink(missing_ok=True)
            self.known_hosts.unlink(missing_ok=True)
            if purge_image:
                shutil.rmtree(self.images_dir, ignore_errors=True)

    def status(self) -> list[dict[str, Any]]:
        rows = []
        for host in self.hosts():
            healthy = host.healthy()
            system = self.ssh(host, "systemctl is-system-running", check=False) if healthy else ""
            rows.append(
                {
                    "name": host.name,
                    "address": host.address,
                    "healthy": healthy,
                    "system": system.strip() or "unreachable",
                    "nspawn_pid": host.nspawn_pid,
                }
            )
        return rows

    def find(self, name: str) -> TestbedHost:
        for host in self.hosts():
            if name in (host.name, host.address):
                return host
        known = ", ".join(h.name for h in self.hosts()) or "none; run `llmhost testbed up`"
        raise TestbedError(f"no testbed host {name!r} (hosts: {known})")

    def set_egress(self, host: TestbedHost, open_: bool) -> TestbedHost:
        """Let ``host``'s proxy forward to the package registries again, or to nowhere.

        Closed, the host has no way out at all: the guard drops whatever it sends past
        this machine, and its proxy refuses every destination. Its archive mirror and the
        other hosts (the registry) stay reachable, as an internal network's would.
        """
        require_root("tinyproxy")
        with self._lock():
            hosts = {h.name: h for h in self.hosts()}
            current = hosts[host.name]
            processes.stop(current.proxy_pid, "tinyproxy", timeout=5)
            host_dir = self.hosts_dir / host.name
            allowed = EGRESS_ALLOWED if open_ else ()
            current.proxy_pid = self._start_proxy(host_dir, current.network, allowed)
            self._save(hosts.values())
            return current

    def recreate(self, name: str) -> TestbedHost:
        """Destroy host ``name`` and boot it again blank, at the same name and address.

        What a disaster-recovery rebuild starts from: a reinstalled machine with nothing
        of what ran there, and new SSH host keys (known_hosts is rewritten).
        """
        require_root(*REQUIRED_TOOLS)
        with self._lock():
            hosts = {h.name: h for h in self.hosts()}
            old = hosts.pop(self.find(name).name)
            self._destroy_host(old)
            self._save(hosts.values())
            image = self._run_step(
                "building the host image", ensure_image, self.images_dir, self.mirror
            )
            hosts[old.name] = self._create_host(old.index, image)
            self._save(hosts.values())
            self._write_known_hosts(hosts.values())
            self._wait_ready(hosts[old.name])
            return hosts[old.name]

    def ssh_argv(self, host: TestbedHost) -> list[str]:
        return [
            "ssh",
            "-i",
            str(self.ssh_key),
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=3",
            "-o",
            "LogLevel=ERROR",
            f"root@{host.address}",
        ]

    def ssh(self, host: TestbedHost, command: str, check: bool = True) -> str:
        result = subprocess.run(
            [*self.ssh_argv(host), command], capture_output=True, text=True, timeout=120
        )
        if check and result.returncode != 0:
            raise TestbedError(f"{host.name}: `{command}` failed: {result.stderr.strip()}")
        return result.stdout

    def put(self, host: TestbedHost, path: str, content: str | bytes, mode: str = "0600") -> None:
        """Write ``content`` to ``path`` on ``host`` through SSH's stdin (never its argv)."""
        command = f"umask 077 && cat > {shlex.quote(path)} && chmod {mode} {shlex.quote(path)}"
        result = subprocess.run(
            [*self.ssh_argv(host), command],
            input=content.encode() if isinstance(content, str) else content,
            capture_output=True,
            timeout=60,
        )
        if result.returncode != 0:
            error = result.stderr.decode(errors="replace").strip()
            raise TestbedError(f"{host.name}: writing {path} failed: {error}")

    def inventory_data(self, host: TestbedHost, egress: bool = True) -> dict[str, Any]:
        """What pyinfra needs to reach ``host``, and the settings a testbed host runs with.

        Without ``egress`` the host is set up as one with no way out: no proxy, and its
        packages from the mirror beside it (the model and runtime come from the
        registry either way).
        """
        network = (
            {"base_http_proxy": f"http://{host.gateway}:{PROXY_PORT}"}
            if egress
            else {
                "base_apt_mirror": f"{host.archive_mirror}/debian",
                "base_apt_security_mirror": f"{host.archive_mirror}/debian-security",
            }
        )
        return {
            "ssh_hostname": host.address,
            "ssh_user": "root",
            "ssh_key": str(self.ssh_key),
            "ssh_known_hosts_file": str(self.known_hosts),
            "ssh_strict_host_key_checking": "yes",
            "region": REGION,
            "hardware": HARDWARE,
            **network,
            "base_ntp_servers": [host.gateway],
            "secrets_dir": str(self.root / "secrets"),
            # The egress proxy forwards to EGRESS_ALLOWED alone: apt.grafana.com is not there.
            "monitoring_grafana": False,
            "residency_endpoints": self.residency_endpoints(host),
            # Each host's proxy, mirror and time server sit at its own gateway address.
            "rebuild_host_values": {"gateway": host.gateway},
        }

    def residency_endpoints(self, host: TestbedHost) -> dict[str, str]:
        """Where the testbed's endpoints are, for the residency audit: all in its region.

        The testbed stands in for a regulated network on this machine: the proxy and
        the NTP server beside each host are here, and so is the control machine. What the
        proxy forwards to (the package registries), the Debian mirror it was built from
        and the hub (the tests mirror from a local stand-in) are declared in the
        testbed's region too: test hosts carry nobody's data. A real inventory declares
        where its endpoints really are.
        """
        archives = (self.mirror, SECURITY_ARCHIVE)
        public = (*EGRESS_ALLOWED, *(urlsplit(a).hostname or "" for a in archives), *TEST_HUB)
        return {host.gateway: REGION, **{name: REGION for name in public if name}}

    # -- hosts -------------------------------------------------------------

    def _create_host(self, index: int, image: Path) -> TestbedHost:
        """Make one host; on any failure remove what was made and say which step failed."""
        try:
            return self._make_host(index, image)
        except (OSError, subprocess.SubprocessError, TimeoutError) as error:
            self._sweep_orphans(keep=[h for h in self.hosts() if h.index != index])
            raise TestbedError(f"tb{index}: could not be created: {_describe(error)}") from error

    def _make_host(self, index: int, image: Path) -> TestbedHost:
        net = HostNetwork(index)
        name = f"tb{index}"
        host_dir = self.hosts_dir / name
        shutil.rmtree(host_dir, ignore_errors=True)
        rootfs = host_dir / "rootfs"
        for sub in ("upper", "work", "rootfs", "proxy", "ntp"):
            (host_dir / sub).mkdir(parents=True)
        subprocess.run(
            [
                "mount",
                "-t",
                "overlay",
                f"llmhost-{name}",
                "-o",
                f"lowerdir={image},upperdir={host_dir / 'upper'},workdir={host_dir / 'work'}",
                str(rootfs),
            ],
            check=True,
        )
        self._personalise(rootfs, name)
        network.create(net)
        proxy_pid = self._start_proxy(host_dir, net, EGRESS_ALLOWED)
        mirror_pid = self._start_mirror(host_dir, net)
        ntp_pid = self._start_ntp(host_dir, net)
        nspawn_pid = self._boot(host_dir, rootfs, net, name)
        return TestbedHost(
            name=name,
            index=index,
            address=net.address,
            gateway=net.gateway,
            rootfs=str(rootfs),
            nspawn_pid=nspawn_pid,
            proxy_pid=proxy_pid,
            ntp_pid=ntp_pid,
            mirror_pid=mirror_pid,
        )

    def _personalise(self, rootfs: Path, name: str) -> None:
        (rootfs / "etc" / "hostname").write_text(f"{name}\n")
        (rootfs / "etc" / "machine-id").write_text(uuid.uuid4().hex + "\n")
        hosts = rootfs / "etc" / "hosts"
        hosts.write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{name}\n::1\tlocalhost ip6-localhost\n")
        ssh_dir = rootfs / "root" / ".ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        authorized = ssh_dir / "authorized_keys"
        authorized.write_text(self.ssh_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        subprocess.run(["ssh-keygen", "-A", "-f", str(rootfs)], check=True, capture_output=True)

    def _start_proxy(self, host_dir: Path, net: HostNetwork, allowed_domains: Iterable[str]) -> int:
        """The host's egress proxy, forwarding to ``allowed_domains`` alone (none: nowhere)."""
        proxy_dir = host_dir / "proxy"
        shutil.chown(proxy_dir, "nobody", "nogroup")
        config = proxy_dir / "tinyproxy.conf"
        allowed = proxy_dir / "allowed-domains"
        allowed.write_text("".join(f"{domain}\n" for domain in allowed_domains))
        config.write_text(
            f"User nobody\nGroup nogroup\nPort {PROXY_PORT}\nListen {net.gateway}\n"
            f"Allow {net.subnet}\nConnectPort 443\nMaxClients 100\nTimeout 600\n"
            f'Filter "{allowed}"\nFilterType fnmatch\nFilterDefaultDeny Yes\n'
            f'PidFile "{proxy_dir}/tinyproxy.pid"\nLogFile "{proxy_dir}/tinyproxy.log"\n'
            "LogLevel Connect\n"
        )
        subprocess.run(["tinyproxy", "-c", str(config)], check=True)
        return processes.read_pidfile(proxy_dir / "tinyproxy.pid")

    def _start_mirror(self, host_dir: Path, net: HostNetwork) -> int:
        """A reverse proxy to the Debian archives: it serves their paths, forwards nothing else."""
        mirror_dir = host_dir / "mirror"
        mirror_dir.mkdir(exist_ok=True)
        shutil.chown(mirror_dir, "nobody", "nogroup")
        config = mirror_dir / "tinyproxy.conf"
        config.write_text(
            f"User nobody\nGroup nogroup\nPort {MIRROR_PORT}\nListen {net.gateway}\n"
            f"Allow {net.subnet}\nMaxClients 100\nTimeout 600\n"
            "ReverseOnly Yes\nReverseMagic No\n"
            f'ReversePath "/debian/" "{self.mirror.rstrip("/")}/"\n'
            f'ReversePath "/debian-security/" "{SECURITY_ARCHIVE}/"\n'
            f'PidFile "{mirror_dir}/tinyproxy.pid"\nLogFile "{mirror_dir}/tinyproxy.log"\n'
            "LogLevel Connect\n"
        )
        subprocess.run(["tinyproxy", "-c", str(config)], check=True)
        return processes.read_pidfile(mirror_dir / "tinyproxy.pid")

    def _start_ntp(self, host_dir: Path, net: HostNetwork) -> int:
        ntp_dir = host_dir / "ntp"
        config = ntp_dir / "chrony.conf"
        config.write_text(
            f"bindaddress {net.gateway}\nallow {net.subnet}\nlocal stratum 8\ncmdport 0\n"
            f"pidfile {ntp_dir}/chronyd.pid\n"
        )
        subprocess.run(["chronyd", "-4", "-x", "-f", str(config)], check=True)
        return processes.read_pidfile(ntp_dir / "chronyd.pid")

    def _boot(self, host_dir: Path, rootfs: Path, net: HostNetwork, name: str) -> int:
        log = (host_dir / "console.log").open("wb")
        machine = subprocess.Popen(
            [
                "systemd-nspawn",
                f"--directory={rootfs}",
                f"--machine={name}",
                "--register=no",
                "--keep-unit",
                "--boot",
                f"--network-namespace-path={net.netns_path}",
                # nftables inside the host; the namespace confines it to the host's own network.
                "--capability=CAP_NET_ADMIN",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return machine.pid

    def _wait_ready(self, host: TestbedHost) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            if not processes.alive(host.nspawn_pid, host.rootfs):
                raise TestbedError(
                    f"{host.name} stopped while booting; its console is kept in "
                    f"{self.root}/{host.name}-failed-console.log"
                )
            result = subprocess.run(
                [*self.ssh_argv(host), "systemctl is-system-running --wait"],
                capture_output=True,
                text=True,
                timeout=READY_TIMEOUT,
            )
            last = (result.stdout + result.stderr).strip()
            if result.stdout.strip() in ("running", "degraded"):
                if result.stdout.strip() == "degraded":
                    failed = self.ssh(host, "systemctl --failed --plain --no-legend", check=False)
                    print(f"testbed: {host.name} is degraded:\n{failed}", file=sys.stderr)
                return
            time.sleep(0.5)
        raise TestbedError(f"{host.name} did not become reachable over SSH: {last}")

    def _destroy_host(self, host: TestbedHost) -> None:
        rootfs = Path(host.rootfs)
        processes.stop(host.nspawn_pid, host.rootfs)
        # A container outlives a SIGKILLed nspawn; all of it lives in the host's namespace.
        for pid in network.pids_in(host.network.netns):
            processes.stop(pid, timeout=5)
        processes.stop(host.proxy_pid, "tinyproxy", timeout=5)
        processes.stop(host.mirror_pid, "tinyproxy", timeout=5)
        processes.stop(host.ntp_pid, "chronyd", timeout=5)
        self._unmount_under(rootfs.parent)
        network.destroy(host.network)
        shutil.rmtree(rootfs.parent, ignore_errors=True)

    # -- stale state -------------------------------------------------------

    def _clean_stale(self) -> list[TestbedHost]:
        """Destroy recorded hosts that are no longer whole, and anything unrecorded."""
        healthy = []
        for host in self.hosts():
            if host.healthy():
                healthy.append(host)
            else:
                print(f"testbed: {host.name} is stale; cleaning it up", file=sys.stderr)
                self._destroy_host(host)
        self._sweep_orphans(keep=healthy)
        self._save(healthy)
        return healthy

    def _sweep_orphans(self, keep: list[TestbedHost]) -> None:
        kept = {h.index for h in keep}
        for name in network.our_namespaces():
            if network.index_of(name) not in kept:
                for pid in network.pids_in(name):
                    processes.stop(pid, timeout=5)
                subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)
        for name in network.our_links():
            if network.index_of(name) not in kept:
                subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)
        if self.hosts_dir.is_dir():
            for host_dir in self.hosts_dir.iterdir():
                if host_dir.name in {h.name for h in keep}:
                    continue
                self._stop_pidfiles(host_dir)
                for pid in processes.pids_with_cmdline(f"--directory={host_dir / 'rootfs'}"):
                    processes.stop(pid)
                self._unmount_under(host_dir)
                shutil.rmtree(host_dir, ignore_errors=True)

    @staticmethod
    def _stop_pidfiles(host_dir: Path) -> None:
        for pidfile, expect in (
            (host_dir / "proxy" / "tinyproxy.pid", "tinyproxy"),
            (host_dir / "mirror" / "tinyproxy.pid", "tinyproxy"),
            (host_dir / "ntp" / "chronyd.pid", "chronyd"),
        ):
            with contextlib.suppress(FileNotFoundError, ValueError):
                processes.stop(int(pidfile.read_text().strip()), expect, timeout=5)

    @staticmethod
    def _unmount_under(directory: Path) -> None:
        for mountpoint in sorted(mounts_under(directory), reverse=True):
            subprocess.run(["umount", mountpoint], check=False, capture_output=True)
            if mountpoint in mounts_under(directory):
                subprocess.run(["umount", "--lazy", mountpoint], check=False)

    # -- files -------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One testbed per machine: namespace, link and subnet names are machine-wide."""
        self.root.mkdir(parents=True, exist_ok=True)
        with MACHINE_LOCK.open("w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _run_step(step: str, function: Any, *args: Any) -> Any:
        try:
            return function(*args)
        except (OSError, subprocess.SubprocessError) as error:
            raise TestbedError(f"{step} failed: {_describe(error)}") from error

    def _save(self, hosts: Iterable[TestbedHost]) -> None:
        data = {"hosts": [asdict(h) for h in sorted(hosts, key=lambda h: h.index)]}
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(data, indent=2) + "\n")
        temporary.rename(self.state_file)

    def _ensure_ssh_key(self) -> None:
        if self.ssh_key.exists():
            return
        self.ssh_key.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "llmhost-testbed",
                "-f",
                str(self.ssh_key),
            ],
            check=True,
        )

    def _write_known_hosts(self, hosts: Iterable[TestbedHost]) -> None:
        lines = []
        for host in sorted(hosts, key=lambda h: h.index):
            for public in sorted((Path(host.rootfs) / "etc" / "ssh").glob("ssh_host_*_key.pub")):
                key_type, key = public.read_text().split()[:2]
                lines.append(f"{host.address} {key_type} {key}")
        self.known_hosts.write_text("\n".join(lines) + "\n")


def mounts_under(directory: Path) -> list[str]:
    prefix = str(directory.resolve()) + "/"
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mountpoint = line.split()[4].replace("\\040", " ")
        if mountpoint.startswith(prefix) or mountpoint == prefix.rstrip("/"):
            found.append(mountpoint)
    return found


def require_root(*tools: str) -> None:
    if os.geteuid() != 0:
        raise TestbedError("the testbed boots hosts and makes namespaces: run it as root")
    missing = sorted({REQUIRED_TOOLS[t] for t in tools if not shutil.which(t)})
    if missing:
        raise TestbedError(
            f"missing tools; install them with: apt-get install -y {' '.join(missing)} "
            "(or run ./scripts/setup)"
        )


def _describe(error: BaseException) -> str:
    """One line for a failed step, with the command's own error output when there is one."""
    if isinstance(error, subprocess.CalledProcessError):
        output = error.stderr or error.stdout or b""
        text = output.decode(errors="replace") if isinstance(output, bytes) else output
        tail = text.strip().splitlines()[-1:] or ["no output"]
        return f"`{' '.join(map(str, error.cmd))}` exited {error.returncode}: {tail[0]}"
    return str(error) or type(error).__name__
