"""Inventory for a small shop: one CPU (or single-GPU) box that does everything.

Set the box's address, region and class, then:

    llmhost deploy inventories/single_box.py

The one host is in every group, so it serves, keeps the model mirror and runs
monitoring itself.
"""

_box = (
    "llm.internal.example",
    {
        "ssh_user": "root",
        "ssh_key": "~/.ssh/id_ed25519",
        "region": "gb-lon1",
        "hardware": "cpu",
        # Where the box's packages come from (`llmhost residency audit` lists every endpoint
        # it calls, and check and deploy refuse one whose region nobody declared). Debian's
        # archives, and Grafana's repository (the box runs monitoring, Grafana included),
        # are served by CDNs from their nearest nodes: declare them only if your policy
        # accepts that, else set `base_apt_mirror`/`base_apt_security_mirror` and
        # `monitoring_grafana_apt_mirror` to mirrors in your region and declare those (or
        # turn Grafana off: `monitoring_grafana: False`). A single-GPU class (`rtx4090`)
        # also calls NVIDIA's repository, developer.download.nvidia.com: the same choice,
        # with `nvidia_apt_mirror`. Time comes from the NTP pool's UK zone (the default,
        # declared by llmhost).
        "residency_endpoints": {
            "deb.debian.org": "gb",
            "security.debian.org": "gb",
            "apt.grafana.com": "gb",
        },
    },
)

serving = [_box]
registry = [_box]
monitoring = [_box]
