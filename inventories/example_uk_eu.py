"""Example production inventory: a GPU fleet across the UK and the EU.

Copy it to inventories/<env>.py and edit. Every host declares:

    region    where it runs, checked against `residency_allowed_regions`
              (lower-case ISO 3166-1 country code + optional site: "gb-lon1", "de-fra")
    hardware  its class in inventories/hardware.toml ("cpu", "l40s", "h100-sxm-x8", ...)

Groups decide which roles a host gets beyond the base: `serving` hosts run the
runtime behind the gateway, `registry` hosts keep the model mirror (the first is
primary, the second the DR copy), `monitoring` runs Prometheus and Grafana.
Organisation-wide settings go in inventories/group_data/all.py, group-wide ones in
inventories/group_data/<group>.py. Secrets never go here: keep them in
inventories/secrets*.py (ignored by git) or your secret store.

    llmhost check inventories/example_uk_eu.py     # validate without contacting hosts
    llmhost deploy inventories/example_uk_eu.py    # converge
"""

_key = {
    "ssh_user": "deploy",
    "_sudo": True,
    "ssh_key": "~/.ssh/llmhost_deploy",
    # The monitoring hosts are reached by name, so the exporters' firewall needs their network.
    "monitoring_scrape_from": ["10.20.30.0/24"],
    # Packages and time from inside the network, and where each of those endpoints is:
    # `llmhost residency audit` lists everything the hosts will call, and check and deploy
    # refuse an endpoint outside `residency_allowed_regions` or one whose region nobody
    # declared. (The registries and monitoring hosts are inventory hosts: they need none.)
    "base_apt_mirror": "http://apt.internal.example/debian",
    "base_apt_security_mirror": "http://apt.internal.example/debian-security",
    "base_ntp_servers": ["ntp1.internal.example", "ntp2.internal.example"],
    # Mirrors of NVIDIA's CUDA repository and Grafana's (their keys are still checked
    # against the vendors' fingerprints).
    "nvidia_apt_mirror": "http://apt.internal.example/nvidia-cuda",
    "monitoring_grafana_apt_mirror": "http://apt.internal.example/grafana",
    "residency_endpoints": {
        "apt.internal.example": "gb-lon1",
        "ntp1.internal.example": "gb-lon1",
        "ntp2.internal.example": "nl-ams",
    },
}
# GPU hosts run this exact release of their class's driver branch (550): a branch alone would
# install whatever is newest that day. Move a group to a new release to roll it out there first.
_gpu = {**_key, "nvidia_driver_version": "550.127.08"}

serving = [
    ("gpu-lon-1.internal.example", {**_gpu, "region": "gb-lon1", "hardware": "l40s"}),
    ("gpu-lon-2.internal.example", {**_gpu, "region": "gb-lon1", "hardware": "l40s"}),
    ("hgx-fra-1.internal.example", {**_gpu, "region": "de-fra", "hardware": "h100-sxm-x8"}),
]

registry = [
    ("mirror-lon-1.internal.example", {**_key, "region": "gb-lon1", "hardware": "cpu"}),
    ("mirror-ams-1.internal.example", {**_key, "region": "nl-ams", "hardware": "cpu"}),
]

monitoring = [
    ("ops-lon-1.internal.example", {**_key, "region": "gb-lon1", "hardware": "cpu"}),
]
