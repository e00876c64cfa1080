"""Runtimes on real hosts: llama-server built from the pinned source, pulled by digest,
served as blue-green systemd units, and what a deploy must never do to the active colour.

The llama.cpp build is the production path (`llmhost runtimes build --class cpu`):
the pinned archive is downloaded and checked, built with the class's flags, pushed
to both testbed registries and read back. Only where the build digest is recorded
differs: a file in the test's temporary directory, not inventories/runtime-builds.toml.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from llmhost import converge
from llmhost.onhost.layout import STATE_FILE
from llmhost.runtimes import load_sources, load_vllm_wheels
from llmhost.testing.testbed.testbed import REGION
from roles._common.onhost import runtimectl
from roles.runtime.defaults import env_file, unit_name
from tests.e2e.conftest import cli, write_inventory

pytestmark = pytest.mark.e2e

# Exposure is systemd-analyze's 0-10 score. 2.0 is the edge of its "OK" band; what keeps
# it from lower is the network (AF_INET is needed to serve) and the syscall allow-list
# being @system-service rather than a hand-made list.
MAX_EXPOSURE = 2.0

LOAD_SCRIPT = r"""
import http.client, json, os, sys, threading, time
port, stop = int(sys.argv[1]), sys.argv[2]
counts = {"ok": 0, "failed": 0}
errors = []
lock = threading.Lock()
def client():
    while not os.path.exists(stop):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            body = json.dumps({"prompt": "Hello", "max_tokens": 4, "temperature": 0})
            conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
            good = response.status == 200 and "choices" in json.loads(data)
            conn.close()
        except Exception as error:
            good = False
            data = repr(error).encode()
        with lock:
            counts["ok" if good else "failed"] += 1
            if not good and len(errors) < 5:
                errors.append(data[:200].decode(errors="replace"))
