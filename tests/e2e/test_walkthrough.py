"""The README's walk-through, for real: `llmhost demo`, then what its summary says to run.

The demo converges the testbed hosts end to end and prints a curl, the gate's
reports, an SSH tunnel to Prometheus and the command that takes it all down; each is
run here as printed. `llmhost demo --down` then removes the testbed, so this module
runs after every other end-to-end module (conftest's RUN_LAST).
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from llmhost.demo import STAGES
from llmhost.paths import REPO_ROOT
from llmhost.testing.testbed import Testbed, network, processes
from llmhost.testing.testbed.testbed import mounts_under
from tests.e2e.conftest import HOSTS

pytestmark = pytest.mark.e2e


def line(text: str, start: str) -> str:
    (found,) = [s.strip() for s in text.splitlines() if s.strip().startswith(start)]
    return found


@pytest.fixture(scope="module")
def demo(testbed: Testbed) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", "demo", "--hosts", str(HOSTS)],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=3600,
    )
    errors = [s for s in done.stderr.splitlines() if "rror" in s]
    log = testbed.root / "demo-walkthrough.log"
    log.write_text(done.stderr)
    assert done.returncode == 0, "\n".join(
        [f"(all of it in {log})", *errors[:40], done.stderr[-2000:]]
    )
    return done


def test_the_demo_says_each_stage_with_its_time_and_ends_with_the_summary(demo):
    stages = [s for s in demo.stderr.splitlines() if s.startswith("[")]
    assert [s.split("] ", 1)[1] for s in stages] == [f"{text}..." for text in STAGES]
    assert all(s.split()[1].count(":") == 1 for s in stages), "mm:ss since the start"
    assert demo.stdout.startswith(f"The demo is up: {HOSTS} host(s)")
    assert demo.stdout.rstrip().endswith("llmhost demo --down")


def test_the_printed_curl_returns_a_completion(demo):
    answer = subprocess.run(
        shlex.split(line(demo.stdout, "curl ")), capture_output=True, text=True, timeout=120
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    completion = json.loads(answer.stdout)
    assert completion["choices"][0]["text"] and completion["usage"]["completion_tokens"] > 0


def test_the_printed_gate_reports_are_there(demo, testbed: Testbed):
    for host in testbed.hosts():
        report = Path(line(demo.stdout, f"{host.name}  /").split(maxsplit=1)[1])
        assert report.name == "report.html" and "<html" in report.read_text().lower()


def test_the_printed_tunnel_reaches_prometheus_which_watches_every_host(demo, testbed):
    argv = shlex.split(line(demo.stdout, "ssh "))
    port = int(argv[argv.index("-L") + 1].split(":")[0])
    tunnel = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=10) as r:
            targets = json.load(r)["data"]["activeTargets"]
        node = {t["labels"]["host"] for t in targets if t["labels"]["job"] == "node"}
        assert node == {h.name for h in testbed.hosts()}
    finally:
        tunnel.terminate()
        tunnel.wait(timeout=10)


def test_demo_down_leaves_no_host_namespace_link_mount_or_process(demo, testbed: Testbed):
    hosts = testbed.hosts()
    pids = [(pid, what) for h in hosts for pid, what in (
        (h.nspawn_pid, h.rootfs), (h.proxy_pid, "tinyproxy"), (h.mirror_pid, "tinyproxy"),
        (h.ntp_pid, "chronyd"),
    )]  # fmt: skip
    down = subprocess.run(
        [sys.executable, "-m", "llmhost.cli", "demo", "--down"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=600,
    )
    assert down.returncode == 0, down.stderr
    assert "the demo is down" in down.stderr
    assert testbed.hosts() == [] and not testbed.state_file.exists()
    assert network.our_namespaces() == [] and network.our_links() == []
    assert mounts_under(testbed.hosts_dir) == []
    assert not [pid for pid, what in pids if processes.alive(pid, what, patient=False)]
