"""Role registry: the internal OCI registry models are mirrored to (hosts in group `registry`).

preflight  validate settings; this host's endpoint for its certificate
install    Debian's docker-registry (the CNCF distribution registry)
configure  TLS from the llmhost CA, htpasswd (bcrypt) auth, our config, a hardening
           drop-in over the vendor unit, a garbage-collection timer, the firewall port
service    the registry (restarted when a file it reads changed) and the GC timer

The first host of the group is the primary; the second is the disaster-recovery
copy (`llmhost models sync` fills it). Both are configured the same way.
"""

from __future__ import annotations

from io import StringIO

import bcrypt
from pyinfra import host, inventory
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import FileContents
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from llmhost.errors import ConfigError
from llmhost.secrets import (
    RegistryCredentials,
    certificate_authority,
    registry_credentials,
    secrets_directory,
)
from llmhost.settings import from_data
from roles._common import checked
from roles._common.checked import put_template
from roles._common.checks import check_hostname, check_networks
from roles._common.operations import (
    firewall_only_from,
    firewall_rules,
    reload_firewall,
    secret_upload_options,
    wait_for_port,
)
from roles._common.ports import check_host_ports
from roles._common.scrapers import scrape_sources
from roles.registry.defaults import (
    CONFIG_DIR,
    GC_UNIT,
    REGISTRY_USER,
    VENDOR_UNIT,
    RegistrySettings,
    endpoint,
)

DROPIN = f"/etc/systemd/system/{VENDOR_UNIT}.d/llmhost.conf"


@deploy("llmhost registry")
def registry() -> None:
    settings = check()  # the data alone: no fact is needed
    install()
    changed = configure(settings)
    service(changed, settings)


def check() -> RegistrySettings:
    """Settings and ports, with no host contacted."""
    settings = from_data(RegistrySettings, host.data, host.name)
    check_host_ports(host.name, host.data, {*host.groups, "registry"}, mine=["registry_port"])
    if not settings.registry_storage_path.startswith("/"):
        raise ConfigError(
            f"{settings.registry_storage_path!r} is not an absolute path",
            key="registry_storage_path",
            fix="give an absolute directory, e.g. /srv/registry",
            host=host.name,
        )
    check_networks(host.name, "registry_allow_from", settings.registry_allow_from)
    if settings.registry_address is not None:
        check_hostname(host.name, "registry_address", settings.registry_address)
    return settings


def install() -> None:
    checked.packages(name="Install the distribution registry", packages=["docker-registry"])


def htpasswd_line(credentials: RegistryCredentials, existing: list[str] | None) -> str:
    """The user's bcrypt line; the host's current one when it still matches the password.

    bcrypt salts every hash, so hashing again on each run would change the file
    (and restart the registry) every time.
    """
    prefix = f"{credentials.username}:"
    for line in existing or []:
        if line.startswith(prefix):
            current = line[len(prefix) :].strip().encode()
            try:
                if bcrypt.checkpw(credentials.password.encode(), current):
                    return line.strip() + "\n"
            except ValueError:  # not a bcrypt hash (e.g. htpasswd's default MD5): replace it
                pass
    fresh = bcrypt.hashpw(credentials.password.encode(), bcrypt.gensalt(rounds=10)).decode()
    return f"{prefix}{fresh}\n"


