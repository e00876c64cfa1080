"""Verified model pull vs a raw curl of the same blob, side by side on the testbed.

    python bench/pull_throughput.py [--size-mb 2048] [--rounds 6]

On testbed host tb2, fetches one blob from tb1's registry (TLS, auth) to the same
disk, alternately (ABBA) with `curl` (no verification) and with llmhost's puller
(sha256 while streaming, fsync, atomic rename, hard-link materialisation), and
prints each time, each round's throughput ratio verified/raw, and their median
(goal >= 0.9). One untimed fetch by each first, so the registry reads the blob from
its page cache in every timed round. Needs root (the testbed); brings the testbed up
and converges it first.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from llmhost import converge  # noqa: E402
from llmhost.catalog import find, model_toml  # noqa: E402
from llmhost.mirror import RegistryAccess, mirror  # noqa: E402
from llmhost.secrets import registry_credentials  # noqa: E402
from llmhost.testing.testbed import Testbed  # noqa: E402
from llmhost.testing.testmodels import write_tiny_gguf  # noqa: E402
from roles._common.onhost import build_app  # noqa: E402

BENCH_DIR = "/var/lib/llmhost/bench"


def timed(testbed: Testbed, host, command: str) -> float:
    start = time.perf_counter()
    testbed.ssh(host, command)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--size-mb",
        type=int,
        default=2048,
        help="approximate blob size (model shards are typically 2-5 GB)",
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--chunk", default="64K", help="the puller's read size")
    args = parser.parse_args()

    testbed = Testbed()
    primary, puller = testbed.up(2)
    site = converge.run("inventories/testbed.py")
    if site.returncode != 0:
        print(site.stderr[-2000:], file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        catalog = Path(scratch) / "catalog"
        catalog.mkdir()
        blocks = max(1, round(args.size_mb / 67))  # ~67 MB per block at 1024 wide
        weights = write_tiny_gguf(
            Path(scratch) / "src" / "bench.gguf", embedding=1024, blocks=blocks, heads=16
        )
        source = {"kind": "local", "path": str(weights.parent)}
        (catalog / "bench.toml").write_text(
            model_toml("bench", "gguf", source, [(weights.name, weights)])
        )
        registry = f"{primary.address}:5000"
        access = RegistryAccess.from_secrets(registry, testbed.root / "secrets")
        mirror(find("bench", catalog), access)
        model = find("bench", catalog)
    blob = model.files[0]
    url = f"https://{registry}/v2/{model.repository}/blobs/sha256:{blob.sha256}"
    testbed.ssh(
        puller,
        "command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive "
        "apt-get install -y -q curl >/dev/null",
    )
    credentials = registry_credentials(testbed.root / "secrets")
    testbed.ssh(puller, f"mkdir -p {BENCH_DIR}")
    # Credentials go in files (a netrc for curl, the puller's auth file), never in argv.
    netrc, auth = f"{BENCH_DIR}/netrc", f"{BENCH_DIR}/auth.json"
    testbed.put(
        puller,
        netrc,
        f"machine {primary.address} login {credentials.username} password {credentials.password}\n",
    )
    testbed.put(puller, auth, credentials.auth_json())
    testbed.put(puller, f"{BENCH_DIR}/onhost.pyz", build_app(), mode="0644")
    raw = (
        f"curl -sf --netrc-file {netrc} -o {BENCH_DIR}/raw.blob {url} "
        f"&& sync -f {BENCH_DIR}/raw.blob"
    )
    verified = (
        f"python3 {BENCH_DIR}/onhost.pyz pull --registry https://{registry} "
        f"--repository {model.repository} --digest {model.digest} --store {BENCH_DIR}/store "
        f"--dest {BENCH_DIR}/model --auth-file {auth} --no-progress --json "
        f"--chunk-size {args.chunk}"
    )
    clean = f"rm -rf {BENCH_DIR}/raw.blob {BENCH_DIR}/store {BENCH_DIR}/model"
    for command in (raw, verified):  # warm up, untimed: the first read of a new blob is slower
        testbed.ssh(puller, f"{clean} && {command} > /dev/null")
    raw_times, verified_times = [], []
    for round_number in range(args.rounds):
        # Alternate which goes first, and settle the disk before each: deleting the last
        # 500 MB file leaves writeback and reclaim that would bill whoever runs next.
        order = [("raw", raw), ("verified", verified)]
        for kind, command in order if round_number % 2 == 0 else reversed(order):
            testbed.ssh(puller, f"{clean} && sync && sleep 1")
            (raw_times if kind == "raw" else verified_times).append(timed(testbed, puller, command))
    testbed.ssh(puller, f"rm -rf {BENCH_DIR}")
    size_mb = blob.size / 1e6
    raw_s, verified_s = statistics.median(raw_times), statistics.median(verified_times)
    # Each round's pair ran back to back, so its ratio is the least disturbed by drift.
    ratios = [r / v for r, v in zip(raw_times, verified_times, strict=True)]
    result = {
        "blob_mb": round(size_mb, 1),
        "rounds": args.rounds,
        "raw_curl_s": [round(t, 3) for t in raw_times],
        "verified_pull_s": [round(t, 3) for t in verified_times],
        "raw_mb_per_s": round(size_mb / raw_s, 1),
        "verified_mb_per_s": round(size_mb / verified_s, 1),
        "ratio_per_round": [round(r, 3) for r in ratios],
        "ratio_verified_over_raw": round(statistics.median(ratios), 3),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