threads = [threading.Thread(target=client) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps({**counts, "errors": errors}))
"""


def serve(tmp_path: Path, testbed, hosts, host, deploy: str = "deploy/site.py", **data):
    inventory = write_inventory(tmp_path / "inventory.py", testbed, hosts, **{host.name: data})
    return inventory, converge.run(inventory, deploy)


def state(testbed, host) -> dict:
    return json.loads(testbed.ssh(host, f"cat {STATE_FILE}"))


def completion(testbed, host, port: int, model: str = "rt-one") -> dict:
    out = testbed.ssh(
        host,
        runtimectl("complete", "--port", str(port), "--model", model, "--max-tokens", "3"),
    )
    return json.loads(out)


def main_pid(testbed, host, colour: str) -> int:
    return int(testbed.ssh(host, f"systemctl show -p MainPID --value {unit_name(colour)}"))


def test_blue_serves_and_a_second_run_changes_nothing(tmp_path, testbed, hosts, published):
    host = hosts[1]
    _, first = serve(tmp_path, testbed, hosts, host, model_name="rt-one")
    assert first.returncode == 0 and first.errors == 0, first.stderr[-4000:]
    recorded = state(testbed, host)
    assert recorded["active"] == "blue"
    assert recorded["colours"]["blue"]["model"] == "rt-one"
    answer = completion(testbed, host, 8001)
    assert answer["choices"][0]["text"] is not None
    assert answer["usage"]["completion_tokens"] >= 1

    _, second = serve(tmp_path, testbed, hosts, host, model_name="rt-one")
    assert second.returncode == 0 and second.changes == 0, second.changed_operations()


def test_a_new_release_goes_to_green_while_blue_keeps_serving(tmp_path, testbed, hosts, published):
    host = hosts[1]
    _, first = serve(tmp_path, testbed, hosts, host, model_name="rt-one")
    assert first.returncode == 0, first.stderr[-3000:]
    blue_pid, blue_env = (
        main_pid(testbed, host, "blue"),
        testbed.ssh(host, f"cat {env_file('blue')}"),
    )
    testbed.put(host, "/root/load.py", LOAD_SCRIPT, mode="0644")
    stop = "/root/load.stop"
    testbed.ssh(host, f"rm -f {stop}")
    load = subprocess.Popen(
        [*testbed.ssh_argv(host), f"python3 /root/load.py 8001 {stop}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(2)
        # Pull, then stage: without the cutover that deploy/site.py ends with.
        _, pulled = serve(tmp_path, testbed, hosts, host, "deploy/model.py", model_name="rt-two")
        assert pulled.returncode == 0, pulled.stderr[-3000:]
        _, staged = serve(tmp_path, testbed, hosts, host, "deploy/runtime.py", model_name="rt-two")
        time.sleep(2)
    finally:
        testbed.ssh(host, f"touch {stop}")
        out, _ = load.communicate(timeout=120)
    counts = json.loads(out)
    print(f"requests to blue during the green release: {counts}")
    assert staged.returncode == 0 and staged.errors == 0, staged.stderr[-4000:]
    assert counts["failed"] == 0, counts["errors"]
    assert counts["ok"] >= 20
    recorded = state(testbed, host)
    assert recorded["active"] == "blue"
    assert recorded["colours"]["green"]["model"] == "rt-two"
    assert recorded["colours"]["blue"]["model"] == "rt-one"
    assert main_pid(testbed, host, "blue") == blue_pid, "the active colour was restarted"
    assert testbed.ssh(host, f"cat {env_file('blue')}") == blue_env
    assert completion(testbed, host, 8002, "rt-two")["usage"]["completion_tokens"] >= 1

    _, again = serve(tmp_path, testbed, hosts, host, "deploy/runtime.py", model_name="rt-two")
    assert again.returncode == 0 and again.changes == 0, again.changed_operations()


def test_systemd_brings_a_killed_runtime_back_and_it_is_ready_again(testbed, hosts, published):
    host = hosts[1]
    before = main_pid(testbed, host, "blue")
    testbed.ssh(host, f"kill -9 {before}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = main_pid(testbed, host, "blue")
        if now not in (0, before):
            break
        time.sleep(0.5)
    assert main_pid(testbed, host, "blue") not in (0, before)
    ready = testbed.ssh(
        host, runtimectl("ready", "--port", "8001", "--model", "rt-one", "--timeout", "60")
    )
    assert "ready" in ready


def test_the_unit_is_hardened(testbed, hosts, published):
    host = hosts[1]
    out = testbed.ssh(host, f"systemd-analyze security {unit_name('blue')} --no-pager")
    exposure = float(out.strip().splitlines()[-1].split("exposure level for")[1].split(":")[1]
                     .split()[0])  # fmt: skip
    print(f"systemd-analyze security exposure of {unit_name('blue')}: {exposure}")
    assert exposure <= MAX_EXPOSURE, out
    user = testbed.ssh(host, f"ps -o user= -p {main_pid(testbed, host, 'blue')}").strip()
    assert user == "llmhost-runtime"
    listening = testbed.ssh(host, "ss -ltnH 'sport = :8001'")
    assert "127.0.0.1:8001" in listening, "the runtime listens on loopback only"


def test_bad_inputs_fail_before_any_unit_changes(tmp_path, testbed, hosts, published):
    host = hosts[1]
    env_before = testbed.ssh(host, f"cat {env_file('green')}", check=False)
    state_before = testbed.ssh(host, f"cat {STATE_FILE}")
    cases = [
        ({"model_name": "rt-st"}, "deploy/site.py", "llama.cpp cannot serve model rt-st"),
        ({"model_name": "rt-one", "runtime_ports": {"blue": 8001, "green": 8001}},
         "deploy/site.py", "8001 is also `runtime_ports.blue`'s port"),
        ({"model_name": "rt-one", "runtime_ports": {"blue": 8001, "green": 5000}},
         "deploy/site.py", "registry_port"),
        ({"model_name": "rt-one", "hardware": "tpu-pod"}, "deploy/site.py",
         "'tpu-pod' is not a class"),
        ({"model_name": "rt-unpulled"}, "deploy/runtime.py", "Fix: pull the model first"),
    ]  # fmt: skip
    for data, deploy, message in cases:
        _, result = serve(tmp_path, testbed, hosts, host, deploy, **data)
        assert result.returncode != 0, data
        assert message in result.stderr + result.stdout, (data, result.stderr[-3000:])
    assert testbed.ssh(host, f"cat {env_file('green')}", check=False) == env_before
    assert testbed.ssh(host, f"cat {STATE_FILE}") == state_before


def dry_run_as_l40s(tmp_path, testbed, hosts) -> set[str]:
    """The operations a dry run of deploy/runtime.py plans for tb2 as an l40s vLLM host."""
    host = hosts[1]
    # A GPU class installs NVIDIA's driver stack: where its repository is must be declared.
    declared = {**testbed.residency_endpoints(host), "developer.download.nvidia.com": REGION}
    data = {"model_name": "rt-st", "hardware": "l40s", "residency_endpoints": declared}
    inventory = write_inventory(tmp_path / "inventory.py", testbed, hosts, **{host.name: data})
    dry = converge.run(inventory, "deploy/runtime.py", dry=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    return {name.split(" | ", 1)[1] for name in dry.planned_changes()}


def test_a_dry_run_for_a_vllm_class_shows_the_install_and_staging_and_changes_nothing(
    tmp_path, testbed, hosts, published
):
    """Planned against the real host's facts; no GPU is needed to plan, and none is used."""
    host = hosts[1]
    state_before = testbed.ssh(host, f"cat {STATE_FILE}")
    planned = dry_run_as_l40s(tmp_path, testbed, hosts)
    version = load_sources().vllm.version
    assert f"vLLM {version} in /opt/llmhost/vllm/{version} from the index" in planned
    assert f"vLLM {version} lock (every distribution hashed)" in planned
    assert any(name.startswith("green: release ") for name in planned), planned
    assert not any(name.startswith("blue") for name in planned), "blue is active: untouched"
    assert testbed.ssh(host, f"cat {STATE_FILE}") == state_before
    assert testbed.ssh(host, "test -e /opt/llmhost/vllm && echo yes || echo no").strip() == "no"


