"""The registry role's plan, its htpasswd line and its templates (no host is contacted)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import bcrypt
import pytest
import yaml
from cryptography import x509
from pyinfra.operations import server

from llmhost.errors import ConfigError
from llmhost.render import render
from llmhost.secrets import RegistryCredentials, certificate_authority, registry_credentials
from roles._common import checked
from roles.registry import DROPIN, htpasswd_line, registry, staggered_gc_schedule
from roles.registry.defaults import CONFIG_DIR
from tests.unit.pyinfra_plan import SECRETS_DIR, per_argument, plan, record_calls

HOST = {"region": "gb-lon1", "hardware": "cpu"}
CREDENTIALS = RegistryCredentials(username="llmhost", password="correct horse", http_secret="s")


def commands(planned, prefix):
    return [c for name, cmds in planned.items() if name.startswith(prefix) for c in cmds]


def uploads(planned, prefix):
    """Destinations of the files an operation uploads."""
    return [
        c.rsplit(", ", 1)[1].rstrip(")")
        for c in commands(planned, prefix)
        if c.startswith("FileUploadCommand(")
    ]


def test_fresh_host_installs_the_registry_package():
    planned = plan(registry, HOST)
    assert "install docker-registry" in commands(planned, "Install the distribution registry")[0]


def test_fresh_host_gets_tls_htpasswd_and_config_under_the_config_dir():
    planned = plan(registry, HOST)
    assert uploads(planned, "Registry: tls.crt") == [f"{CONFIG_DIR}/tls.crt"]
    assert uploads(planned, "Registry: tls.key") == [f"{CONFIG_DIR}/tls.key"]
    assert uploads(planned, "Registry: htpasswd") == [f"{CONFIG_DIR}/htpasswd"]
    assert uploads(planned, "Registry: configuration") == [f"{CONFIG_DIR}/config.yml"]
    assert f"chmod 640 {CONFIG_DIR}/tls.key" in commands(planned, "Registry: tls.key")
    assert f"chown root:docker-registry {CONFIG_DIR}/htpasswd" in commands(
        planned, "Registry: htpasswd"
    )
    assert f"chown root:docker-registry {CONFIG_DIR}" in commands(
        planned, f"{CONFIG_DIR}: registry configuration"
    )
    assert "chown docker-registry:docker-registry /var/lib/docker-registry" in commands(
        planned, "/var/lib/docker-registry: registry storage"
    )


def test_fresh_host_gets_the_dropin_and_the_gc_units():
    planned = plan(registry, HOST)
    assert DROPIN == "/etc/systemd/system/docker-registry.service.d/llmhost.conf"
    assert uploads(planned, "Registry: hardened drop-in") == [DROPIN]
    assert uploads(planned, "Registry: garbage-collection service") == [
        "/etc/systemd/system/llmhost-registry-gc.service"
    ]
    assert uploads(planned, "Registry: garbage-collection timer") == [
        "/etc/systemd/system/llmhost-registry-gc.timer"
    ]
    assert commands(planned, "systemd: load changed registry units") == ["systemctl daemon-reload"]
    assert commands(planned, "Registry: garbage collection scheduled") == [
        "systemctl start llmhost-registry-gc.timer",
        "systemctl enable llmhost-registry-gc.timer",
    ]


def test_fresh_host_opens_the_registry_port_in_the_firewall():
    planned = plan(registry, HOST)
    assert uploads(planned, "Firewall: allow TCP 5000 (model registry)") == [
        "/etc/llmhost/firewall.d/20-registry.nft"
    ]
    (reload,) = commands(planned, "Firewall: apply changed rules")
    assert reload.startswith("systemctl try-reload-or-restart llmhost-firewall.service || ")
    assert reload.count("try-reload-or-restart") == 2, "a reload systemd could not start: again"
    assert "journalctl -u llmhost-firewall.service" in reload, "a failed reload shows why"


def test_fresh_host_starts_the_registry_and_waits_for_its_port():
    planned = plan(registry, HOST)
    assert commands(planned, "Registry: running and enabled") == [
        "systemctl start docker-registry.service",
        "systemctl enable docker-registry.service",
    ]
    (wait,) = commands(planned, "Registry: listening")
    assert "ss -ltnH 'sport = :5000'" in wait
    assert "journalctl -u docker-registry.service" in wait


def test_running_registry_is_restarted_when_its_files_change():
    running = {
        "SystemdStatus": {"docker-registry.service": True},
        "SystemdEnabled": {"docker-registry.service": True},
    }
    planned = plan(registry, HOST, running)
    assert commands(planned, "Registry: running and enabled") == [
        "systemctl restart docker-registry.service"
    ]


def test_port_is_waited_for_only_when_the_service_operation_changed(monkeypatch):
    # plan() lists `_if` operations' commands; the condition itself is checked here.
    shells = record_calls(monkeypatch, server, "shell")
    services = record_calls(monkeypatch, checked, "service")
    plan(registry, HOST)
    condition = shells["Registry: listening"][1]["_if"]
    started = services["Registry: running and enabled"][0]
    assert condition == started.did_change
    started.set_complete(True, [], None)  # ran, changed nothing
    assert condition() is False


def test_custom_port_and_storage_reach_the_files_and_firewall():
    planned = plan(registry, {**HOST, "registry_port": 443, "registry_storage_path": "/srv/reg"})
    assert "Firewall: allow TCP 443 (model registry)" in planned
    assert "mkdir -p /srv/reg" in commands(planned, "/srv/reg: registry storage")
    assert "sport = :443" in commands(planned, "Registry: listening")[0]


def test_certificate_names_the_registry_address():
    plan(registry, {**HOST, "registry_address": "registry.internal"})
    issued = Path(SECRETS_DIR) / "ca" / "issued" / "registry-host1.crt"
    certificate = x509.load_pem_x509_certificate(issued.read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["registry.internal"]
    certificate.verify_directly_issued_by(
        x509.load_pem_x509_certificate(
            certificate_authority(Path(SECRETS_DIR)).certificate_pem.encode()
        )
    )


def test_matching_htpasswd_on_the_host_is_not_rewritten():
    credentials = registry_credentials(Path(SECRETS_DIR))
    line = htpasswd_line(credentials, None)
    htpasswd = f"path={CONFIG_DIR}/htpasswd"
    facts = {
        "FileContents": per_argument({htpasswd: [line.strip()]}),
        "Sha1File": per_argument({htpasswd: hashlib.sha1(line.encode()).hexdigest()}),
        "File": per_argument({htpasswd: {"mode": 640, "user": "root", "group": "docker-registry"}}),
        "Directory": per_argument(
            {f"path={CONFIG_DIR}": {"mode": 750, "user": "root", "group": "docker-registry"}}
        ),
    }
    planned = plan(registry, HOST, facts)
    assert commands(planned, "Registry: htpasswd") == []


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"registry_storage_path": "var/lib/registry"}, "registry_storage_path"),
        ({"registry_allow_from": ["10.0.0.0/8", "office"]}, "registry_allow_from"),
        ({"registry_allow_from": "10.0.0.0/8"}, "registry_allow_from"),
        ({"registry_port": "5000"}, "registry_port"),
        ({"registry_port": True}, "registry_port"),
    ],
)
def test_bad_values_fail_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=f"host host1: key `{key}`"):
        plan(registry, {**HOST, **data})


@pytest.mark.parametrize("port", [0, 70000])
def test_out_of_range_port_fails_naming_the_key(port):
    with pytest.raises(ConfigError, match="key `registry_port`"):
        plan(registry, {**HOST, "registry_port": port})


# htpasswd_line


def test_existing_matching_line_is_reused_unchanged():
    existing = bcrypt.hashpw(b"correct horse", bcrypt.gensalt(rounds=4)).decode()
    lines = ["someone:$2b$04$" + "x" * 53, f"llmhost:{existing}"]
    assert htpasswd_line(CREDENTIALS, lines) == f"llmhost:{existing}\n"


def test_line_with_another_password_is_replaced():
    stale = bcrypt.hashpw(b"old password", bcrypt.gensalt(rounds=4)).decode()
    line = htpasswd_line(CREDENTIALS, [f"llmhost:{stale}"])
    assert line != f"llmhost:{stale}\n"
    assert bcrypt.checkpw(b"correct horse", line.strip().split(":", 1)[1].encode())


@pytest.mark.parametrize("existing", [None, [], ["other:$2b$04$" + "x" * 53]])
def test_new_bcrypt_line_when_there_is_none_for_the_user(existing):
    line = htpasswd_line(CREDENTIALS, existing)
    user, hashed = line.rstrip("\n").split(":", 1)
    assert line.endswith("\n")
    assert user == "llmhost"
    assert hashed.startswith("$2b$")
    assert bcrypt.checkpw(b"correct horse", hashed.encode())


def test_non_bcrypt_line_for_the_user_is_replaced():
    line = htpasswd_line(CREDENTIALS, ["llmhost:$apr1$abcdefgh$0123456789abcdefghijkl"])
    assert bcrypt.checkpw(b"correct horse", line.strip().split(":", 1)[1].encode())


# Templates, rendered exactly as hosts get them


def registry_config(**overrides) -> dict:
    variables = {
        "storage": "/srv/registry",
        "port": 5000,
        "config_dir": CONFIG_DIR,
        "http_secret": "not-so-secret",
        "metrics_port": 5001,
        **overrides,
    }
    return yaml.safe_load(render("registry/config.yml.j2", **variables))


def test_config_serves_tls_from_the_config_dir():
    http = registry_config()["http"]
    assert http["addr"] == ":5000"
    assert http["secret"] == "not-so-secret"
    assert http["tls"] == {
        "certificate": f"{CONFIG_DIR}/tls.crt",
        "key": f"{CONFIG_DIR}/tls.key",
    }


def test_config_serves_its_metrics_on_the_debug_port():
    assert registry_config(metrics_port=5077)["http"]["debug"] == {
        "addr": ":5077",
        "prometheus": {"enabled": True, "path": "/metrics"},
    }


def test_the_metrics_port_is_open_to_the_monitoring_hosts_only():
    closed = plan(registry, HOST)
    assert "Firewall: registry metrics closed (no monitoring host)" in closed
    watched = plan(registry, {**HOST, "monitoring_scrape_from": ["10.9.0.0/24"]})
    assert uploads(
        watched, "Firewall: allow TCP 5001 (registry metrics, for the monitoring hosts)"
    ) == ["/etc/llmhost/firewall.d/21-registry-metrics.nft"]


def test_config_requires_htpasswd_auth():
    assert registry_config()["auth"] == {
        "htpasswd": {"realm": "llmhost-registry", "path": f"{CONFIG_DIR}/htpasswd"}
    }


def test_config_stores_under_the_storage_path_and_allows_deletes():
    storage = registry_config(storage="/data/reg")["storage"]
    assert storage["filesystem"] == {"rootdirectory": "/data/reg"}
    assert storage["delete"] == {"enabled": True}


def dropin(port: int = 5000, storage: str = "/srv/registry") -> list[str]:
    text = render(
        "registry/docker-registry-llmhost.conf.j2",
        config_dir=CONFIG_DIR,
        storage=storage,
        port=port,
    )
    return text.splitlines()


def test_dropin_replaces_the_vendor_exec_start_with_our_config():
    lines = dropin()
    start = lines.index("ExecStart=")
    assert lines[start + 1] == f"ExecStart=/usr/bin/docker-registry serve {CONFIG_DIR}/config.yml"
    assert [line for line in lines if line.startswith("ExecStart=")] == lines[start : start + 2]


def test_dropin_sandboxes_the_registry_to_its_storage():
    lines = dropin(storage="/data/reg")
    assert "NoNewPrivileges=yes" in lines
    assert "ProtectSystem=strict" in lines
    assert "ReadWritePaths=/data/reg" in lines


def test_dropin_drops_every_capability_on_a_high_port():
    lines = dropin(port=5000)
    assert "CapabilityBoundingSet=" in lines
    assert not [line for line in lines if "CAP_NET_BIND_SERVICE" in line]


def test_dropin_grants_only_bind_service_on_a_privileged_port():
    lines = dropin(port=443)
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in lines
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in lines
    assert "CapabilityBoundingSet=" not in lines


def test_dropin_boundary_is_port_1024():
    assert "CapabilityBoundingSet=" in dropin(port=1024)
    assert "CapabilityBoundingSet=CAP_NET_BIND_SERVICE" in dropin(port=1023)


def test_gc_stops_the_registry_and_collects_with_our_config():
    text = render(
        "registry/gc.service.j2",
        vendor_unit="docker-registry.service",
        config_dir=CONFIG_DIR,
        storage="/srv/registry",
    )
    assert "ExecStartPre=+/bin/systemctl stop docker-registry.service" in text
    assert f"ExecStart=/usr/bin/docker-registry garbage-collect {CONFIG_DIR}/config.yml" in text
    assert "ExecStopPost=+/bin/systemctl start docker-registry.service" in text


def test_gc_timer_runs_on_the_configured_schedule():
    text = render("registry/gc.timer.j2", schedule="Sat *-*-* 01:00:00")
    assert "OnCalendar=Sat *-*-* 01:00:00\n" in text
    assert "Persistent=true\n" in text


def test_secrets_go_through_a_private_directory_when_the_deploy_uses_sudo():
    planned = plan(
        registry, {**HOST, "ssh_user": "deploy", "_sudo": True}, {"Home": "/home/deploy"}
    )
    assert planned["Private upload directory for secrets (sudo deploys)"] == [
        "mkdir -p /home/deploy/.llmhost-upload",
        "chmod 700 /home/deploy/.llmhost-upload",
    ]


def test_a_diff_run_is_refused_before_it_could_print_secrets():
    with pytest.raises(ConfigError, match="--diff would print secrets"):
        plan(registry, HOST, config={"DIFF": True})


def test_registry_hosts_collect_garbage_two_hours_apart():
    # The registry stops while it collects: primary and DR must never stop together.
    assert [staggered_gc_schedule(i) for i in range(3)] == [
        "Sun *-*-* 03:30:00",
        "Sun *-*-* 05:30:00",
        "Sun *-*-* 07:30:00",
    ]
