"""How a host's own tools reach out: through the base role's proxy, unless `base_no_proxy` says.

The puller, pip and llmhost's units read `/etc/llmhost/egress.env` (written by the base
role); a role that lists what its host calls (``endpoints()``) says which calls go
through the proxy with `through_proxy`, without reading the base role's settings itself.
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
