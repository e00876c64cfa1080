"""One Jinja configuration for every template llmhost renders.

Roles write templates with ``roles._common.checked.put_template()``, which renders
through ``render()`` as unit tests do, so what a unit test sees is byte-for-byte what a
host gets.
"""

from __future__ import annotations

from typing import Any

import jinja2

from llmhost.paths import TEMPLATES


def render(path: str, **variables: Any) -> str:
    """Render ``templates/<path>``, e.g. ``render("base/chrony.conf.j2", servers=[...])``."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    source = (TEMPLATES / path).read_text()
    return environment.from_string(source).render(**variables)
