"""Soak and eval the release staged on each serving host's idle colour; no cutover.

    pyinfra inventories/<env>.py deploy/gate.py

After `deploy/runtime.py`: the verdict lands in state.json and the reports under
`gates/<host>/<release>/` (and `/var/lib/llmhost/gates/<release>/` on the host);
`deploy/cutover.py` then switches the hosts that passed.
"""

from pyinfra import host

from roles.gate import gate

if host.data.get("model_name"):
    gate()
