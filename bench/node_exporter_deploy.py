"""llmhost's side of bench/ansible_node_exporter.py: the monitoring role alone.

On a host outside the `monitoring` group that serves no model, the role is what the
Ansible role does: node exporter installed, its unit configured (a drop-in: flags and
hardening), its textfile directory, plus llmhost's firewall rule for the scrapers.
With ``--data bench_step=prepare`` it runs the base role instead (the host's
preparation, untimed: APT sources and proxy, the firewall unit the rule is loaded by).
"""

from pyinfra import host

from roles.base import base
from roles.monitoring import monitoring

if host.data.get("bench_step") == "prepare":
    base()
else:
    monitoring()
