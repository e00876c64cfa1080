"""Pull the models hosts serve, and nothing else (hosts already converged by site.py).

    pyinfra inventories/<env>.py deploy/model.py

For refreshing weights after `llmhost models mirror`, without touching the
other roles.
"""

from pyinfra import host

from roles._common.site import require_residency
from roles.model import model

if host.data.get("model_name"):
    require_residency()  # what it pulls from, among the rest, in the allowed regions
    model()
