"""Gate, then point each serving host's gateway at the colour that runs its wanted release.

    pyinfra inventories/<env>.py deploy/cutover.py

The last two stages of deploy/site.py, on their own: after `deploy/runtime.py` staged a
release, or to finish a rollout that stopped before cutover. A release that already
passed its gate is not soaked again.
"""

from pyinfra import host

from roles.gate import gate
from roles.gateway.cutover import cutover

if host.data.get("model_name"):
    gate()
    cutover()
