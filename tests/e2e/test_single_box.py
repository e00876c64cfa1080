"""The single box: llmhost installed on a blank testbed host, which then deploys itself.

What a small shop does after the README's *A single box*: a checkout on the box, its
inventory's values set (appended to inventories/single_box.py here, as an editor would),
a model file in models/, then as root on the box `./scripts/setup --control`,
`llmhost keys add ops` and `llmhost bootstrap inventories/single_box.py`. The inventory's
one host is `@local`: pyinfra runs on the box itself, over no SSH. The box then serves
behind its gateway to this machine, the printed curl answers, and a second bootstrap
changes nothing.

Brought in rather than fetched, to keep the run fast and its versions this checkout's:
llmhost's Python dependencies (a wheelhouse made here of the versions this checkout runs,
installed with pip's --no-index), and the llama-server build with its source archive
(this machine's cache; the build key names the compiler, and the box's g++ from the same
archive gives the same key, else the box builds it from the copied source, in minutes).
Debian's packages come through the box's egress proxy, as on a box with internet access.
It boots its host blank and takes the testbed down at its end (conftest's RUN_LAST).
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import shutil
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.catalog import model_toml
from llmhost.hardware import load_classes
from llmhost.onhost.layout import STATE_FILE
from llmhost.paths import REPO_ROOT
from llmhost.runtimes import build_llama_cpp, load_sources
from llmhost.secrets import api_keys
from llmhost.testing.testbed import Testbed, TestbedHost
from llmhost.testing.testbed.testbed import PROXY_PORT
from llmhost.testing.testmodels import write_tiny_gguf
from tests.e2e.conftest import BUILD_CACHE

pytestmark = pytest.mark.e2e

MODEL = "box-tiny"
CHECKOUT = "/root/llmhost"
WHEELHOUSE = "/root/wheelhouse"


def checkout_files() -> list[str]:
    """This checkout's files as a fresh clone has them (tracked, or new and not ignored)."""
    listed = subprocess.run(
        [
            "git",
            "-C",
            str(REPO_ROOT),
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and not name.startswith(".venv")]


def copy_checkout(destination: Path) -> None:
    for name in checkout_files():
        source = REPO_ROOT / name
        if source.is_file():  # a tracked file deleted in the work tree is not copied
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def make_wheelhouse(destination: Path, scratch: Path) -> None:
    """llmhost's dependencies at the versions installed here, and its build backend."""
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    frozen = subprocess.run([*pip, "freeze", "--exclude-editable"], capture_output=True, text=True)
    constraints = scratch / "constraints.txt"
    constraints.write_text(frozen.stdout)
    downloaded = subprocess.run(
        [
            *pip,
            "download",
            "--quiet",
            "--dest",
            str(destination),
            "-c",
            str(constraints),
            "setuptools>=68",
            str(REPO_ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert downloaded.returncode == 0, downloaded.stderr[-3000:]


def copy_build_cache(cache: Path) -> None:
    """This machine's llama-server build for class cpu (made here if missing), and its source."""
    build_llama_cpp(load_sources().llama_cpp, load_classes()["cpu"], BUILD_CACHE)
    for part in ("builds", "sources"):
        shutil.copytree(BUILD_CACHE / part, cache / part, dirs_exist_ok=True)


def box_inventory_values(testbed: Testbed, host: TestbedHost) -> str:
    """What this box's operator sets in inventories/single_box.py, as Python to append."""
    values = {
        "model_name": MODEL,
        "gateway_server_names": [host.address],
        "base_http_proxy": f"http://{host.gateway}:{PROXY_PORT}",
        "base_ntp_servers": [host.gateway],
        # The proxy forwards to Debian's archive and PyPI alone: not to apt.grafana.com.
        "monitoring_grafana": False,
        "residency_endpoints": testbed.residency_endpoints(host),
    }
    return f"\n# This box's values.\n_box[1].update({values!r})\n"


def on_box(testbed: Testbed, host: TestbedHost, command: str, timeout: int = 1800):
    """``command`` as root on the box, in its checkout; the whole output kept."""
    return subprocess.run(
        [*testbed.ssh_argv(host), f"cd {CHECKOUT} && {command}"],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def box(testbed: Testbed, tmp_path_factory: pytest.TempPathFactory):
    """tb1 booted blank, with the checkout, a wheelhouse, a model file and the build cache."""
    testbed.up(1)
    host = testbed.recreate("tb1")
    root = Path(host.rootfs) / "root"
    copy_checkout(root / "llmhost")
    make_wheelhouse(root / "wheelhouse", tmp_path_factory.mktemp("wheelhouse"))
    copy_build_cache(root / ".cache" / "llmhost")
    weights = write_tiny_gguf(root / "weights" / f"{MODEL}.gguf", seed=21)
    source = {"kind": "local", "path": "/root/weights"}
    entry = model_toml(MODEL, "gguf", source, [(weights.name, weights)])
    (root / "llmhost" / "models" / f"{MODEL}.toml").write_text(entry)
    with open(root / "llmhost" / "inventories" / "single_box.py", "a") as inventory:
        inventory.write(box_inventory_values(testbed, host))
    apt_proxy = root.parent / "etc" / "apt" / "apt.conf.d" / "80llmhost-proxy"
    apt_proxy.write_text(f'Acquire::http::Proxy "http://{host.gateway}:{PROXY_PORT}";\n')
    try:
        yield host
    finally:
        testbed.down()


@pytest.fixture(scope="module")
def bootstrapped(box, testbed):
    """The README's single-box commands, run as root on the box."""
    env = f"PIP_NO_INDEX=1 PIP_FIND_LINKS={WHEELHOUSE}"
    setup = on_box(testbed, box, f"{env} ./scripts/setup --control")
    assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-4000:]
    key = on_box(testbed, box, ".venv/bin/llmhost keys add ops")
    assert key.returncode == 0, key.stderr
    first = on_box(testbed, box, ".venv/bin/llmhost bootstrap inventories/single_box.py")
    log = testbed.root / "single-box-bootstrap.log"
    log.write_text(first.stderr)
    errors = [line for line in first.stderr.splitlines() if "rror" in line]
    assert first.returncode == 0, "\n".join(
        [f"(all of it in {log})", *errors[:40], first.stderr[-3000:]]
    )
    return first


def ask(testbed: Testbed, host: TestbedHost) -> tuple[int, dict]:
    secrets = Path(host.rootfs) / CHECKOUT.lstrip("/") / "inventories" / "secrets"
    context = ssl.create_default_context(cafile=str(secrets / "ca" / "ca.crt"))
    connection = http.client.HTTPSConnection(host.address, 8000, context=context, timeout=60)
    body = json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": 8, "temperature": 0})
    key = api_keys(secrets)["ops"]
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    connection.request("POST", "/v1/completions", body, headers)
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def test_the_box_serves_its_model_behind_its_gateway_after_the_gate(bootstrapped, box, testbed):
    stages = [line for line in bootstrapped.stderr.splitlines() if line.startswith("[")]
    assert [s.split("] ", 1)[1] for s in stages] == [
        "converging the registry hosts: base, registry (deploy/registry.py)...",
        f"mirroring {MODEL}...",
        "building llama-server for class cpu (minutes the first time, then cached)...",
        "converging every host: monitoring, then pull by digest, start, gate, cut over...",
    ]
    assert "--> Connecting to hosts..." in bootstrapped.stderr
    assert "[@local] Connected" in bootstrapped.stderr, "pyinfra ran on the box itself"
    status, answer = ask(testbed, box)
    assert status == 200, answer
    assert answer["usage"]["completion_tokens"] > 0
    state = json.loads(testbed.ssh(box, f"cat {STATE_FILE}"))
    active = state["colours"][state["active"]]
    assert active["model"] == MODEL and state["last_gate"]["passed"]


def test_the_printed_curl_answers_with_the_operators_key(bootstrapped, box, testbed):
    assert bootstrapped.stdout.startswith("Bootstrapped: 1 serving host(s).")
    (curl,) = [line.strip() for line in bootstrapped.stdout.splitlines() if "curl " in line]
    secrets = Path(box.rootfs) / CHECKOUT.lstrip("/") / "inventories" / "secrets"
    # The printed CA path is the box's own; from here it is under the box's root.
    argv = shlex.split(curl.replace(f"{CHECKOUT}/", f"{box.rootfs}{CHECKOUT}/"))
    argv = [part.replace("$KEY", api_keys(secrets)["ops"]) for part in argv]
    answered = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert answered.returncode == 0, answered.stdout + answered.stderr
    assert json.loads(answered.stdout)["choices"][0]["text"]


def test_a_second_bootstrap_changes_nothing(bootstrapped, box, testbed):
    before = json.loads(testbed.ssh(box, f"cat {STATE_FILE}"))
    again = on_box(testbed, box, ".venv/bin/llmhost bootstrap inventories/single_box.py")
    (testbed.root / "single-box-bootstrap-again.log").write_text(again.stderr)
    assert again.returncode == 0, again.stderr[-4000:]
    converged = re.findall(r"^converged: (\d+) operation\(s\) changed$", again.stderr, re.M)
    if converged != ["0", "0"]:
        changed = [line for line in again.stderr.splitlines() if line.startswith("  llmhost ")]
        units = testbed.ssh(box, "systemctl list-units --no-legend --state=failed,activating")
        pytest.fail(f"changed: {changed or again.stderr[-4000:]}\nunits not settled: {units}")
    assert json.loads(testbed.ssh(box, f"cat {STATE_FILE}")) == before, "the same release serves"