def configure(settings: RegistrySettings) -> list[OperationMeta]:
    """Write every file; returns those whose change needs the registry restarted."""
    secrets = secrets_directory(host.data, host.name)
    credentials = registry_credentials(secrets)
    address = endpoint(host.name, host.data).rsplit(":", 1)[0].strip("[]")
    certificate = certificate_authority(secrets).issue(f"registry-{host.name}", [address])
    files.directory(
        name=f"{CONFIG_DIR}: registry configuration",
        path=CONFIG_DIR,
        user="root",
        group=REGISTRY_USER,
        mode="0750",
    )
    files.directory(
        name=f"{settings.registry_storage_path}: registry storage",
        path=settings.registry_storage_path,
        user=REGISTRY_USER,
        group=REGISTRY_USER,
        mode="0750",
    )
    existing = host.get_fact(FileContents, path=f"{CONFIG_DIR}/htpasswd")
    secret_files = [
        ("tls.crt", certificate.certificate_pem, "0644"),
        ("tls.key", certificate.key_pem, "0640"),
        ("htpasswd", htpasswd_line(credentials, existing), "0640"),
    ]
    upload = secret_upload_options()
    changed = [
        checked.put(
            **upload,
            name=f"Registry: {name}",
            src=StringIO(content),
            dest=f"{CONFIG_DIR}/{name}",
            user="root",
            group=REGISTRY_USER,
            mode=mode,
            create_remote_dir=False,
        )
        for name, content, mode in secret_files
    ]
    changed.append(
        put_template(
            **upload,
            name="Registry: configuration",
            path="registry/config.yml.j2",
            dest=f"{CONFIG_DIR}/config.yml",
            group=REGISTRY_USER,
            mode="0640",
            storage=settings.registry_storage_path,
            port=settings.registry_port,
            metrics_port=settings.registry_metrics_port,
            config_dir=CONFIG_DIR,
            http_secret=credentials.http_secret,
        )
    )
    changed.append(units(settings))
    rules = firewall_rules(
        role="registry",
        purpose="model registry",
        name="20-registry",
        ports=[settings.registry_port],
        sources=settings.registry_allow_from,
    )
    metrics = firewall_only_from(
        role="registry",
        purpose="registry metrics, for the monitoring hosts",
        name="21-registry-metrics",
        ports=[settings.registry_metrics_port],
        sources=scrape_sources(host.name, host.data),
        closed="registry metrics closed (no monitoring host)",
    )
    reload_firewall(rules, metrics)
    return changed


def gc_schedule(settings: RegistrySettings) -> str:
    """The configured schedule, or Sunday 03:30 on the primary and two hours later per copy.

    The registry stops while it collects; primary and DR must never stop together.
    """
    if settings.registry_gc_schedule:
        return settings.registry_gc_schedule
    members = [member.name for member in inventory.get_group("registry", [])]
    return staggered_gc_schedule(members.index(host.name) if host.name in members else 0)


def staggered_gc_schedule(position: int) -> str:
    """Sunday 03:30 for the first registry host, two hours later for each next one."""
    return f"Sun *-*-* {(3 + 2 * position) % 24:02d}:30:00"


def units(settings: RegistrySettings) -> OperationMeta:
    """The hardening drop-in and the GC units; returns the drop-in operation."""
    files.directory(name="Registry: drop-in directory", path=DROPIN.rsplit("/", 1)[0], mode="0755")
    dropin = put_template(
        name="Registry: hardened drop-in over the vendor unit",
        path="registry/docker-registry-llmhost.conf.j2",
        dest=DROPIN,
        mode="0644",
        config_dir=CONFIG_DIR,
        storage=settings.registry_storage_path,
        port=settings.registry_port,
    )
    gc_service = put_template(
        name="Registry: garbage-collection service",
        path="registry/gc.service.j2",
        dest=f"/etc/systemd/system/{GC_UNIT}.service",
        mode="0644",
        vendor_unit=VENDOR_UNIT,
        config_dir=CONFIG_DIR,
        storage=settings.registry_storage_path,
    )
    gc_timer = put_template(
        name="Registry: garbage-collection timer",
        path="registry/gc.timer.j2",
        dest=f"/etc/systemd/system/{GC_UNIT}.timer",
        mode="0644",
        schedule=gc_schedule(settings),
    )
    systemd.daemon_reload(
        name="systemd: load changed registry units",
        _if=any_changed(dropin, gc_service, gc_timer),
    )
    return dropin


def service(changed: list[OperationMeta], settings: RegistrySettings) -> None:
    started = checked.service(
        name="Registry: running and enabled",
        service=VENDOR_UNIT,
        running=True,
        enabled=True,
        restarted=any(op.will_change for op in changed),
    )
    # `systemctl start` succeeds even when the registry exits a moment later (a bad
    # key, a port in use): wait for its socket, and show its log when it never comes.
    server.shell(
        name="Registry: listening",
        commands=[wait_for_port(settings.registry_port, VENDOR_UNIT)],
        _if=started.did_change,
    )
    checked.service(
        name="Registry: garbage collection scheduled",
        service=f"{GC_UNIT}.timer",
        running=True,
        enabled=True,
    )
