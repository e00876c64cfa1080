"""Point each serving host's gateway at the colour that runs its wanted release.

    pyinfra inventories/<env>.py deploy/cutover.py

The last stage of deploy/site.py, on its own: after `deploy/runtime.py` staged a
release, or to finish a rollout that stopped before cutover.
"""

from pyinfra import host

from roles.cutover import cutover

if host.data.get("model_name"):
    cutover()
