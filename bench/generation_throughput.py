"""Generation tokens/s through the runtime unit vs llama-bench, side by side on the testbed.

    python bench/generation_throughput.py [--tokens 128] [--rounds 3]

On testbed host tb2, serves a small f32 llama model with llama-server as
`llmhost-runtime@blue` (the production unit: hardened, the class's settings),
and alternately (ABBA) measures
  A. llama-bench's text-generation rate (`-p 0 -n N`) with the class's threads, and
  B. the rate a client sees through the unit: the time of an N-token completion
     (EOS ignored) minus that of a 1-token one with the same prompt, over N - 1
     tokens, so prompt processing and the HTTP round trip cancel out,
then prints each round's ratio B/A and their median (goal >= 0.9). Both use the
same binary build, model file and thread count. Needs root (the testbed); builds
llama.cpp for class `cpu` if no build is cached.
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
from llmhost.catalog import find, model_toml  # noqa: E402
from llmhost.hardware import load_classes  # noqa: E402
from llmhost.testing.testbed import Testbed  # noqa: E402
from llmhost.testing.testmodels import write_tiny_gguf  # noqa: E402
from roles.model.defaults import model_directory  # noqa: E402
from roles.runtime.defaults import llama_cpp_binary  # noqa: E402

CLIENT = r"""
import http.client, json, sys, time
port, tokens = int(sys.argv[1]), int(sys.argv[2])
def timed(n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    body = {"prompt": "Once upon a time", "max_tokens": n, "temperature": 0, "ignore_eos": True}
    start = time.perf_counter()
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    response = conn.getresponse()
    answer = json.loads(response.read())
    elapsed = time.perf_counter() - start
    assert response.status == 200 and answer["usage"]["completion_tokens"] == n, answer
    return elapsed
one, many = timed(1), timed(tokens)
print(json.dumps({"tokens": tokens, "seconds": many - one}))
"""


def run(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    if done.returncode != 0:
        raise SystemExit(f"llmhost {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    threads = load_classes()["cpu"].llama_cpp.threads

    testbed = Testbed()
    hosts = testbed.up(2)
    host = hosts[1]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        catalog = root / "catalog"
        catalog.mkdir()
        weights = write_tiny_gguf(
            root / "src" / "bench-gen.gguf", embedding=512, blocks=8, heads=8, context_length=512
        )
        (catalog / "bench-gen.toml").write_text(
            model_toml(
                "bench-gen",
                "gguf",
                {"kind": "local", "path": str(weights.parent)},
                [(weights.name, weights)],
            )
        )
        env = {"LLMHOST_MODELS_DIR": str(catalog),
               "LLMHOST_RUNTIME_BUILDS": str(root / "runtime-builds.toml")}  # fmt: skip
        os.environ.update(env)
        site = converge.run("inventories/testbed.py")
        if site.returncode != 0:
            print(site.stderr[-2000:], file=sys.stderr)
            return 2
        run("models", "mirror", "bench-gen", "--inventory", "inventories/testbed.py")
        run("runtimes", "build", "--class", "cpu", "--inventory", "inventories/testbed.py")
        data = {**testbed.inventory_data(host), "model_name": "bench-gen"}
        inventory = root / "inventory.py"
        entries = [(hosts[0].name, testbed.inventory_data(hosts[0])), (host.name, data)]
        inventory.write_text(f"testbed = {entries!r}\nregistry = testbed[:2]\n")
        served = converge.run(str(inventory))
        if served.returncode != 0:
            print(served.stderr[-3000:], file=sys.stderr)
            return 2
        model = find("bench-gen", catalog)
        assert model.digest
        gguf = f"{model_directory(model.name, model.digest)}/{weights.name}"
        state = json.loads(testbed.ssh(host, "cat /var/lib/llmhost/state.json"))
        port = 8001 if state["active"] == "blue" else 8002
        from llmhost.runtimes import find_build

        bench = llama_cpp_binary(find_build("cpu").digest).replace("llama-server", "llama-bench")
        testbed.put(host, "/root/generate.py", CLIENT, mode="0644")
        size_mib = weights.stat().st_size >> 20

    def llama_bench() -> float:
        out = testbed.ssh(
            host, f"{bench} -m {gguf} -t {threads} -p 0 -n {args.tokens} -r 3 -o json"
        )
        return float(json.loads(out)[0]["avg_ts"])

    def through_unit() -> float:
        result = json.loads(testbed.ssh(host, f"python3 /root/generate.py {port} {args.tokens}"))
        return (result["tokens"] - 1) / result["seconds"]

    through_unit()  # warm the server's caches once, untimed
    ratios = []
    print(f"model {weights.name}: {size_mib} MiB f32, {threads} threads, "
          f"{args.tokens} tokens")  # fmt: skip
    for number in range(1, args.rounds + 1):
        if number % 2:
            bench_rate, unit_rate = llama_bench(), through_unit()
        else:
            unit_rate, bench_rate = through_unit(), llama_bench()
        ratios.append(unit_rate / bench_rate)
        print(f"round {number}: llama-bench {bench_rate:.1f} tok/s, through the unit "
              f"{unit_rate:.1f} tok/s, ratio {ratios[-1]:.3f}")  # fmt: skip
    print(f"median ratio (unit / llama-bench): {statistics.median(ratios):.3f} (goal >= 0.9)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
