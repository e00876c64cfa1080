"""Inventory for a small shop: one CPU (or single-GPU) box that does everything, deployed
from the box itself.

The one host is `@local`, pyinfra's name for the machine it runs on, and it is in every
group: it serves, keeps the model mirror and runs monitoring itself. On the box, as root,
in a checkout of this repository (README: *A single box*):

    ./scripts/setup --control                         # llmhost in .venv, build tools
    .venv/bin/llmhost keys add ops                    # the gateway's first API key
    .venv/bin/llmhost bootstrap inventories/single_box.py

Set the region, the class, the model and the name clients use first. The box reaches its
own registry, exporters and engine on 127.0.0.1.
"""

_box = (
    "@local",
    {
        "region": "gb-lon1",
        "hardware": "cpu",
        # The model it serves: a file in models/ (models/README.md says how to pin one).
        # Unset, the box is converged without one.
        # "model_name": "qwen2.5-0.5b-instruct-q8",
        # The names clients use for the gateway (its certificate's names); unset: 127.0.0.1,
        # which only the box itself can call.
        "gateway_server_names": ["llm.internal.example"],
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
