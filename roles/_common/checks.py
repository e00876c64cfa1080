"""Preflight checks of single values, shared by every role's preflight.

They assert and never change anything; each failure names the host, the key
and the fix.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Iterator
from urllib.parse import urlsplit

from llmhost.errors import ConfigError


def check_port(host: str, key: str, port: int) -> None:
    """Ports are checked here: a bad one would pass `nft --check` at no point."""
    if not 1 <= port <= 65535:
        raise ConfigError(f"{port} is not a TCP port", key=key, fix="use 1-65535", host=host)


def check_at_least(host: str, settings: object, keys: tuple[str, ...], minimum: int) -> None:
    """Numeric settings (counts, seconds, sizes) that make no sense below ``minimum``."""
    for key in keys:
        value = getattr(settings, key)
        if value < minimum:
            raise ConfigError(
                f"{value} is below {minimum}", key=key, fix=f"use {minimum} or more", host=host
            )


def check_networks(host: str, key: str, networks: list[str]) -> None:
    """Source-network settings (firewall allow lists) must be CIDR networks."""
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as error:
            raise ConfigError(
                f"{network!r} is not a network ({error})",
                key=key,
                fix="list CIDR networks such as '192.0.2.0/24' or '2001:db8::/32'",
                host=host,
            ) from error


@contextlib.contextmanager
def on_host(host: str, *, key: str | None = None, prefix: str = "") -> Iterator[None]:
    """Re-raise a ConfigError from the catalog, the secrets or an eval set as this host's.

    Those modules know the file and the fix but not which host asked; the
    operator needs all three. ``key`` replaces the error's key when the host's
    setting (e.g. ``model_name``) is what led there; ``prefix`` says what the
    problem belongs to (``"model tiny: "``).
    """
    try:
        yield
    except ConfigError as error:
        raise ConfigError(
            f"{prefix}{error.problem}",
            key=key or error.key,
            fix=error.fix,
            host=host,
        ) from error


# A DNS name: labels of letters, digits and inner hyphens (underscores are tolerated:
# internal zones use them), dot-separated, at most 253 characters.
HOSTNAME = re.compile(r"(?=.{1,253}\Z)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
                      r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?")  # fmt: skip


def is_hostname_or_address(text: str) -> bool:
    """A DNS name or an IP address (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return bool(HOSTNAME.fullmatch(text)) and not text.replace(".", "").isdigit()
    return True


def check_hostname(host: str, key: str, value: str) -> None:
    """A host name or address, as a setting that names one (NTP servers, TLS names)."""
    if not is_hostname_or_address(value):
        raise ConfigError(
            f"{value!r} is not a host name or IP address",
            key=key,
            fix="give a DNS name (ntp1.internal.example) or an address (192.0.2.10, 2001:db8::1)",
            host=host,
        )


def join_host_port(address: str, port: int) -> str:
    """``address:port``, an IPv6 address in brackets (as in URLs and Prometheus targets)."""
    bare = address.strip("[]")
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def split_host_port(text: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` -> (host, port); None when it is neither."""
    bracketed = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})", text)
    plain = re.fullmatch(r"([^:\[\]\s]+):(\d{1,5})", text)
    found = bracketed or plain
    if not found:
        return None
    name, port = found.group(1), int(found.group(2))
    if bracketed and not isinstance(_address(name), ipaddress.IPv6Address):
        return None
    if not is_hostname_or_address(name) or not 1 <= port <= 65535:
        return None
    return name, port


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def check_host_port(host: str, key: str, value: str) -> None:
    """``host:port`` with no scheme (registries), an IPv6 address in brackets."""
    if split_host_port(value) is None:
        raise ConfigError(
            f"{value!r} is not host:port",
            key=key,
            fix="give e.g. mirror-lon-1.internal.example:5000, 192.0.2.5:5000 or "
            "[2001:db8::5]:5000 (no scheme: llmhost always speaks HTTPS to registries)",
            host=host,
        )


def check_url(host: str, key: str, value: str, *, path_allowed: bool = True) -> None:
    """An http(s) URL with a host (and a port, if any, in range); IPv6 in brackets."""
    shown = re.sub(r"//([^/:@]*):[^/@]*@", r"//\1:***@", value)  # never print a password
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as error:
        raise ConfigError(
            f"{shown!r} is not a URL ({error})", key=key, fix=URL_FIX, host=host
        ) from error
    problem = None
    if value != value.strip() or any(c.isspace() for c in value):
        problem = "it contains white space"
    elif parts.scheme not in ("http", "https"):
        problem = "it needs an http:// or https:// scheme"
    elif not parts.hostname or not is_hostname_or_address(parts.hostname):
        problem = "it names no valid host"
    elif ":" in parts.hostname and f"[{parts.hostname}]" not in parts.netloc:
        problem = "an IPv6 address must be in brackets"
    elif port == 0:
        problem = "port 0 is not a port"
    elif not path_allowed and parts.path not in ("", "/"):
        problem = "it must have no path"
    if problem:
        raise ConfigError(f"{shown!r} is not usable: {problem}", key=key, fix=URL_FIX, host=host)


URL_FIX = "give e.g. http://egress.internal.example:3128 or http://[2001:db8::1]:3128"
