"""The soak load generator's own ceiling, side by side with what the runtime serves.

    python bench/soak_ceiling.py [--requests 2000] [--concurrency 4] [--max-tokens 16] [--rounds 4]

On testbed host tb1, serving a tiny model with llama-server (the active colour), the soak
client (`llmhost/onhost/soak.py`, from the host's own onhost.pyz, run with its python3: streamed
completions, one new connection per request) sends the same closed-loop load
(--concurrency clients, --max-tokens each) alternately (ABBA), over loopback, to
  A. nginx on the host answering every request at once with a static SSE body of
     --max-tokens token events (an extra server block on 127.0.0.1:8090, removed at the end),
  B. the runtime directly (http://127.0.0.1:<active port>),
and prints per round the requests/s of each, the ratio A/B, and the client's CPU time per
request and its share of a core while it loads the runtime (what the runtime's host pays for
it), then the medians. A is the most the generator can drive on this host; every A request
must succeed, or it is no ceiling. Goal: A >= 10x B, so the generator is never the bottleneck
of a soak gate. Waits (up to --wait-minutes) while another run holds the testbed, and takes
it down at the end. Needs root.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._testbed import on_testbed, publish, succeeded, use_tiny_catalog  # noqa: E402
from llmhost import converge  # noqa: E402
from llmhost.onhost.layout import ONHOST_APP  # noqa: E402
from llmhost.settings import from_data  # noqa: E402
from llmhost.testing.testbed import Testbed, TestbedHost  # noqa: E402
from roles.runtime.defaults import RuntimeSettings  # noqa: E402

MODEL = "bench-soak"
STATIC_PORT = 8090
STATIC_CONF = "/etc/nginx/conf.d/llmhost-soak-ceiling.conf"
DRIVER = r"""
import asyncio, json, os, sys, time
sys.path.insert(0, "ONHOST_APP")  # the soak client the gate runs, as the host has it
from llmhost.onhost import soak
url, concurrency, requests, max_tokens = sys.argv[1], *map(int, sys.argv[2:5])
target = soak.Target(url=url, model="bench-soak")
cpu, start = os.times(), time.perf_counter()
samples = asyncio.run(soak.closed_loop(target, ["Hello"], concurrency, requests, max_tokens))
elapsed, cpu_end = time.perf_counter() - start, os.times()
summary = soak.summarise(samples, elapsed)
used = (cpu_end.user - cpu.user) + (cpu_end.system - cpu.system)
rps, tokens_per_s = summary["requests_per_s"], summary["output_tokens_per_s"]
print(json.dumps({"rps": rps, "ok": summary["ok"], "requests": summary["requests"],
                  "errors": summary["errors"], "tokens_per_request": tokens_per_s / rps,
                  "cpu_us_per_request": used / len(samples) * 1e6, "core_share": used / elapsed}))
