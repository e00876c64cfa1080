"""UK/EU data residency: every host must declare a region inside the allowed list.

Region codes are an ISO 3166-1 alpha-2 country code in lower case, optionally
followed by site qualifiers: ``gb``, ``gb-lon1``, ``de-fra``, ``nl-ams-2``.
An entry of ``residency_allowed_regions`` allows that exact region and every
region below it, so ``de`` allows ``de-fra`` and ``de-fsn1``, while
``de-fra`` allows ``de-fra-2`` but not ``de-ber``. ``uk`` is accepted as an
alias of ``gb`` because operators write it that way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmhost.errors import ConfigError
from llmhost.settings import setting

UK_REGIONS = ("gb", "uk")
EU_MEMBER_STATES = (
    "at", "be", "bg", "cy", "cz", "de", "dk", "ee", "es", "fi", "fr", "gr", "hr", "hu",
    "ie", "it", "lt", "lu", "lv", "mt", "nl", "pl", "pt", "ro", "se", "si", "sk",
)  # fmt: skip

UK_EU = frozenset((*UK_REGIONS, *EU_MEMBER_STATES))
REGION_PATTERN = re.compile(r"[a-z]{2}(-[a-z0-9]+)*")  # matched whole: fullmatch
REGION_EXAMPLE = "gb-lon1"
# Regions llmhost knows of its own defaults: the NTP pool's UK zone (`base_ntp_servers`) is,
# by the pool's definition, servers in the UK.
DEFAULT_ENDPOINTS = {".uk.pool.ntp.org": "gb"}


@dataclass(frozen=True)
class ResidencySettings:
    residency_allowed_regions: list[str] = setting(
        [*UK_REGIONS, *EU_MEMBER_STATES],
        "Regions hosts may be in: the UK (`gb`, alias `uk`) and the 27 EU member states by "
        "ISO 3166-1 code; an entry allows itself and every `entry-...` below it",
    )
    residency_endpoints: dict[str, str] = setting(
        dict(DEFAULT_ENDPOINTS),
        "Region of each endpoint the stack calls that is not an inventory host (mirrors, "
        "proxies, NTP, registries, webhooks, hubs): a host name, an address, `.domain` "
        "(every name below it) or a network (CIDR), mapped to its region; the default and "
        "every part of the inventory that sets it add up. `llmhost residency audit` lists "
        "what is called and where",
    )


def region_allowed(region: str, allowed: list[str]) -> bool:
    """True when ``region`` equals an allowed entry or lies below one."""
    return any(region == entry or region.startswith(entry + "-") for entry in allowed)


def is_uk_eu_region(region: object) -> bool:
    """A region code (matched whole: no trailing newline or space) in the UK or an EU state."""
    return (
        isinstance(region, str)
        and REGION_PATTERN.fullmatch(region) is not None
        and region[:2] in UK_EU
    )


def check_policy(allowed: list[str], host: str) -> None:
    """The policy can narrow UK/EU, never widen it: each entry a UK or EU region."""
    for entry in allowed:
        if not is_uk_eu_region(entry):
            raise ConfigError(
                f"{entry!r} is not a UK or EU region code",
                key="residency_allowed_regions",
                fix="list lower-case codes of the UK (gb) or EU member states, optionally "
                "with sites (gb-lon1, de-fra); data may not leave the UK and the EU",
                host=host,
            )


def check_region(region: Any, allowed: list[str], host: str) -> str:
    """Return the host's region, or raise naming the key and the fix."""
    check_policy(allowed, host)
    if region is None:
        raise ConfigError(
            "is missing: every host must declare the region it runs in",
            key="region",
            fix=f'add "region": "{REGION_EXAMPLE}" (an allowed region) to the host\'s data '
            "in the inventory",
            host=host,
        )
    if not isinstance(region, str) or not REGION_PATTERN.fullmatch(region):
        raise ConfigError(
            f"{region!r} is not a region code",
            key="region",
            fix="use a lower-case ISO 3166-1 country code with optional site qualifiers, "
            f"e.g. {REGION_EXAMPLE!r} or 'de-fra'",
            host=host,
        )
    if not region_allowed(region, allowed):  # the policy itself is UK/EU (check_policy)
        raise ConfigError(
            f"{region!r} is outside `residency_allowed_regions` ({', '.join(allowed)})",
            key="region",
            fix="move the host to an allowed region, or, if your data policy permits it, "
            "add the region to `residency_allowed_regions` in inventories/group_data/all.py",
            host=host,
        )
    return region
