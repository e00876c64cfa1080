"""Switch each host's gateway back to its previous colour (`llmhost rollback` runs this).

    pyinfra inventories/<env>.py deploy/rollback.py --limit HOST

Instant when the previous colour is still warm (inside its rollback window); when
it is not, it is started and must pass readiness before the gateway switches.
"""

from pyinfra import host

from roles.gateway.rollback import rollback

if host.data.get("model_name"):
    rollback()
