"""The base role's plan for a host, given its facts (no host is contacted)."""

import pytest

from llmhost.errors import ConfigError
from roles.base import base
from tests.unit.pyinfra_plan import FRESH_DEBIAN_12, per_argument, plan

HOST = {"region": "gb-lon1", "hardware": "cpu"}


def commands(planned, prefix):
    return [c for name, cmds in planned.items() if prefix in name for c in cmds]


def test_fresh_host_gets_packages_user_sshd_and_firewall():
    planned = plan(base, HOST)
    install = commands(planned, "Install base packages")
    assert install[0] == "apt-get update"
    assert "chrony" in install[1] and "nftables" in install[1]
    assert "groupadd -r llmhost" in commands(planned, "Group llmhost")
    sshd = commands(planned, "sshd: validate")
    assert sshd[0].startswith("sshd -t ||")
    assert "grep -qx 'passwordauthentication no'" in sshd[1]
    assert sshd[-1] == "systemctl try-reload-or-restart ssh.service"
    assert "systemctl enable llmhost-firewall.service" in commands(planned, "Firewall: active")


def test_installed_packages_are_a_noop_without_apt_update():
    installed = {"chrony": ["4.3"], "nftables": ["1.0.6"], "ca-certificates": ["2023"]}
    planned = plan(base, HOST, {"DebPackages": installed})
    assert commands(planned, "Install base packages") == []


def test_proxy_is_written_for_apt_and_removed_when_unset():
    with_proxy = plan(base, {**HOST, "base_http_proxy": "http://proxy.internal:3128"})
    assert any("80llmhost-proxy" in c for c in commands(with_proxy, "APT: egress proxy"))
    existing = {"File": per_argument({"path=/etc/apt/apt.conf.d/80llmhost-proxy": {"mode": 640}})}
    without = plan(base, HOST, existing)
    assert commands(without, "APT: no egress proxy") == [
        "rm -f /etc/apt/apt.conf.d/80llmhost-proxy"
    ]


def test_mirror_replaces_the_vendor_sources():
    planned = plan(
        base,
        {
            **HOST,
            "base_apt_mirror": "http://mirror.internal/debian",
            "base_apt_security_mirror": "http://mirror.internal/debian-security",
        },
    )
    assert any("/etc/apt/sources.list" in c for c in commands(planned, "mirror is the only"))
    assert "APT: drop vendor source /etc/apt/sources.list.d/debian.sources" in planned


def test_chrony_gets_the_no_clock_dropin_only_in_containers():
    container = {**FRESH_DEBIAN_12["Platform"], "container": "systemd-nspawn"}
    in_container = plan(base, HOST, {"Platform": container})
    assert any("llmhost-container.conf" in c for c in commands(in_container, "(container)"))
    assert commands(in_container, "load chrony's drop-in") == ["systemctl daemon-reload"]
    on_metal = plan(base, HOST)
    assert commands(on_metal, "chrony: no container drop-in") == []


def test_chrony_is_restarted_onto_our_servers_in_the_run_that_installs_it():
    # Facts are read before apt starts chrony with the distribution's servers, so the
    # restart is decided at run time (`_if`), not from the "not running" fact.
    planned = plan(base, HOST)
    assert commands(planned, "chrony: follow the configured servers") == [
        "systemctl restart chrony.service"
    ]


def test_disabled_firewall_writes_no_rules():
    planned = plan(base, {**HOST, "base_firewall_enabled": False})
    assert not [name for name in planned if "Firewall: allow" in name]
    assert "Firewall: disabled (base_firewall_enabled = false)" in planned


