"""Role gateway: nginx in front of the runtime, on every host that serves a model.

preflight  settings, ports that collide with the runtime's or the registry's, at least
           one API key for this host
install    Debian's nginx and its njs module, without the default site
configure  the API keys (root-only), TLS from the llmhost CA or the operator, the upstream
           include (created once, then owned by cutover), our server block, the firewall
service    nginx checked (`nginx -t`) and reloaded gracefully when a file changed

Requests need `Authorization: Bearer <key>`: 401 without a valid key, 429 above the
identity's rate, 413 above the body limit. Each request leaves one JSON line in
/var/log/nginx/llmhost-audit.log with identity, request id, colour, status, bytes,
times and the answer's token counts (read by usage.js from the engine's `usage` as the
answer passes); never the key, never the prompt.
"""

from __future__ import annotations

import shlex
from io import StringIO
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.facts.files import File
from pyinfra.operations import files, server
from pyinfra.operations.util import any_changed

from llmhost.errors import ConfigError
from llmhost.onhost.layout import (
    COLOURS,
    GATEWAY_DIR,
    GATEWAY_DRAIN_FLAG,
    GATEWAY_UPSTREAM,
    STATE_FILE,
)
from llmhost.onhost.runtimectl import upstream_text
from llmhost.secrets import api_keys, certificate_authority, secrets_directory
from llmhost.settings import from_data
from roles._common import checked
from roles._common.checked import put_template
from roles._common.checks import check_at_least, check_hostname, check_networks, on_host
from roles._common.edges import edge_sources
from roles._common.facts import HostState
from roles._common.operations import firewall_rules, reload_firewall, secret_upload_options
from roles._common.ports import check_host_ports
from roles._common.scrapers import address_of, scrape_sources
from roles.gateway.defaults import (
    AUDIT_LOG,
    KEYS,
    PACKAGES,
    SITE,
    TLS_CERT,
    TLS_KEY,
    USAGE_SCRIPT,
    GatewaySettings,
)
from roles.runtime.defaults import RuntimeSettings


@deploy("llmhost gateway")
def gateway() -> None:
    settings, keys = check()  # the data alone: no fact is needed
    install()
    changed = configure(settings, keys)
    service(changed)


def check() -> tuple[GatewaySettings, dict[str, str]]:
    """Settings, ports, the operator's TLS files and the API keys, with no host contacted."""
    settings = from_data(GatewaySettings, host.data, host.name)
    check_host_ports(host.name, host.data, host.groups, mine=["gateway_port"])
    positive = ("gateway_rate_limit_rps", "gateway_max_body_kb", "gateway_read_timeout_s")
    check_at_least(host.name, settings, positive, 1)
    check_at_least(
        host.name, settings, ("gateway_rate_limit_burst", "gateway_rollback_window_s"), 0
    )
    check_networks(host.name, "gateway_allow_from", settings.gateway_allow_from)
    for name in settings.gateway_server_names:
        check_hostname(host.name, "gateway_server_names", name)
    if bool(settings.gateway_tls_certificate) != bool(settings.gateway_tls_key):
        raise ConfigError(
            "needs both the certificate and its key",
            key="gateway_tls_certificate",
            fix="set gateway_tls_certificate and gateway_tls_key, or neither",
            host=host.name,
        )
    operator_tls_files(settings)
    return settings, admitted_keys(settings)


def operator_tls_files(settings: GatewaySettings) -> tuple[Path, Path] | None:
    """The operator's certificate and key files, which must exist here; None: use the CA."""
    if not (settings.gateway_tls_certificate and settings.gateway_tls_key):
        return None
    paths = (Path(settings.gateway_tls_certificate), Path(settings.gateway_tls_key))
    for path, key in zip(paths, ("gateway_tls_certificate", "gateway_tls_key"), strict=True):
        if not path.is_file():
            raise ConfigError(
                f"{path} does not exist on this machine",
                key=key,
                fix="give the PEM file's path here",
                host=host.name,
            )
    return paths


def admitted_keys(settings: GatewaySettings) -> dict[str, str]:
    directory = secrets_directory(host.data, host.name)
    with on_host(host.name):
        keys = api_keys(directory)
    if settings.gateway_identities is not None:
        unknown = sorted(set(settings.gateway_identities) - set(keys))
        if unknown:
            raise ConfigError(
                f"names identities with no key: {', '.join(unknown)}",
                key="gateway_identities",
                fix=f"llmhost keys add {unknown[0]} --secrets-dir {directory}",
                host=host.name,
            )
        keys = {name: keys[name] for name in settings.gateway_identities}
    if not keys:
        raise ConfigError(
            f"no API keys in {directory / 'api-keys.json'}: nobody could use this gateway",
            key="gateway_identities",
            fix=f"llmhost keys add <identity> --secrets-dir {directory}",
            host=host.name,
        )
    return keys


