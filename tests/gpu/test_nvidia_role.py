"""The nvidia role on a real NVIDIA host: its checks against the real driver, its plan from the
real facts, and (on a disposable host only) a converge that must change nothing the second time.

The class is written for this machine (its GPU model and count, the branch and CUDA version of
the driver it runs) into a hardware file of its own, and the release is the one running, so:

- ``gpu-check`` from the archive hosts get must pass against the real NVML, report each GPU's
  ECC mode as nvidia-smi does, and fail, saying why, for another release or GPU count;
- a dry run of deploy/nvidia.py on ``@local`` must pass preflight (the GPUs on the PCI bus,
  Secure Boot) and plan no reboot: the module running is the release asked for;
- with LLMHOST_GPU_CONVERGE=1 (as root, on a host whose driver may be replaced by NVIDIA's
  packages of the same release) it converges for real, twice, the second run changing nothing.

Skipped with the reason where nvidia-smi finds no GPU; the role's plans for every OS and class
are covered by tests/unit/test_nvidia_role.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost import converge
from roles._common import onhost
from roles.nvidia.defaults import DISTROS, PREFERENCES_FILE
from tests.gpu.support import gpu_missing

pytestmark = pytest.mark.gpu


def smi(query: str) -> list[list[str]]:
    listed = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [[v.strip() for v in line.split(",")] for line in listed.stdout.strip().splitlines()]


def nvswitches_on_the_bus() -> int:
    count = 0
    for device in Path("/sys/bus/pci/devices").iterdir():
        try:
            vendor = (device / "vendor").read_text().strip()
            pci_class = (device / "class").read_text().strip()
        except OSError:
            continue
        count += vendor == "0x10de" and pci_class.startswith("0x0680")
    return count


@pytest.fixture(scope="module")
def machine(tmp_path_factory) -> dict:
    """What this machine runs, and a hardware class that describes it."""
    reason = gpu_missing("the nvidia role not checked against a real driver")
    if reason:
        pytest.skip(reason)
    gpus = smi("name,driver_version,ecc.mode.current")
    header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, check=True).stdout
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", header)
    assert cuda, header
    driver = gpus[0][1]
    root = tmp_path_factory.mktemp("nvidia")
    nvswitch = len(gpus) > 1 and nvswitches_on_the_bus() > 0
    (root / "hardware.toml").write_text(
        f'[this-host]\ndescription = "this machine"\ngpu_model = "{gpus[0][0]}"\n'
        f"gpu_count = {len(gpus)}\ngpu_memory_gib = 1\nnvswitch = {str(nvswitch).lower()}\n"
        f'driver_branch = "{driver.split(".")[0]}"\ncuda_version = "{cuda.group(1)}"\n'
        'runtime = "llama.cpp"\nbenchmarked = "no"\n[this-host.llama_cpp]\n'
        'build_flags = ["-DGGML_CUDA=ON"]\nn_gpu_layers = 1\nthreads = 1\nctx_size = 8\n'
        "parallel = 1\nbatch = 8\n"
    )
    # Keep the flavour running now: the open modules say so in their banner.
    banner = Path("/proc/driver/nvidia/version").read_text()
    modules = "open" if "Open Kernel Module" in banner else "proprietary"
    return {"gpus": gpus, "driver": driver, "cuda": cuda.group(1), "root": root,
            "modules": modules}  # fmt: skip


def gpu_check(shipped: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-S", str(shipped), "gpu-check", *arguments],
                          capture_output=True, text=True)  # fmt: skip


def test_the_check_passes_on_the_real_driver_and_reports_ecc_as_nvidia_smi_does(machine):
    shipped = machine["root"] / "onhost.pyz"
    shipped.write_bytes(onhost.build_app())
    count = str(len(machine["gpus"]))
    done = gpu_check(shipped, f"--driver={machine['driver']}", f"--cuda={machine['cuda']}",
                     f"--gpus={count}")  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    verdict = json.loads(done.stdout)
    expected = {"Enabled": "enabled", "Disabled": "disabled"}
    for reported, (_, _, ecc) in zip(verdict["gpus"], machine["gpus"], strict=True):
        assert reported["ecc"].startswith(expected.get(ecc, "not supported")), (reported, ecc)
    wrong = gpu_check(shipped, "--driver=1.2.3", f"--cuda={machine['cuda']}", "--gpus=99")
    assert wrong.returncode == 1
    assert f"driver {machine['driver']} is running, not 1.2.3" in wrong.stderr
    assert f"the driver sees {count} GPU(s), the class has 99" in wrong.stderr


def local_inventory(machine: dict) -> Path:
    # A working module under Secure Boot proves its signing key is enrolled already.
    data = {
        "region": "gb-lon1",
        "hardware": "this-host",
        "nvidia_driver_version": machine["driver"],
        "nvidia_kernel_modules": machine["modules"],
        "nvidia_secure_boot_ok": True,
        "secrets_dir": str(machine["root"] / "secrets"),
    }
    path = machine["root"] / "local.py"
    path.write_text(f"local = [('@local', {data!r})]\n")
    return path


@pytest.fixture
def on_this_machine(machine, monkeypatch) -> Path:
    lines = Path("/etc/os-release").read_text().splitlines()
    release = dict(line.split("=", 1) for line in lines if "=" in line)
    os_id, version = release.get("ID", "").strip('"'), release.get("VERSION_ID", "").strip('"')
    if (os_id, version) not in DISTROS:
        pytest.skip(f"{os_id} {version} has no NVIDIA repository in the role: plan not checked")
    monkeypatch.setenv("LLMHOST_HARDWARE_FILE", str(machine["root"] / "hardware.toml"))
    return local_inventory(machine)


def test_a_dry_run_passes_preflight_and_plans_no_reboot(on_this_machine):
    dry = converge.run(str(on_this_machine), "deploy/nvidia.py", dry=True)
    assert dry.returncode == 0, dry.stderr[-3000:]
    planned = dry.planned_changes()
    assert not any("Reboot into" in name or "reboot needed" in name for name in planned), planned


def test_a_real_converge_twice_changes_nothing_the_second_time(on_this_machine, machine):
    if os.environ.get("LLMHOST_GPU_CONVERGE") != "1" or os.geteuid() != 0:
        pytest.skip(
            "converging changes this machine's driver stack (NVIDIA's repository, pins, its "
            "packages at the running release): set LLMHOST_GPU_CONVERGE=1 and run as root, "
            "on a disposable NVIDIA host"
        )
    first = converge.run(str(on_this_machine), "deploy/nvidia.py")
    assert first.returncode == 0 and first.errors == 0, first.stderr[-4000:]
    second = converge.run(str(on_this_machine), "deploy/nvidia.py")
    assert second.returncode == 0, second.stderr[-4000:]
    assert second.changes == 0, second.changed_operations()
    assert f"Pin: version {machine['driver']}-*" in Path(PREFERENCES_FILE).read_text()