def test_firewall_opens_every_port_sshd_listens_on_and_the_operator_ports():
    planned = plan(
        base, {**HOST, "base_firewall_allow_tcp": [9100]}, {"SshdListenPorts": [22, 2222]}
    )
    assert "Firewall: allow TCP 22, 2222 (SSH)" in planned
    assert "Firewall: allow TCP 9100 (operator ports (base_firewall_allow_tcp))" in planned


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"base_firewall_allow_tcp": [70000]}, "base_firewall_allow_tcp"),
        ({"base_ssh_port": 0}, "base_ssh_port"),
        ({"base_apt_mirror": "http://m/debian"}, "base_apt_security_mirror"),
        ({"hardware": ["cpu"]}, "hardware"),
        ({"residency_allowed_regions": ["us"]}, "residency_allowed_regions"),
    ],
)
def test_bad_values_fail_in_preflight_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=f"host host1: key `{key}`"):
        plan(base, {**HOST, **data})


def test_unknown_deploy_address_with_restricted_ssh_is_refused():
    facts = {"Platform": {**FRESH_DEBIAN_12["Platform"], "ssh_client": ""}}
    with pytest.raises(ConfigError, match="address this deploy connects from is unknown"):
        plan(base, {**HOST, "base_ssh_allow_from": ["192.0.2.0/24"]}, facts)


def test_root_key_login_is_allowed_only_for_a_root_deploy():
    as_root = commands(plan(base, {**HOST, "ssh_user": "root"}), "sshd: validate")
    as_deploy = commands(plan(base, {**HOST, "ssh_user": "deploy"}), "sshd: validate")
    assert "grep -qx 'permitrootlogin without-password'" in as_root[1]
    assert "grep -qx 'permitrootlogin no'" in as_deploy[1]


def test_bad_inventory_fails_before_any_fact_is_gathered():
    def refuse(**_):
        raise AssertionError("a fact was gathered before the inventory was validated")

    with pytest.raises(ConfigError, match="key `region`"):
        plan(base, {"hardware": "cpu"}, {"Platform": refuse, "DebPackages": refuse})


@pytest.mark.parametrize(
    ("platform", "message"),
    [
        ({"pid1": "init"}, "PID 1 is 'init', not systemd"),
        ({"os_version": "11"}, "OS Debian 11 is not supported"),
        ({"os_id": "centos", "os_version": "9"}, "OS centos 9 is not supported"),
        ({"sshd_includes_dropins": False}, "does not include /etc/ssh/sshd_config.d"),
    ],
)
def test_unsupported_platforms_fail_in_preflight(platform, message):
    facts = {"Platform": {**FRESH_DEBIAN_12["Platform"], **platform}}
    with pytest.raises(ConfigError, match="host host1: ") as raised:
        plan(base, HOST, facts)
    assert message in str(raised.value)


def test_firewall_that_would_lock_out_this_deploy_is_refused():
    with pytest.raises(ConfigError, match=r"connects from 192\.0\.2\.10") as raised:
        plan(base, {**HOST, "base_ssh_allow_from": ["198.51.100.0/24"]})
    assert "key `base_ssh_allow_from`" in str(raised.value)
    assert "192.0.2.10/32" in str(raised.value)


def test_password_login_that_hardening_would_lock_out_is_refused():
    with pytest.raises(ConfigError, match="key `ssh_password`"):
        plan(base, {**HOST, "ssh_password": "hunter2"})


def test_bad_ssh_networks_and_types_name_the_key():
    with pytest.raises(ConfigError, match="key `base_ssh_allow_from`: 'lan'"):
        plan(base, {**HOST, "base_ssh_allow_from": ["lan"]})
    with pytest.raises(ConfigError, match="key `base_ssh_port`: expected int"):
        plan(base, {**HOST, "base_ssh_port": "22"})


def test_a_proxy_password_is_uploaded_as_a_secret():
    with_password = {**HOST, "base_http_proxy": "http://u:pw@proxy.internal:3128"}
    with pytest.raises(ConfigError, match="--diff would print secrets"):
        plan(base, with_password, config={"DIFF": True})
    sudo = plan(base, {**with_password, "ssh_user": "deploy", "_sudo": True}, {"Home": "/home/d"})
    assert "Private upload directory for secrets (sudo deploys)" in sudo
    plain = plan(
        base, {**HOST, "base_http_proxy": "http://proxy.internal:3128"}, config={"DIFF": True}
    )
    assert "APT: egress proxy" in plain
