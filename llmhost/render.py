"""One Jinja configuration for every template llmhost renders.

Roles write templates with ``put_template()`` and tests render through
``render()``, so what a unit test sees is byte-for-byte what a host gets.
"""

from __future__ import annotations

from typing import Any

import jinja2
from pyinfra.api.operation import OperationMeta
from pyinfra.operations import files

from llmhost.paths import TEMPLATES


def jinja_options() -> dict[str, Any]:
    """A fresh dict each call: pyinfra pops keys from the one it is given."""
    return {"trim_blocks": True, "lstrip_blocks": True}


def render(path: str, **variables: Any) -> str:
    """Render ``templates/<path>``, e.g. ``render("base/chrony.conf.j2", servers=[...])``."""
    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, **jinja_options()
    )
    source = (TEMPLATES / path).read_text()
    return environment.from_string(source).render(**variables)


def put_template(
    name: str,
    path: str,
    dest: str,
    *,
    mode: str,
    user: str = "root",
    group: str = "root",
    **variables: Any,
) -> OperationMeta:
    """Render ``templates/<path>`` to ``dest`` on the current host with an explicit mode.

    pyinfra writes the file only when its content, owner or mode differ. The
    parent directory must exist: pyinfra would otherwise create it with the
    file's owner, and on a fresh host hand e.g. /etc/llmhost to whoever owns
    the last file written there. Roles make their directories explicitly.
    """
    return files.template(
        name=name,
        src=str(TEMPLATES / path),
        dest=dest,
        mode=mode,
        user=user,
        group=group,
        create_remote_dir=False,
        jinja_env_kwargs=jinja_options(),
        **variables,
    )
