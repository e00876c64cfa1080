"""Converge every host of the inventory, role by role.

    pyinfra inventories/<env>.py deploy/site.py

Each role validates its own inputs before it changes anything, and pyinfra
prepares every host before it executes on any, so a bad value on one host
stops the run before any host is changed. The residency audit comes first: a
host that would call an endpoint outside the allowed regions (or one whose
region nobody declared) is refused before any role is planned.
"""

from pyinfra import host

from roles._common.site import require_residency
from roles.base import base
from roles.edge import edge
from roles.gate import gate
from roles.gateway import gateway
from roles.gateway.cutover import cutover
from roles.model import model
from roles.monitoring import monitoring
from roles.nvidia import nvidia
from roles.registry import registry
from roles.runtime import runtime

require_residency()
base()
nvidia()

if "registry" in host.groups:
    registry()

monitoring()

if "edge" in host.groups:
    edge()

if host.data.get("model_name"):
    gateway()
    model()
    runtime()
    gate()
    cutover()