def install() -> None:
    installed = checked.packages(name="Install nginx and its njs module", packages=PACKAGES)
    default_site = "/etc/nginx/sites-enabled/default"
    # The package enables its default site (port 80) as it installs, after facts were read.
    server.shell(
        name="nginx: no default site, as installed",
        commands=[f"rm -f {shlex.quote(default_site)}"],
        _if=installed.did_change,
    )
    files.link(name="nginx: no default site", path=default_site, present=False)


def tls_material(settings: GatewaySettings) -> tuple[str, str]:
    """(certificate PEM, key PEM): the operator's files, else one from the llmhost CA."""
    paths = operator_tls_files(settings)
    if paths:
        return paths[0].read_text(), paths[1].read_text()
    names = settings.gateway_server_names or [address_of(host.name, host.data)]
    authority = certificate_authority(secrets_directory(host.data, host.name))
    issued = authority.issue(f"gateway-{host.name}", names)
    return issued.certificate_pem, issued.key_pem


def configure(settings: GatewaySettings, keys: dict[str, str]) -> list[OperationMeta]:
    """Write every file nginx reads; returns the operations whose change needs a reload."""
    files.directory(
        name=f"{GATEWAY_DIR}: keys, TLS, upstream (root-only)",
        path=GATEWAY_DIR,
        user="root",
        group="root",
        mode="0700",
    )
    upload = secret_upload_options()
    changed = [
        put_template(
            **upload,
            name=f"Gateway: API keys of {len(keys)} identit{'y' if len(keys) == 1 else 'ies'}",
            path="gateway/api-keys.conf.j2",
            dest=KEYS,
            mode="0600",
            keys=sorted(keys.items()),
        )
    ]
    if settings.gateway_tls:
        certificate, key = tls_material(settings)
        for content, dest, mode in ((certificate, TLS_CERT, "0644"), (key, TLS_KEY, "0600")):
            changed.append(
                checked.put(
                    **upload,
                    name=f"Gateway: {dest.rsplit('/', 1)[1]}",
                    src=StringIO(content),
                    dest=dest,
                    mode=mode,
                    create_remote_dir=False,
                )
            )
    initial_upstream()
    files.file(
        name="Gateway: in its edges' pools (no drain left by an interrupted cutover)",
        path=GATEWAY_DRAIN_FLAG,
        present=False,
    )
    changed.append(
        put_template(
            name="Gateway: usage.js (token counts for the audit line)",
            path="gateway/usage.js.j2",
            dest=USAGE_SCRIPT,
            mode="0644",
        )
    )
    changed.append(
        put_template(
            name="Gateway: server block (keys, limits, audit log, streaming)",
            path="gateway/llmhost-gateway.conf.j2",
            dest=SITE,
            mode="0644",
            nginx_dir=GATEWAY_DIR,
            port=settings.gateway_port,
            tls=settings.gateway_tls,
            rps=settings.gateway_rate_limit_rps,
            burst=settings.gateway_rate_limit_burst,
            max_body_kb=settings.gateway_max_body_kb,
            read_timeout=settings.gateway_read_timeout_s,
            audit_log=AUDIT_LOG,
            drain_flag=GATEWAY_DRAIN_FLAG,
            edge_sources=edge_sources(host.name),
            usage_script=USAGE_SCRIPT,
            runtime_ports=sorted(
                from_data(RuntimeSettings, host.data, host.name).runtime_ports.items()
            ),
            metrics_allow=scrape_sources(host.name, host.data),
        )
    )
    rules = firewall_rules(
        role="gateway",
        purpose="LLM gateway",
        name="30-gateway",
        ports=[settings.gateway_port],
        sources=settings.gateway_allow_from,
    )
    reload_firewall(rules)
    return changed


def initial_upstream() -> None:
    """Create the upstream include once: at the active colour, or (a new host) at none.

    From then on only cutover and rollback rewrite it, after a readiness check (and
    the gate): a deploy must never move traffic by rewriting a template.
    """
    if host.get_fact(File, path=GATEWAY_UPSTREAM):
        host.noop(f"{GATEWAY_UPSTREAM} exists: cutover owns it")
        return
    active = host.get_fact(HostState, path=STATE_FILE).get("active")
    colour = active if isinstance(active, str) and active in COLOURS else None
    port = from_data(RuntimeSettings, host.data, host.name).runtime_ports[colour or "blue"]
    checked.put(
        name=f"Gateway: upstream include, first pointed at {colour or 'no colour (502)'}",
        src=StringIO(upstream_text(colour, port)),
        dest=GATEWAY_UPSTREAM,
        mode="0644",
        create_remote_dir=False,
    )


def service(changed: list[OperationMeta]) -> None:
    server.shell(
        name="nginx: configuration valid, reloaded gracefully",
        commands=["nginx -t -q && systemctl reload-or-restart nginx.service"],
        _if=any_changed(*changed),
    )
    checked.service(
        name="nginx: running and enabled", service="nginx.service", running=True, enabled=True
    )