def test_published_vllm_wheels_are_pulled_from_the_registry_by_digest(
    tmp_path, testbed, hosts, published, monkeypatch
):
    """`publish-vllm` for real, on a one-wheel lock from PyPI: downloaded by its hash, pushed to
    both registries and read back; then a vLLM host's plan pulls it by digest and installs with
    no index. Not exercised: the install itself on a host (vLLM's wheels are gigabytes, and a
    vLLM colour needs a GPU to become ready); the pull and `pip --no-index` are what the
    dry run lists."""
    runtimes = tmp_path / "runtimes.toml"
    shipped = load_sources().definition.read_text()
    runtimes.write_text(
        shipped.replace(
            f'lock = "inventories/locks/vllm-{load_sources().vllm.version}.txt"',
            'lock = "tests/e2e/locks/tiny-vllm.txt"',
        )
    )
    monkeypatch.setenv("LLMHOST_RUNTIMES_FILE", str(runtimes))
    monkeypatch.setenv("LLMHOST_VLLM_WHEELS", str(tmp_path / "vllm-wheels.toml"))
    done = cli(
        "runtimes", "publish-vllm", "--inventory", "inventories/testbed.py",
        "--cache-dir", str(tmp_path / "cache"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    wheels = load_vllm_wheels()
    assert wheels is not None and [f.path for f in wheels.files] == [
        "six-1.17.0-py2.py3-none-any.whl"
    ]
    assert wheels.digest in done.stdout
    repository = load_sources().vllm.repository
    revision = f"_manifests/revisions/sha256/{wheels.digest.removeprefix('sha256:')}"
    stored = f"/var/lib/docker-registry/docker/registry/v2/repositories/{repository}/{revision}"
    for registry in hosts[:2]:  # the primary and the disaster-recovery copy
        assert testbed.ssh(registry, f"test -d {stored} && echo stored").strip() == "stored"
    planned = dry_run_as_l40s(tmp_path, testbed, hosts)
    version = load_sources().vllm.version
    assert f"vLLM {version} wheels by digest" in planned
    assert f"vLLM {version} in /opt/llmhost/vllm/{version} from the registry's wheels" in planned
