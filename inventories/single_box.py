"""Inventory for a small shop: one CPU (or single-GPU) box that does everything.

Set the box's address, region and class, then:

    llmhost deploy inventories/single_box.py

The one host is in every group, so it serves, keeps the model mirror and runs
monitoring itself.
"""

_box = (
    "llm.internal.example",
    {"ssh_user": "root", "ssh_key": "~/.ssh/id_ed25519", "region": "gb-lon1", "hardware": "cpu"},
)

serving = [_box]
registry = [_box]
monitoring = [_box]
