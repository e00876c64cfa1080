"""Throughput and p50 latency through the gateway vs directly to the runtime, side by side.

    python bench/gateway_overhead.py [--requests 600] [--clients 8] [--rounds 4] [--model small]

On testbed host tb1, serving a model with llama-server (the active colour) behind the
gateway, a client on the same host sends the same completions (--tokens each, N
concurrent clients) alternately (ABBA) to
  A. the runtime directly (http://127.0.0.1:<active port>), and
  B. the gateway (https://<host address>:8000: TLS, key check, rate limit, audit log),
each client keeping one connection open as SDKs do (TLS is negotiated once per client), and
prints per round the throughput ratio B/A and the p50 latency added by the gateway,
then their medians (goals: >= 0.95x throughput, <= 2 ms added p50). Takes the testbed down
at the end. Needs root.

--model tiny (the default) answers in about a millisecond, so on a small machine every
microsecond the gateway spends is taken from the engine: the worst case. --model small
(8 blocks, 512 wide, 129 MiB f32) takes tens of milliseconds of real compute a request,
as any real model does. --engine-threads 1 leaves the engine one core and the gateway and
the client the other, as on a GPU host, where the compute is on the GPU and the CPU cores
are the gateway's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmhost import converge  # noqa: E402
from llmhost.catalog import model_toml  # noqa: E402
from llmhost.secrets import add_api_key, api_keys  # noqa: E402
from llmhost.testing.testbed import Testbed  # noqa: E402
from llmhost.testing.testmodels import write_tiny_gguf  # noqa: E402

# The models the bench can serve: write_tiny_gguf's shape arguments.
MODELS: dict[str, dict[str, int]] = {
    "tiny": {},
    "small": {"embedding": 512, "blocks": 8, "heads": 8, "context_length": 512},
}

CLIENT = r"""
import http.client, json, ssl, statistics, sys, threading, time
url, total, clients, key_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
tokens = int(sys.argv[5])
tls = url.startswith("https")
host, port = url.split("://")[1].split(":")
key = open(key_file).read().strip() if key_file != "-" else None  # "-": no key (the engine)
context = ssl.create_default_context(cafile="/usr/local/share/ca-certificates/llmhost-ca.crt")
body = json.dumps({"prompt": "Hello", "max_tokens": tokens, "temperature": 0, "ignore_eos": True})
headers = {"Content-Type": "application/json"}
if key:
    headers["Authorization"] = "Bearer " + key
latencies, failures, lock, issued, reconnects = [], [], threading.Lock(), [0], [0]
def connect():
    return (http.client.HTTPSConnection(host, int(port), context=context, timeout=60) if tls
            else http.client.HTTPConnection(host, int(port), timeout=60))
def client():
    conn = connect()  # one keep-alive connection per client, as SDKs keep them
    while True:
        with lock:
            if issued[0] >= total:
                return
            issued[0] += 1
        start = time.perf_counter()
        for attempt in (1, 2):
            try:
                conn.request("POST", "/v1/completions", body, headers)
                response = conn.getresponse()
                response.read()
                break
            except (http.client.HTTPException, OSError):
                # The server closed the kept-alive connection: reconnect once, as clients do.
                conn.close()
                conn = connect()
                with lock:
                    reconnects[0] += 1
        with lock:
            (latencies if response.status == 200 else failures).append(time.perf_counter() - start)
