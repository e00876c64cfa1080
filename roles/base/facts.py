"""Facts the base role's preflight asserts on, gathered in one round trip."""

from __future__ import annotations

from typing import TypedDict

from pyinfra.api import FactBase


class PlatformDict(TypedDict):
    pid1: str
    os_id: str
    os_version: str
    os_codename: str
    container: str
    ssh_client: str
    sshd_includes_dropins: bool


class Platform(FactBase[PlatformDict]):
    """What the host runs: init, OS release, container technology, and the deploy's SSH peer.

    ``ssh_client`` is the address this deploy connects from (from ``SSH_CONNECTION``),
    so the firewall and sshd changes can be checked against locking the deploy out.
    """

    def command(self) -> str:
        return (
            'printf "pid1=%s\\n" "$(cat /proc/1/comm)"; '
            '( . /etc/os-release && printf "os_id=%s\\nos_version=%s\\nos_codename=%s\\n" '
            '"$ID" "$VERSION_ID" "$VERSION_CODENAME" ); '
            'printf "container=%s\\n" "$(systemd-detect-virt --container 2>/dev/null || true)"; '
            'printf "ssh_client=%s\\n" "${SSH_CONNECTION%% *}"; '
            "if grep -Eqi '^[[:space:]]*Include[[:space:]]+/etc/ssh/sshd_config.d/\\*\\.conf' "
            "/etc/ssh/sshd_config 2>/dev/null; then echo sshd_includes_dropins=yes; "
            "else echo sshd_includes_dropins=no; fi"
        )

    def process(self, output: list[str]) -> PlatformDict:
        values = dict(line.split("=", 1) for line in output if "=" in line)
        return {
            "pid1": values.get("pid1", ""),
            "os_id": values.get("os_id", ""),
            "os_version": values.get("os_version", ""),
            "os_codename": values.get("os_codename", ""),
            "container": values.get("container", "none") or "none",
            "ssh_client": values.get("ssh_client", ""),
            "sshd_includes_dropins": values.get("sshd_includes_dropins") == "yes",
        }


class SshdListenPorts(FactBase[list[int]]):
    """The ports sshd listens on (``sshd -T``'s ``listenaddress`` lines), which the firewall opens.

    ``Port`` lines alone are not enough: ``ListenAddress 0.0.0.0:2222`` makes sshd listen
    on 2222 while it still reports ``port 22``; sshd -T lists every address and port it
    binds. The inventory's ``ssh_port`` is where this deploy connects, which can differ
    (NAT, a bastion); opening only that could lock out the next run.
    """

    def requires_command(self) -> str:
        return "sshd"

    def command(self) -> str:
        return "sshd -T 2>/dev/null | awk '$1 == \"listenaddress\" {print $2}'"

    @staticmethod
    def default() -> list[int]:
        return []

    def process(self, output: list[str]) -> list[int]:
        ports = {line.rsplit(":", 1)[-1].strip() for line in output if ":" in line}
        return sorted(int(port) for port in ports if port.isdigit())
