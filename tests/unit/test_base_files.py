"""What the base role writes: templates rendered exactly as hosts get them."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llmhost.paths import TEMPLATES
from llmhost.render import render
from roles._common.operations import split_sources
from roles.base.facts import Platform


def test_every_template_says_it_is_managed_by_llmhost():
    templates = sorted(TEMPLATES.rglob("*.j2"))
    assert templates
    for path in templates:
        assert "managed by llmhost" in "\n".join(path.read_text().splitlines()[:3]), path


def test_apt_proxy_covers_http_and_https_and_bypasses_internal_hosts():
    text = render("base/apt-proxy.conf.j2", proxy="http://p:3128", no_proxy=["mirror.int"])
    assert 'Acquire::http::Proxy "http://p:3128";' in text
    assert 'Acquire::https::Proxy "http://p:3128";' in text
    assert 'Acquire::https::Proxy::mirror.int "DIRECT";' in text


def test_sources_list_points_every_suite_at_the_mirror():
    text = render(
        "base/sources.list.j2",
        mirror="http://m/debian",
        security_mirror="http://m/debian-security",
        codename="bookworm",
        components=["main", "non-free-firmware"],
    )
    assert text.splitlines()[2:] == [
        "deb http://m/debian bookworm main non-free-firmware",
        "deb http://m/debian bookworm-updates main non-free-firmware",
        "deb http://m/debian-security bookworm-security main non-free-firmware",
    ]


def test_chrony_follows_the_configured_servers_and_leaves_rtc_in_containers():
    text = render("base/chrony.conf.j2", servers=["10.0.0.1", "ntp.int"], in_container=True)
    assert "server 10.0.0.1 iburst\nserver ntp.int iburst\n" in text
    assert "rtcsync" not in text
    assert "rtcsync" in render("base/chrony.conf.j2", servers=["a"], in_container=False)


def test_sshd_root_login_follows_the_deploy_user():
    assert "PermitRootLogin no\n" in render("base/sshd-hardening.conf.j2", permit_root_login="no")


def test_ssh_rules_restrict_sources_per_family():
    text = render(
        "base/firewall-allow.nft.j2",
        role="base",
        purpose="SSH",
        ports=[22, 2222],
        ipv4_sources=["192.0.2.0/24"],
        ipv6_sources=["2001:db8::/32"],
    )
    rules = [line for line in text.splitlines() if line.startswith("add rule")]
    assert rules == [
        "add rule inet llmhost input ip saddr { 192.0.2.0/24 } tcp dport { 22, 2222 } accept",
        "add rule inet llmhost input ip6 saddr { 2001:db8::/32 } tcp dport { 22, 2222 } accept",
    ]


def test_sources_split_by_family_and_normalise():
    assert split_sources(["10.1.2.3/8", "2001:db8::1/32", "192.0.2.7"]) == (
        ["10.0.0.0/8", "192.0.2.7/32"],
        ["2001:db8::/32"],
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nft") or not shutil.which("unshare"),
    reason="nft --check needs root, nftables and unshare to test in a private network namespace",
)
def test_rendered_rule_set_passes_nft_check(tmp_path):
    rules = tmp_path / "firewall.d"
    rules.mkdir()
    (tmp_path / "firewall.nft").write_text(render("base/firewall.nft.j2", rules_dir=str(rules)))
    (rules / "00-ssh.nft").write_text(
        render(
            "base/firewall-allow.nft.j2",
            role="base",
            purpose="SSH",
            ports=[22, 2222],
            ipv4_sources=["192.0.2.0/24"],
            ipv6_sources=["2001:db8::/32"],
        )
    )
    (rules / "10-any.nft").write_text(
        render(
            "base/firewall-allow.nft.j2",
            role="gateway",
            purpose="API",
            ports=[8000],
            ipv4_sources=[],
            ipv6_sources=[],
        )
    )
    check = subprocess.run(
        ["unshare", "--net", "nft", "--check", "--file", str(tmp_path / "firewall.nft")],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stderr


def test_platform_fact_parses_captured_output():
    output = [
        "pid1=systemd",
        "os_id=ubuntu",
        "os_version=24.04",
        "os_codename=noble",
        "container=",
        "ssh_client=192.0.2.10",
        "sshd_includes_dropins=yes",
    ]
    assert Platform().process(output) == {
        "pid1": "systemd",
        "os_id": "ubuntu",
        "os_version": "24.04",
        "os_codename": "noble",
        "container": "none",
        "ssh_client": "192.0.2.10",
        "sshd_includes_dropins": True,
    }


def test_platform_fact_command_reads_this_machine_correctly():
    result = subprocess.run(
        ["sh", "-c", Platform().command()], capture_output=True, text=True, check=True
    )
    fact = Platform().process(result.stdout.splitlines())
    release = dict(
        line.split("=", 1)
        for line in Path("/etc/os-release").read_text().splitlines()
        if "=" in line
    )
    assert fact["os_id"] == release["ID"].strip('"')
    assert fact["os_version"] == release.get("VERSION_ID", "").strip('"')
    assert fact["pid1"] == Path("/proc/1/comm").read_text().strip()
