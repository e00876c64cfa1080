"""Converge the registry hosts alone, as deploy/site.py does them: base, the NVIDIA role
(nothing on a CPU class), the registry.

    pyinfra inventories/<env>.py deploy/registry.py --limit registry

`llmhost bootstrap` runs it first: a model or an engine build can only be pushed to a
registry that runs. A registry host that also serves is left serving as it is: the
serving roles are not part of this deploy.
"""

from pyinfra import host

from roles._common.site import require_residency
from roles.base import base
from roles.nvidia import nvidia
from roles.registry import registry

require_residency()
base()
nvidia()

if "registry" in host.groups:
    registry()
