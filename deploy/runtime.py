"""Stage the runtime release on the idle colour (hosts already converged by site.py).

    pyinfra inventories/<env>.py deploy/runtime.py

The model must already be pulled (site.py or deploy/model.py); the active colour
is never touched.
"""

from pyinfra import host

from roles._common.site import require_residency
from roles.runtime import runtime

if host.data.get("model_name"):
    require_residency()  # what it pulls from, among the rest, in the allowed regions
    runtime()