start = time.perf_counter()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.perf_counter() - start
print(json.dumps({"rps": len(latencies) / elapsed, "p50_ms": statistics.median(latencies) * 1000,
                  "failed": len(failures), "reconnects": reconnects[0]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=8, help="tokens per completion")
    parser.add_argument(
        "--no-tls", action="store_true", help="gateway over plain HTTP, to see what TLS costs"
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--model",
        choices=sorted(MODELS),
        default="tiny",
        help="tiny: about 1 ms of compute a request (worst case); small: tens of ms",
    )
    parser.add_argument(
        "--engine-threads",
        type=int,
        default=None,
        help="llama-server --threads (default: the cpu class's, every core)",
    )
    args = parser.parse_args()
    testbed = Testbed()
    try:
        return measure(args, testbed)
    finally:
        testbed.down()  # the testbed is one per machine: leave it as found


def measure(args: argparse.Namespace, testbed: Testbed) -> int:
    hosts = testbed.up(2)
    host = hosts[0]
    secrets = testbed.root / "secrets"
    if "bench" not in api_keys(secrets):
        add_api_key(secrets, "bench")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        catalog = root / "catalog"
        catalog.mkdir()
        weights = write_tiny_gguf(root / "src" / "bench-gw.gguf", seed=21, **MODELS[args.model])
        (catalog / "bench-gw.toml").write_text(
            model_toml(
                "bench-gw",
                "gguf",
                {"kind": "local", "path": str(weights.parent)},
                [(weights.name, weights)],
            )
        )
        os.environ.update(
            {
                "LLMHOST_MODELS_DIR": str(catalog),
                "LLMHOST_RUNTIME_BUILDS": str(root / "runtime-builds.toml"),
            }
        )
        if converge.run("inventories/testbed.py").returncode != 0:
            return 2
        for command in (["models", "mirror", "bench-gw"], ["runtimes", "build", "--class", "cpu"]):
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "llmhost.cli",
                    *command,
                    "--inventory",
                    "inventories/testbed.py",
                ],
                cwd=REPO,
                check=False,
            )
            if done.returncode != 0:
                return 2
        data = {
            **testbed.inventory_data(host),
            "model_name": "bench-gw",
            "gateway_rate_limit_rps": 100000,
            "gateway_rate_limit_burst": 100000,
            "gateway_tls": not args.no_tls,
        }
        if args.engine_threads:
            data["runtime_extra_args"] = ["--threads", str(args.engine_threads)]
        entries = [(host.name, data), (hosts[1].name, testbed.inventory_data(hosts[1]))]
        inventory = root / "inventory.py"
        inventory.write_text(f"testbed = {entries!r}\nregistry = testbed[:2]\n")
        served = converge.run(str(inventory))
        if served.returncode != 0:
            print(served.stderr[-3000:], file=sys.stderr)
            return 2
    state = json.loads(testbed.ssh(host, "cat /var/lib/llmhost/state.json"))
    direct = f"http://127.0.0.1:{8001 if state['active'] == 'blue' else 8002}"
    gateway = f"{'http' if args.no_tls else 'https'}://{host.address}:8000"
    testbed.put(host, "/root/gw-client.py", CLIENT, mode="0644")
    testbed.put(host, "/root/gw-key", api_keys(secrets)["bench"], mode="0600")

    def measure(url: str) -> dict:
        key = "/root/gw-key" if url == gateway else "-"
        out = testbed.ssh(
            host,
            f"python3 /root/gw-client.py {url} {args.requests} {args.clients} {key} {args.tokens}",
        )
        result = json.loads(out)
        assert result["failed"] == 0, result
        return result

    measure(direct)  # warm up, untimed
    ratios, added = [], []
    print(
        f"model {args.model}, engine threads {args.engine_threads or 'the class default'}: "
        f"{args.requests} requests a run, {args.clients} concurrent clients, "
        f"{args.tokens} tokens each"
    )
    for number in range(1, args.rounds + 1):
        if number % 2:
            a, b = measure(direct), measure(gateway)
        else:
            b, a = measure(gateway), measure(direct)
        ratios.append(b["rps"] / a["rps"])
        added.append(b["p50_ms"] - a["p50_ms"])
        print(
            f"round {number}: direct {a['rps']:.0f} req/s p50 {a['p50_ms']:.1f} ms; gateway "
            f"{b['rps']:.0f} req/s p50 {b['p50_ms']:.1f} ms; throughput ratio {ratios[-1]:.3f}, "
            f"added p50 {added[-1]:+.1f} ms"
        )
    print(
        f"median throughput ratio (gateway / direct): {statistics.median(ratios):.3f} "
        f"(goal >= 0.95); median added p50: {statistics.median(added):+.2f} ms (goal <= 2)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
