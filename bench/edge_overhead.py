"""Throughput and p50 latency through the edge vs straight to a host's gateway, side by side.

    python bench/edge_overhead.py [--requests 600] [--clients 8] [--rounds 4]

tb1 serves a tiny model behind its gateway; tb2 is the edge (HAProxy) in front of it. A
client on tb3 sends the same completions (--tokens each, N concurrent clients, each
keeping one connection open as SDKs do) alternately (ABBA) to
  A. tb1's gateway (https://tb1:8000), and
  B. the edge (https://tb2:8443: TLS, the key's identity and team, the feature check,
     the audit line, then TLS again to the gateway),
and prints per round the throughput ratio B/A and the p50 latency the edge adds, then
their medians. Waits for the testbed to be free and takes it down at the end. Needs root.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._testbed import on_testbed, publish, succeeded, use_tiny_catalog  # noqa: E402
from bench.gateway_overhead import CLIENT  # noqa: E402
from llmhost import converge  # noqa: E402
from llmhost.secrets import api_keys  # noqa: E402
from llmhost.testing.testbed import Testbed  # noqa: E402

MODEL = "bench-edge"
IDENTITY = "bench"


def inventory(testbed: Testbed, root: Path) -> Path:
    tb1, tb2, tb3 = testbed.hosts()
    limits = {"gateway_rate_limit_rps": 100000, "gateway_rate_limit_burst": 100000}
    data = {
        tb1.name: {"model_name": MODEL, **limits},
        tb2.name: {"edge_identities": {IDENTITY: {"team": "bench"}}},
        tb3.name: {},
    }
    entries = [(h.name, {**testbed.inventory_data(h), **data[h.name]}) for h in (tb1, tb2, tb3)]
    path = root / "inventory.py"
    path.write_text(f"testbed = {entries!r}\nregistry = testbed[:2]\nedge = testbed[1:2]\n")
    return path


def run(args: argparse.Namespace, testbed: Testbed) -> int:
    testbed.up(3)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        use_tiny_catalog(root, [MODEL], first_seed=31)
        if not publish(testbed, IDENTITY, [MODEL]):
            return 2
        if not succeeded(converge.run(str(inventory(testbed, root))), "serving behind the edge"):
            return 2
    tb1, tb2, tb3 = testbed.hosts()
    testbed.put(tb3, "/root/gw-client.py", CLIENT, mode="0644")
    testbed.put(tb3, "/root/gw-key", api_keys(testbed.root / "secrets")[IDENTITY], mode="0600")

    def measure(url: str) -> dict:
        out = testbed.ssh(
            tb3,
            f"python3 /root/gw-client.py {url} {args.requests} {args.clients} /root/gw-key "
            f"{args.tokens}",
        )
        result = json.loads(out)
        assert result["failed"] == 0, result
        return result

    gateway, edge = f"https://{tb1.address}:8000", f"https://{tb2.address}:8443"
    measure(edge)  # warm up, untimed
    ratios, added = [], []
    print(
        f"{args.requests} requests a run, {args.clients} concurrent clients, "
        f"{args.tokens} tokens each; client on {tb3.name}"
    )
    for number in range(1, args.rounds + 1):
        if number % 2:
            a, b = measure(gateway), measure(edge)
        else:
            b, a = measure(edge), measure(gateway)
        ratios.append(b["rps"] / a["rps"])
        added.append(b["p50_ms"] - a["p50_ms"])
        print(
            f"round {number}: gateway {a['rps']:.0f} req/s p50 {a['p50_ms']:.1f} ms; edge "
            f"{b['rps']:.0f} req/s p50 {b['p50_ms']:.1f} ms; throughput ratio {ratios[-1]:.3f}, "
            f"added p50 {added[-1]:+.1f} ms"
        )
    print(
        f"median throughput ratio (edge / gateway): {statistics.median(ratios):.3f}; "
        f"median added p50: {statistics.median(added):+.2f} ms"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=8, help="tokens per completion")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--wait-minutes", type=float, default=60)
    args = parser.parse_args()
    return on_testbed(args.wait_minutes, lambda testbed: run(args, testbed))


if __name__ == "__main__":
    sys.exit(main())
