"""The GPU exporter on a real NVIDIA driver, checked against nvidia-smi's own readings.

Runs the exporter from the archive hosts get (``python3 -I -S onhost.pyz gpu-exporter``)
with the real ``libnvidia-ml.so.1``, then compares each DCGM series with what nvidia-smi
reports for the same GPU: the GPUs and their UUIDs and names, framebuffer used (MiB,
within 1 %) and total, temperature (within 2 C), power, the driver and CUDA versions,
ECC counts where ECC is on. Skipped with the reason where nvidia-smi finds no GPU; the
exporter's logic is covered against a fake NVML and a C stand-in for the library by
tests/unit/test_gpuexporter.py.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from roles._common import onhost
from tests.gpu.support import gpu_missing

pytestmark = pytest.mark.gpu

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def gpu_present() -> str | None:
    return gpu_missing("the exporter's NVML readings not checked")


def smi(query: str) -> list[dict[str, str]]:
    """``nvidia-smi --query-gpu``, one dict per GPU, in index order."""
    fields = query.split(",")
    result = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    rows = [dict(zip(fields, (v.strip() for v in line.split(",")), strict=True))
            for line in result.stdout.strip().splitlines()]  # fmt: skip
    return sorted(rows, key=lambda row: int(row["index"]))


def number(text: str) -> float | None:
    """nvidia-smi's value, or None for its "[N/A]" / "[Not Supported]"."""
    try:
        return float(text)
    except ValueError:
        return None


def parse(text: str) -> Series:
    series: Series = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, inner, value = match.groups()
        labels = tuple((k, v.replace('\\"', '"').replace("\\\\", "\\"))
                       for k, v in _LABEL.findall(inner or ""))  # fmt: skip
        series[(name, labels)] = float(value)
    return series


def per_gpu(series: Series, name: str) -> dict[int, tuple[dict[str, str], float]]:
    """gpu index -> (labels, value) for one metric."""
    return {int(dict(k)["gpu"]): (dict(k), v) for (n, k), v in series.items() if n == name}


def scrape(base: str) -> str:
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture(scope="module")
def exporter(tmp_path_factory) -> Iterator[str]:
    reason = gpu_present()
    if reason:
        pytest.skip(reason)
    shipped = tmp_path_factory.mktemp("app") / "onhost.pyz"
    shipped.write_bytes(onhost.build_app())
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = Path(tmp_path_factory.mktemp("log")) / "exporter.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(shipped), "gpu-exporter",
             "--listen", f"127.0.0.1:{port}", "--interval", "1", "--collect-timeout", "0.9"],
            stdout=output, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            try:
                if "llmhost_gpu_up 1" in scrape(base).splitlines():
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                text = scrape(base) if process.poll() is None else ""
                pytest.fail(f"the exporter never reported up 1:\n{text}\n{log.read_text()}")
            time.sleep(0.2)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=15) == 0, log.read_text()
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail(f"the exporter did not stop on SIGTERM:\n{log.read_text()}")


def test_each_dcgm_series_matches_nvidia_smi(exporter: str):
    query = "index,uuid,name,memory.used,memory.total,temperature.gpu,power.draw,driver_version"
    text = scrape(exporter)
    gpus = smi(query)
    series = parse(text)
    lines = text.splitlines()
    assert "llmhost_gpu_up 1" in lines and "llmhost_gpu_collect_stale 0" in lines
    assert not [line for line in lines if line.startswith("llmhost_gpu_read_error")], text
    assert series[("llmhost_gpu_devices", ())] == len(gpus)
    info = [dict(k) for (n, k) in series if n == "llmhost_gpu_info"]
    assert info and info[0]["driver_version"] == gpus[0]["driver_version"]
    header = re.search(r"CUDA Version:\s*([\d.]+)", subprocess.run(
        ["nvidia-smi"], capture_output=True, text=True, check=True).stdout)  # fmt: skip
    if header:
        assert info[0]["cuda_version"] == header.group(1)

    used = per_gpu(series, "DCGM_FI_DEV_FB_USED")
    free = per_gpu(series, "DCGM_FI_DEV_FB_FREE")
    reserved = per_gpu(series, "DCGM_FI_DEV_FB_RESERVED")
    temperature = per_gpu(series, "DCGM_FI_DEV_GPU_TEMP")
    power = per_gpu(series, "DCGM_FI_DEV_POWER_USAGE")
    assert sorted(temperature) == [int(g["index"]) for g in gpus], "one series per GPU"
    for gpu in gpus:
        index = int(gpu["index"])
        labels, celsius = temperature[index]
        assert labels["UUID"] == gpu["uuid"] and labels["modelName"] == gpu["name"]
        assert labels["Hostname"] == socket.gethostname() and labels["device"].startswith("nvidia")
        assert re.fullmatch(r"[0-9A-F]{8}:[0-9A-F]{2}:[0-9A-F]{2}\.[0-9A-F]", labels["pci_bus_id"])
        smi_used, smi_total = float(gpu["memory.used"]), float(gpu["memory.total"])
        mib = used[index][1]
        assert abs(mib - smi_used) <= max(0.01 * smi_used, 1), (index, mib, smi_used)
        total = mib + free[index][1] + (reserved[index][1] if index in reserved else 0)
        assert abs(total - smi_total) <= 0.01 * smi_total, (index, total, smi_total)
        assert abs(celsius - float(gpu["temperature.gpu"])) <= 2, (index, celsius, gpu)
        watts = number(gpu["power.draw"])
        if watts is None:
            assert index not in power, "power nvidia-smi cannot read is left out, no sentinel"
        else:  # both average over about a second; the two reads are a moment apart
            assert abs(power[index][1] - watts) <= max(0.2 * watts, 20), (index, power, watts)
        assert per_gpu(series, "DCGM_FI_DEV_SM_CLOCK")[index][1] > 0
        assert 0 <= per_gpu(series, "DCGM_FI_DEV_GPU_UTIL")[index][1] <= 100


def test_ecc_counts_match_nvidia_smi_where_ecc_is_on(exporter: str):
    query = "index,ecc.mode.current,ecc.errors.corrected.volatile.total,ecc.errors.uncorrected.volatile.total,ecc.errors.corrected.aggregate.total,ecc.errors.uncorrected.aggregate.total"  # noqa: E501
    gpus = smi(query)
    series = parse(scrape(exporter))
    enabled = [g for g in gpus if g["ecc.mode.current"] == "Enabled"]
    if not enabled:
        pytest.skip("ECC is off on every GPU here: the ECC series are not comparable")
    for gpu in enabled:
        index = int(gpu["index"])
        for name, column in [
            ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "ecc.errors.corrected.volatile.total"),
            ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "ecc.errors.uncorrected.volatile.total"),
            ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "ecc.errors.corrected.aggregate.total"),
            ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "ecc.errors.uncorrected.aggregate.total"),
        ]:
            expected = number(gpu[column])
            exported = per_gpu(series, name).get(index)
            if expected is None:
                assert exported is None, f"{name} exported where nvidia-smi has none"
            else:
                assert exported is not None and exported[1] == expected, (index, name)


def test_every_gpu_is_watched_for_xid_events(exporter: str):
    """A datacenter GPU delivers XID events; each shows a counter from 0 (or more)."""
    count = len(smi("index"))
    deadline = time.monotonic() + 10
    while True:
        watched = per_gpu(parse(scrape(exporter)), "llmhost_gpu_xid_events_total")
        if len(watched) == count or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(watched) == count, f"XID events registered on {sorted(watched)} of {count} GPUs"
