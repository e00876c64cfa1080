"""Preflight checks of single values, shared by every role's preflight.

They assert and never change anything; each failure names the host, the key
and the fix.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterator

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
