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
