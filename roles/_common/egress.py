"""How a host's own tools reach out: through the base role's proxy, unless `base_no_proxy` says.

The puller, pip and llmhost's units read `/etc/llmhost/egress.env` (written by the base
role); a role that lists what its host calls (``endpoints()``) says which calls go
through the proxy with `through_proxy` (`apt_through_proxy` for what APT fetches: APT
reads its own proxy configuration), without reading the base role's settings itself.
"""

from __future__ import annotations

from typing import Any

from pyinfra import host

from llmhost.endpoints import Call, call_via_proxy
from llmhost.settings import from_data


def through_proxy(kind: str, target: str, key: str | None, **details: Any) -> Call:
    """A call from the host's tools, through `base_http_proxy` unless `base_no_proxy` names it."""
    from roles.base.defaults import BaseSettings

    settings = from_data(BaseSettings, host.data, host.name)
    return call_via_proxy(
        kind, target, key, settings.base_http_proxy, settings.base_no_proxy, **details
    )


def apt_through_proxy(kind: str, target: str, key: str | None, **details: Any) -> Call:
    """A call APT makes (a vendor's repository, and its key, which is fetched with APT's own
    downloader): through `base_http_proxy` unless `base_no_proxy` names its host. APT
    bypasses the proxy for plain host names alone (the base role writes no other), so an
    address, a network or a `.domain` there does not take APT past it."""
    from roles.base import apt_direct_hosts
    from roles.base.defaults import BaseSettings

    settings = from_data(BaseSettings, host.data, host.name)
    direct = apt_direct_hosts(settings.base_no_proxy)
    return call_via_proxy(kind, target, key, settings.base_http_proxy, direct, **details)