""".replace("ONHOST_APP", ONHOST_APP)


def static_conf(tokens: int) -> str:
    """An nginx server block answering every completion with ``tokens`` SSE events at once."""
    event = 'data: {"object":"text_completion","choices":[{"index":0,"text":"tok"}]}\\n\\n'
    body = event * tokens + "data: [DONE]\\n\\n"
    return (
        f"server {{\n    listen 127.0.0.1:{STATIC_PORT};\n    access_log off;\n"
        "    location /v1/completions {\n        default_type text/event-stream;\n"
        f"        return 200 '{body}';\n    }}\n}}\n"
    )


def serve_tiny_model(testbed: Testbed, hosts: list[TestbedHost], scratch: Path) -> bool:
    """A tiny model published to the registry and served by tb1 (the active colour)."""
    use_tiny_catalog(scratch, [MODEL], first_seed=23)
    if not publish(testbed, "bench", [MODEL]):
        return False
    data = {**testbed.inventory_data(hosts[0]), "model_name": MODEL}
    entries = [(hosts[0].name, data), (hosts[1].name, testbed.inventory_data(hosts[1]))]
    inventory = scratch / "inventory.py"
    inventory.write_text(f"testbed = {entries!r}\nregistry = testbed[:2]\n")
    return succeeded(converge.run(str(inventory)), f"serving {MODEL}")


def runtime_url(testbed: Testbed, host: TestbedHost) -> str:
    active = json.loads(testbed.ssh(host, "cat /var/lib/llmhost/state.json"))["active"]
    ports = from_data(RuntimeSettings, testbed.inventory_data(host), host.name).runtime_ports
    return f"http://127.0.0.1:{ports[active]}"


def add_static_sse(testbed: Testbed, host: TestbedHost, tokens: int) -> str:
    testbed.put(host, STATIC_CONF, static_conf(tokens), mode="0644")
    testbed.ssh(host, "nginx -t -q && systemctl reload nginx")
    # A reload hands over to new workers in the background: wait for the port.
    testbed.ssh(
        host,
        f"for i in $(seq 50); do (: > /dev/tcp/127.0.0.1/{STATIC_PORT}) 2>/dev/null && exit 0; "
        "sleep 0.1; done; exit 1",
    )
    return f"http://127.0.0.1:{STATIC_PORT}"


def remove_static_sse(testbed: Testbed, host: TestbedHost) -> None:
    testbed.ssh(host, f"rm -f {STATIC_CONF} && nginx -t -q && systemctl reload nginx", check=False)


def measure(testbed: Testbed, host: TestbedHost, url: str, args: argparse.Namespace) -> dict:
    out = testbed.ssh(
        host,
        f"python3 /tmp/soak-ceiling.py {url} {args.concurrency} {args.requests} {args.max_tokens}",
    )
    return json.loads(out)


def round_line(number: int, a: dict, b: dict) -> str:
    return (
        f"round {number}: static {a['rps']:.0f} req/s ({a['ok']}/{a['requests']} ok, client "
        f"{a['cpu_us_per_request']:.0f} us CPU/req); runtime {b['rps']:.0f} req/s "
        f"({b['ok']}/{b['requests']} ok, {b['tokens_per_request']:.1f} tokens/req, client "
        f"{b['cpu_us_per_request']:.0f} us CPU/req, {b['core_share']:.2f} of a core); "
        f"ratio {a['rps'] / b['rps']:.2f}"
    )


def run_rounds(
    testbed: Testbed, host: TestbedHost, urls: tuple[str, str], args: argparse.Namespace
) -> bool:
    """ABBA rounds of A (static SSE) and B (runtime); True when every A request was ok."""
    static, runtime = urls
    measure(testbed, host, runtime, args)  # warm up, untimed
    ratios: list[float] = []
    shares: list[float] = []
    static_errors: Counter[str] = Counter()
    print(
        f"{args.requests} requests a run, closed loop, concurrency {args.concurrency}, "
        f"max_tokens {args.max_tokens}"
    )
    for number in range(1, args.rounds + 1):
        if number % 2:
            a, b = measure(testbed, host, static, args), measure(testbed, host, runtime, args)
        else:
            b, a = measure(testbed, host, runtime, args), measure(testbed, host, static, args)
        static_errors.update(a["errors"])
        static_errors["missing"] += args.requests - a["requests"]
        ratios.append(a["rps"] / b["rps"])
        shares.append(b["core_share"])
        print(round_line(number, a, b))
    failed = {kind: count for kind, count in static_errors.items() if count}
    print(
        f"median ratio (static / runtime): {statistics.median(ratios):.2f} (goal >= 10); "
        f"every static request ok: {'NO, ' + json.dumps(failed) if failed else 'yes'}; "
        f"median client CPU while loading the runtime: {statistics.median(shares):.2f} of a core"
    )
    return not failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--wait-minutes", type=float, default=30)
    args = parser.parse_args()

    return on_testbed(args.wait_minutes, lambda testbed: soak_ceiling(testbed, args))


def soak_ceiling(testbed: Testbed, args: argparse.Namespace) -> int:
    hosts = testbed.up(2)
    host = hosts[0]
    with tempfile.TemporaryDirectory() as scratch:
        if not serve_tiny_model(testbed, hosts, Path(scratch)):
            return 2
    testbed.put(host, "/tmp/soak-ceiling.py", DRIVER, mode="0644")
    try:
        static = add_static_sse(testbed, host, args.max_tokens)
        return 0 if run_rounds(testbed, host, (static, runtime_url(testbed, host)), args) else 1
    finally:
        remove_static_sse(testbed, host)


if __name__ == "__main__":
    sys.exit(main())
