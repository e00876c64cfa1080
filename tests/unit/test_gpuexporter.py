"""The GPU exporter: dcgm-exporter's series from NVML, served from a cache, never a crash.

Most tests read a fake NVML (two GPUs, one without ECC, power or row remapping). The
ctypes binding itself is exercised twice without a GPU: on this machine, where
``libnvidia-ml.so.1`` is absent (the "no driver" reason), and against a small C stand-in
for the library, compiled here when a C compiler is present, that the shipped archive
loads through ``LD_LIBRARY_PATH``: argument and structure marshalling, NOT_SUPPORTED as
an omitted series, and a call hung inside the library while scrapes still answer.
Readings from a real driver are checked against nvidia-smi in tests/gpu.
"""

from __future__ import annotations

import contextlib
import ctypes
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from llmhost.onhost import app, gpuexporter, nvml
from llmhost.onhost.gpuexporter import Collector, MetricsServer, XidWatcher
from llmhost.onhost.nvml import Memory, NvmlError, RemappedRows, Utilization, XidEvent
from roles._common import onhost

MIB = 1024 * 1024
HOST = "gpu-host-1"
T0 = 1_700_000_000.0
H100 = (
    'gpu="0",UUID="GPU-0f1e2d3c-aaaa-bbbb-cccc-000000000000",pci_bus_id="00000000:3B:00.0",'
    'device="nvidia0",modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-host-1"'
)
RTX = (
    'gpu="1",UUID="GPU-99999999-dddd-eeee-ffff-111111111111",pci_bus_id="00000000:5E:00.0",'
    'device="nvidia1",modelName="NVIDIA GeForce RTX 4090",Hostname="gpu-host-1"'
)


# -- a fake NVML -----------------------------------------------------------------------------


@dataclass
class FakeGpu:
    uuid: str
    name: str
    pci: str | None
    minor: int | None
    utilization: Utilization | None
    memory: Memory | None
    temperature: int | None
    power: float | None
    energy: int | None
    clocks: dict[int, int]
    ecc: dict[tuple[int, int], int] | None
    rows: RemappedRows | None
    xid: bool


def h100() -> FakeGpu:
    return FakeGpu(
        uuid="GPU-0f1e2d3c-aaaa-bbbb-cccc-000000000000",
        name="NVIDIA H100 80GB HBM3",
        pci="00000000:3B:00.0",
        minor=0,
        utilization=Utilization(gpu=87, memory=41),
        memory=Memory(
            total=81559 * MIB,
            free=11009 * MIB + 5,
            used=70000 * MIB + 123_456,  # MiB are truncated, as nvidia-smi writes them
            reserved=550 * MIB,
        ),
        temperature=64,
        power=312.512,
        energy=123_456_789_012,
        clocks={nvml.CLOCK_SM: 1980, nvml.CLOCK_MEM: 2619},
        ecc={
            (nvml.MEMORY_ERROR_CORRECTED, nvml.VOLATILE_ECC): 3,
            (nvml.MEMORY_ERROR_UNCORRECTED, nvml.VOLATILE_ECC): 0,
            (nvml.MEMORY_ERROR_CORRECTED, nvml.AGGREGATE_ECC): 12,
            (nvml.MEMORY_ERROR_UNCORRECTED, nvml.AGGREGATE_ECC): 1,
        },
        rows=RemappedRows(correctable=2, uncorrectable=1, pending=True, failure=False),
        xid=True,
    )


def rtx4090() -> FakeGpu:
    """A board without ECC, row remapping or a power reading, and the v1 memory call."""
    return FakeGpu(
        uuid="GPU-99999999-dddd-eeee-ffff-111111111111",
        name="NVIDIA GeForce RTX 4090",
        pci="00000000:5E:00.0",
        minor=1,
        utilization=Utilization(gpu=3, memory=0),
        memory=Memory(total=24564 * MIB, free=24000 * MIB, used=564 * MIB, reserved=None),
        temperature=41,
        power=None,
        energy=9_000,
        clocks={nvml.CLOCK_SM: 210, nvml.CLOCK_MEM: 405},
        ecc=None,
        rows=None,
        xid=True,
    )


class FakeNvml:
    """Stands in for nvml.Nvml; ``errors`` make a call raise, ``hang`` makes one block."""

    def __init__(self, gpus: list[FakeGpu] | None = None) -> None:
        self.gpus = [h100(), rtx4090()] if gpus is None else gpus
        self.init_error: NvmlError | None = None
        self.errors: dict[tuple[str, int], int] = {}  # (call, gpu) -> NVML code
        self.hang: set[str] = set()
        self.release = threading.Event()
        self.calls: dict[str, int] = {}
        self.initialised = 0
        self.events: queue.Queue[XidEvent] = queue.Queue()

    def _enter(self, call: str, device: int | None = None) -> FakeGpu:
        self.calls[call] = self.calls.get(call, 0) + 1
        if call in self.hang:
            self.release.wait(30)  # "hangs" until the test lets it go
        index = 0 if device is None else device - 100
        code = self.errors.get((call, index))
        if code is not None:
            raise nvml.error_for(code, f"fake {call}")
        return self.gpus[index]

    def init(self) -> None:
        self._enter("init")
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def shutdown(self) -> None:
        self.initialised -= 1

    def driver_version(self) -> str:
        self._enter("driver_version")
        return "550.54.15"

    def cuda_driver_version(self) -> str | None:
        return "12.4"

    def device_count(self) -> int:
        self._enter("device_count")
        return len(self.gpus)

    def device_handle(self, index: int) -> int:
        self._enter("device_handle", 100 + index)
        return 100 + index

    def name(self, device: int) -> str:
        return self._enter("name", device).name

    def uuid(self, device: int) -> str:
        return self._enter("uuid", device).uuid

    def pci_bus_id(self, device: int) -> str | None:
        return self._enter("pci_bus_id", device).pci

    def minor_number(self, device: int) -> int | None:
        return self._enter("minor_number", device).minor

    def utilization(self, device: int) -> Utilization | None:
        return self._enter("utilization", device).utilization

    def memory(self, device: int) -> Memory | None:
        return self._enter("memory", device).memory

    def temperature(self, device: int) -> int | None:
        return self._enter("temperature", device).temperature

    def power_usage(self, device: int) -> float | None:
        return self._enter("power_usage", device).power

    def total_energy(self, device: int) -> int | None:
        return self._enter("total_energy", device).energy

    def clock(self, device: int, clock_type: int) -> int | None:
        return self._enter("clock", device).clocks.get(clock_type)

    def total_ecc_errors(self, device: int, error_type: int, counter_type: int) -> int | None:
        ecc = self._enter("total_ecc_errors", device).ecc
        return None if ecc is None else ecc[(error_type, counter_type)]

    def remapped_rows(self, device: int) -> RemappedRows | None:
        return self._enter("remapped_rows", device).rows

    def event_set_create(self) -> int:
        self._enter("event_set_create")
        return 7

    def register_xid_events(self, event_set: int, device: int) -> bool:
        assert event_set == 7
        return self._enter("register_xid_events", device).xid

    def wait_event(self, event_set: int, timeout_ms: int) -> XidEvent | None:
        try:
            return self.events.get(timeout=timeout_ms / 1000)
        except queue.Empty:
            return None

    def event_set_free(self, event_set: int) -> None:
        pass


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def collector(api: object, **options: object) -> Collector:
    settings: dict = {
        "interval_s": 10.0,
        "collect_timeout_s": 0.3,
        "hostname": HOST,
        "clock": Clock(),
        "log": lambda message: None,
    }
    return Collector(api, **{**settings, **options})  # type: ignore[arg-type]


# -- reading the text format back ------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
_UNESCAPE = {"\\\\": "\\", '\\"': '"', "\\n": "\n"}


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Text format 0.0.4, strictly: each family's HELP then TYPE once, then its samples
    together; label values unescaped; no series twice. Returns series -> value."""
    assert text.endswith("\n") and "\n\n" not in text
    helped: set[str] = set()
    typed: dict[str, str] = {}
    current = None
    series: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, description = line[7:].partition(" ")
            assert name not in helped, f"second HELP for {name}"
            assert description.strip(), f"empty HELP for {name}"
            helped.add(name)
            current = None
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            assert name in helped and name not in typed, f"TYPE for {name} out of order"
            assert kind in ("gauge", "counter"), line
            typed[name] = kind
            current = name
        else:
            match = _SAMPLE.match(line)
            assert match, f"not a sample line: {line!r}"
            name, inner, value = match.groups()
            assert name == current, f"{name} outside its family (HELP/TYPE) block"
            labels: list[tuple[str, str]] = []
            rest = inner or ""
            while rest:
                label = _LABEL.match(rest)
                assert label, f"bad labels in {line!r}"
                text_value = re.sub(r"\\[\\\"n]", lambda m: _UNESCAPE[m.group(0)], label[2])
                labels.append((label[1], text_value))
                rest = rest[label.end() :]
                assert rest == "" or rest.startswith(","), line
                rest = rest[1:]
            key = (name, tuple(labels))
            assert key not in series, f"duplicate series {line!r}"
            assert len({k for k, _ in labels}) == len(labels), f"a label twice: {line!r}"
            series[key] = float(value)
    return series


def values(text: str, name: str) -> dict[str, float]:
    """gpu label -> value, for one metric."""
    return {dict(k[1]).get("gpu", ""): v for k, v in parse(text).items() if k[0] == name}


# -- readings and their names ----------------------------------------------------------------


def test_dcgm_series_have_dcgm_exporters_names_units_and_labels():
    exporter = collector(FakeNvml())
    assert exporter.collect_once()
    text = exporter.render()
    lines = text.splitlines()
    for line in [
        f"DCGM_FI_DEV_SM_CLOCK{{{H100}}} 1980",
        f"DCGM_FI_DEV_SM_CLOCK{{{RTX}}} 210",
        f"DCGM_FI_DEV_MEM_CLOCK{{{H100}}} 2619",
        f"DCGM_FI_DEV_GPU_TEMP{{{H100}}} 64",
        f"DCGM_FI_DEV_GPU_TEMP{{{RTX}}} 41",
        f"DCGM_FI_DEV_POWER_USAGE{{{H100}}} 312.512",
        f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{H100}}} 123456789012",
        f"DCGM_FI_DEV_GPU_UTIL{{{H100}}} 87",
        f"DCGM_FI_DEV_GPU_UTIL{{{RTX}}} 3",
        f"DCGM_FI_DEV_MEM_COPY_UTIL{{{H100}}} 41",
        f"DCGM_FI_DEV_FB_FREE{{{H100}}} 11009",
        f"DCGM_FI_DEV_FB_USED{{{H100}}} 70000",
        f"DCGM_FI_DEV_FB_USED{{{RTX}}} 564",
        f"DCGM_FI_DEV_FB_RESERVED{{{H100}}} 550",
        f"DCGM_FI_DEV_ECC_SBE_VOL_TOTAL{{{H100}}} 3",
        f"DCGM_FI_DEV_ECC_DBE_VOL_TOTAL{{{H100}}} 0",
        f"DCGM_FI_DEV_ECC_SBE_AGG_TOTAL{{{H100}}} 12",
        f"DCGM_FI_DEV_ECC_DBE_AGG_TOTAL{{{H100}}} 1",
        f"DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS{{{H100}}} 1",
        f"DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS{{{H100}}} 2",
        f"DCGM_FI_DEV_ROW_REMAP_FAILURE{{{H100}}} 0",
        f"DCGM_FI_DEV_ROW_REMAP_PENDING{{{H100}}} 1",
        'llmhost_gpu_info{driver_version="550.54.15",cuda_version="12.4"} 1',
        "llmhost_gpu_up 1",
        "llmhost_gpu_devices 2",
        "llmhost_gpu_collect_stale 0",
        "llmhost_gpu_collect_timeouts_total 0",
        f"llmhost_gpu_last_collect_timestamp_seconds {T0:.0f}",
    ]:
        assert line in lines, f"{line!r} not in:\n{text}"
    assert not values(text, "llmhost_gpu_up_reason")
    # dcgm-exporter's help texts and types, as its default-counters.csv has them (the
    # series its dashboard 12239 plots first)
    for name, kind, description in [
        ("DCGM_FI_DEV_GPU_TEMP", "gauge", "GPU temperature (in C)."),
        ("DCGM_FI_DEV_POWER_USAGE", "gauge", "Power draw (in W)."),
        ("DCGM_FI_DEV_SM_CLOCK", "gauge", "SM clock frequency (in MHz)."),
        ("DCGM_FI_DEV_GPU_UTIL", "gauge", "GPU utilization (in %)."),
        ("DCGM_FI_DEV_FB_USED", "gauge", "Framebuffer memory used (in MiB)."),
        ("DCGM_FI_DEV_FB_FREE", "gauge", "Framebuffer memory free (in MiB)."),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "counter",
         "Total number of double-bit volatile ECC errors."),
        ("DCGM_FI_DEV_ROW_REMAP_FAILURE", "gauge", "Whether remapping of rows has failed"),
    ]:  # fmt: skip
        assert f"# HELP {name} {description}" in lines
        assert f"# TYPE {name} {kind}" in lines
    parse(text)


def test_fields_a_gpu_does_not_have_are_left_out_not_exported_as_sentinels():
    exporter = collector(FakeNvml())
    exporter.collect_once()
    text = exporter.render()
    for name in [
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL",
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL",
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        "DCGM_FI_DEV_ROW_REMAP_PENDING",
        "DCGM_FI_DEV_FB_RESERVED",  # the v1 memory call has no "reserved"
    ]:
        assert set(values(text, name)) == {"0"}, name
    assert not values(text, "llmhost_gpu_read_error")  # unsupported is not an error
    assert not re.search(r" (-1|4294967295|18446744073709551615|NaN)$", text, re.M)


def test_a_family_no_gpu_has_is_left_out_entirely():
    exporter = collector(FakeNvml([rtx4090()]))
    exporter.collect_once()
    text = exporter.render()
    assert "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL" not in text and "DCGM_FI_DEV_POWER_USAGE" not in text
    assert values(text, "DCGM_FI_DEV_GPU_TEMP") == {"0": 41}


def test_a_field_that_fails_is_an_error_series_and_the_rest_is_still_read():
    api = FakeNvml()
    api.errors[("temperature", 1)] = nvml.GPU_IS_LOST
    exporter = collector(api)
    exporter.collect_once()
    text = exporter.render()
    assert 'llmhost_gpu_read_error{gpu="1",field="temperature",error="GPU_IS_LOST"} 1' in text
    assert values(text, "DCGM_FI_DEV_GPU_TEMP") == {"0": 64}
    assert values(text, "DCGM_FI_DEV_GPU_UTIL") == {"0": 87, "1": 3}
    assert "llmhost_gpu_up 1" in text.splitlines()


def test_a_gpu_whose_handle_fails_is_left_out_and_says_so():
    api = FakeNvml()
    api.errors[("device_handle", 1)] = nvml.GPU_IS_LOST
    exporter = collector(api)
    exporter.collect_once()
    text = exporter.render()
    assert set(values(text, "DCGM_FI_DEV_GPU_TEMP")) == {"0"}
    assert 'llmhost_gpu_read_error{gpu="1",field="handle",error="GPU_IS_LOST"} 1' in text


def test_the_output_is_valid_text_format_with_escaped_labels_and_xid_series():
    awkward = 'rack "7"\\b\nslot'
    exporter = collector(FakeNvml(), hostname=awkward)
    exporter.collect_once()
    exporter.record_xid(exporter.devices()[1][0], 79)
    text = exporter.render()
    assert 'Hostname="rack \\"7\\"\\\\b\\nslot"' in text
    series = parse(text)
    hosts = {dict(labels).get("Hostname") for _, labels in series}
    assert hosts == {awkward, None}  # unescaped back to the original; host-level series none
    assert all(f"# TYPE {name} " in text for name, _ in series)
    assert len({name for name, _ in series}) >= 25


@pytest.mark.parametrize(
    ("value", "text"),
    [(1, "1"), (312.512, "312.512"), (2.0**60, "1.152921504606847e+18"), (float("nan"), "NaN"),
     (float("inf"), "+Inf"), (True, "1")],
)  # fmt: skip
def test_values_are_written_as_prometheus_reads_them(value, text):
    assert gpuexporter.format_value(value) == text


def test_every_metric_has_a_type_and_a_help_text_and_counters_are_dcgms_or_total():
    for name, (kind, description) in gpuexporter.METRICS.items():
        assert kind in ("gauge", "counter") and description.strip()
        if kind == "counter" and not name.startswith("DCGM_"):
            assert name.endswith("_total"), name


# -- no driver -------------------------------------------------------------------------------


def test_without_the_library_up_is_0_with_the_reason_and_nvml_is_retried():
    api = FakeNvml()
    api.init_error = nvml.NvmlLibraryNotFound(nvml.LIBRARY_NOT_FOUND, "nvmlInit_v2")
    exporter = collector(api)
    assert exporter.collect_once()
    text = exporter.render()
    assert "llmhost_gpu_up 0" in text.splitlines()
    assert (
        'llmhost_gpu_up_reason{reason="libnvidia-ml.so.1 not found: no NVIDIA driver installed"} 1'
        in text.splitlines()
    )
    assert "DCGM_" not in text and "llmhost_gpu_info" not in text
    parse(text)
    api.init_error = None  # the driver is installed: the next collection sees it
    exporter.collect_once()
    assert api.calls["init"] == 2
    text = exporter.render()
    assert "llmhost_gpu_up 1" in text.splitlines() and not values(text, "llmhost_gpu_up_reason")
    assert values(text, "DCGM_FI_DEV_GPU_TEMP") == {"0": 64, "1": 41}


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (nvml.DriverNotLoaded(nvml.DRIVER_NOT_LOADED, "nvmlInit_v2"),
         "driver not loaded: libnvidia-ml.so.1 is installed but the nvidia kernel module is not"),
        (nvml.error_for(nvml.LIB_RM_VERSION_MISMATCH, "nvmlInit_v2"),
         "driver/library version mismatch: reboot after the driver upgrade"),
        (nvml.error_for(nvml.NO_PERMISSION, "nvmlInit_v2"),
         "no permission to open the NVIDIA devices (/dev/nvidia*)"),
        (nvml.error_for(999, "nvmlInit_v2"), "NVML error UNKNOWN in nvmlInit_v2"),
    ],
)  # fmt: skip
def test_each_way_nvml_can_be_unusable_has_its_reason(error, reason):
    api = FakeNvml()
    api.init_error = error
    exporter = collector(api)
    exporter.collect_once()
    assert f'llmhost_gpu_up_reason{{reason="{reason}"}} 1' in exporter.render()


def test_a_driver_that_goes_away_drops_the_gpu_series_and_reinitialises_nvml():
    api = FakeNvml()
    exporter = collector(api)
    exporter.collect_once()
    api.errors[("device_count", 0)] = nvml.DRIVER_NOT_LOADED
    exporter.collect_once()
    text = exporter.render()
    assert "llmhost_gpu_up 0" in text.splitlines() and "DCGM_" not in text
    assert api.initialised == 0, "NVML is shut down after the failure, to start afresh"
    del api.errors[("device_count", 0)]
    exporter.collect_once()
    assert api.calls["init"] == 2 and "llmhost_gpu_up 1" in exporter.render().splitlines()


def test_the_real_binding_on_this_machine_reports_the_missing_library_rather_than_raising():
    try:
        ctypes.CDLL(nvml.LIBRARY)
    except OSError:
        pass
    else:
        pytest.skip("libnvidia-ml.so.1 is installed here: tests/gpu covers the real driver")
    binding = nvml.Nvml()
    with pytest.raises(nvml.NvmlLibraryNotFound) as raised:
        binding.init()
    assert raised.value.code == nvml.LIBRARY_NOT_FOUND and raised.value.name == "LIBRARY_NOT_FOUND"
    exporter = collector(binding)
    assert exporter.collect_once()
    text = exporter.render()
    assert "llmhost_gpu_up 0" in text.splitlines()
    assert 'reason="libnvidia-ml.so.1 not found: no NVIDIA driver installed"' in text
    exporter.stop()


# -- a hung NVML call never hangs a scrape ---------------------------------------------------


@contextlib.contextmanager
def serving(exporter: Collector):
    server = MetricsServer(("127.0.0.1", 0), exporter)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def scrape(base: str, path: str = "/metrics") -> tuple[int, str, str, float]:
    started = time.monotonic()
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            body, status = response.read().decode(), response.status
            content_type = response.headers["Content-Type"]
    except urllib.error.HTTPError as error:
        body, status, content_type = error.read().decode(), error.code, ""
    return status, content_type, body, time.monotonic() - started


def test_a_hung_collection_is_abandoned_and_scrapes_get_the_last_snapshot_marked_stale():
    api = FakeNvml()
    clock = Clock()
    exporter = collector(api, clock=clock, collect_timeout_s=0.3)
    assert exporter.collect_once()
    api.hang.add("temperature")
    clock.now = T0 + 10
    with serving(exporter) as base:
        started = time.monotonic()
        assert not exporter.collect_once(), "a collection past its deadline is abandoned"
        assert time.monotonic() - started < 1.0
        status, content_type, text, seconds = scrape(base)  # the worker is still stuck
        assert status == 200 and content_type == gpuexporter.CONTENT_TYPE
        assert seconds < 0.25, f"a scrape took {seconds:.2f} s while NVML hung"
        lines = text.splitlines()
        assert "llmhost_gpu_collect_stale 1" in lines
        assert "llmhost_gpu_collect_timeouts_total 1" in lines
        assert f"llmhost_gpu_last_collect_timestamp_seconds {T0:.0f}" in lines
        assert values(text, "DCGM_FI_DEV_GPU_TEMP") == {"0": 64, "1": 41}  # the last good one
        assert "llmhost_gpu_up 1" in lines
        # while the stuck call is still inside NVML, no second collection piles onto it
        calls = dict(api.calls)
        assert not exporter.collect_once()
        assert api.calls == calls
        api.release.set()
        api.hang.clear()
        deadline = time.monotonic() + 5
        while exporter._worker is not None and exporter._worker.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        clock.now = T0 + 20
        assert exporter.collect_once()
        lines = scrape(base)[2].splitlines()
        assert "llmhost_gpu_collect_stale 0" in lines
        assert f"llmhost_gpu_last_collect_timestamp_seconds {T0 + 20:.0f}" in lines


def test_with_the_scheduler_running_a_hang_never_delays_a_scrape():
    api = FakeNvml()
    exporter = collector(api, interval_s=0.2, collect_timeout_s=0.1, clock=time.time)
    exporter.start()
    try:
        with serving(exporter) as base:
            deadline = time.monotonic() + 5
            while "llmhost_gpu_up 1" not in scrape(base)[2].splitlines():
                assert time.monotonic() < deadline
            api.hang.add("memory")
            slowest, stale = 0.0, False
            while time.monotonic() < deadline and not stale:
                _, _, text, seconds = scrape(base)
                slowest = max(slowest, seconds)
                stale = "llmhost_gpu_collect_stale 1" in text.splitlines()
            assert stale and slowest < 0.25, (stale, slowest)
            assert values(text, "DCGM_FI_DEV_FB_USED") == {"0": 70000, "1": 564}
    finally:
        api.release.set()
        exporter.stop()


def test_no_snapshot_yet_and_nvml_hanging_is_up_0_with_the_reason():
    api = FakeNvml()
    api.hang.add("init")
    exporter = collector(api, collect_timeout_s=0.1)
    try:
        assert not exporter.collect_once()
        text = exporter.render()
        assert "llmhost_gpu_up 0" in text.splitlines()
        assert 'llmhost_gpu_up_reason{reason="NVML did not answer within 0.1 s"} 1' in text
        assert "llmhost_gpu_collect_stale 1" in text.splitlines()
    finally:
        api.release.set()


def test_readings_the_scheduler_stopped_refreshing_are_stale():
    clock = Clock()
    exporter = collector(FakeNvml(), clock=clock, interval_s=10, collect_timeout_s=5)
    exporter.collect_once()
    clock.now = T0 + 25
    assert "llmhost_gpu_collect_stale 0" in exporter.render().splitlines()
    clock.now = T0 + 26
    assert "llmhost_gpu_collect_stale 1" in exporter.render().splitlines()


def test_the_server_keeps_answering_without_a_driver_and_only_serves_metrics():
    api = FakeNvml()
    api.init_error = nvml.NvmlLibraryNotFound(nvml.LIBRARY_NOT_FOUND, "nvmlInit_v2")
    exporter = collector(api, interval_s=0.05, collect_timeout_s=0.02, clock=time.time)
    exporter.start()
    try:
        with serving(exporter) as base:
            for _ in range(5):
                status, _, text, _ = scrape(base)
                assert status == 200 and "llmhost_gpu_up 0" in text.splitlines()
                time.sleep(0.05)
            assert api.calls["init"] >= 3, "NVML init is retried every interval"
            assert scrape(base, "/nope")[0] == 404
            assert scrape(base, "/")[0] == 200
    finally:
        exporter.stop()


# -- XID events ------------------------------------------------------------------------------


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_xid_errors_are_counted_per_gpu_and_code_with_the_time_last_seen():
    api = FakeNvml()
    clock = Clock()
    exporter = collector(api, clock=clock)
    exporter.collect_once()
    watcher = XidWatcher(api, exporter, wait_ms=20, retry_s=0.05, log=lambda m: None)
    watcher.start()
    try:
        wait_for(lambda: values(exporter.render(), "llmhost_gpu_xid_events_total"))
        text = exporter.render()
        assert f"llmhost_gpu_xid_events_total{{{H100}}} 0" in text  # there before the first XID
        assert not values(text, "llmhost_gpu_xid_errors_total")
        for at, device, xid in [(T0 + 1, 101, 79), (T0 + 2, 100, 13), (T0 + 3.5, 101, 79)]:
            clock.now = at
            api.events.put(XidEvent(device=device, xid=xid))
            wait_for(api.events.empty)
            time.sleep(0.05)
        api.events.put(XidEvent(device=999, xid=31))  # a device not watched: ignored
        wait_for(lambda: f'llmhost_gpu_xid_errors_total{{{RTX},xid="79"}} 2' in exporter.render())
        lines = exporter.render().splitlines()
        for line in [
            f'llmhost_gpu_xid_errors_total{{{RTX},xid="79"}} 2',
            f'llmhost_gpu_xid_last_seen_timestamp_seconds{{{RTX},xid="79"}} {T0 + 3.5}',
            f'llmhost_gpu_xid_errors_total{{{H100},xid="13"}} 1',
            f'llmhost_gpu_xid_last_seen_timestamp_seconds{{{H100},xid="13"}} {T0 + 2:.0f}',
            f"llmhost_gpu_xid_events_total{{{H100}}} 1",
            f"llmhost_gpu_xid_events_total{{{RTX}}} 2",
        ]:
            assert line in lines, line
        assert not any('xid="31"' in line for line in lines)
        parse("\n".join(lines) + "\n")
    finally:
        watcher.stop()
    assert api.initialised == 1, "the watcher shuts down the NVML it initialised"


def test_a_gpu_that_cannot_deliver_xid_events_has_no_xid_series():
    api = FakeNvml()
    api.gpus[1].xid = False
    exporter = collector(api)
    exporter.collect_once()
    watcher = XidWatcher(api, exporter, wait_ms=20, retry_s=0.05, log=lambda m: None)
    watcher.start()
    try:
        wait_for(lambda: values(exporter.render(), "llmhost_gpu_xid_events_total"))
        assert set(values(exporter.render(), "llmhost_gpu_xid_events_total")) == {"0"}
    finally:
        watcher.stop()


def test_the_xid_watcher_waits_for_nvml_and_registers_when_the_gpus_appear():
    api = FakeNvml()
    api.init_error = nvml.NvmlLibraryNotFound(nvml.LIBRARY_NOT_FOUND, "nvmlInit_v2")
    exporter = collector(api)
    exporter.collect_once()
    watcher = XidWatcher(api, exporter, wait_ms=20, retry_s=0.02, log=lambda m: None)
    watcher.start()
    try:
        time.sleep(0.1)
        assert "register_xid_events" not in api.calls
        api.init_error = None
        exporter.collect_once()
        wait_for(lambda: api.calls.get("register_xid_events", 0) == 2)
    finally:
        watcher.stop()


# -- the command line ------------------------------------------------------------------------


def test_the_tool_is_registered_and_refuses_bad_options(capsys):
    assert app.TOOLS["gpu-exporter"] == "llmhost.onhost.gpuexporter"
    bad = (["--listen", "9400"], ["--interval", "0"], ["--interval", "5", "--collect-timeout", "5"])
    for argv in bad:
        with pytest.raises(SystemExit) as exited:
            gpuexporter.main(argv)
        assert exited.value.code == 2, argv
    assert gpuexporter.parse_listen("[::]:9400") == ("::", 9400)
    assert gpuexporter.parse_listen(gpuexporter.DEFAULT_LISTEN) == ("0.0.0.0", 9400)


def test_a_port_in_use_is_exit_2_with_the_reason(capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert gpuexporter.main(["--listen", f"127.0.0.1:{port}"]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("app") / "onhost.pyz"
    path.write_bytes(onhost.build_app())
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_exporter(shipped: Path, *options: str, env: dict[str, str] | None = None):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", str(shipped), "gpu-exporter",
         "--listen", f"127.0.0.1:{port}", *options],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            scrape(base)
            return process, base
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"the exporter did not serve: {process.communicate()}")
            time.sleep(0.05)


def stop_exporter(process: subprocess.Popen) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("the exporter did not stop within 10 s of SIGTERM")
    return process.returncode, err


def test_from_the_archive_without_a_driver_it_serves_up_0_and_stops_cleanly_on_sigterm(shipped):
    try:
        ctypes.CDLL(nvml.LIBRARY)
        pytest.skip("libnvidia-ml.so.1 is installed here: tests/gpu covers the real driver")
    except OSError:
        pass
    process, base = run_exporter(shipped, "--interval", "0.2", "--collect-timeout", "0.1")
    try:
        time.sleep(0.5)  # a few retries of NVML init: still serving, no crash loop
        status, _, text, _ = scrape(base)
        assert process.poll() is None
        assert status == 200 and "llmhost_gpu_up 0" in text.splitlines()
        assert 'reason="libnvidia-ml.so.1 not found: no NVIDIA driver installed"' in text
    finally:
        code, err = stop_exporter(process)
    assert code == 0, err
    assert err.count("NVML unavailable") == 1, "the reason is logged once, not every retry"


# -- the ctypes binding against a C stand-in for libnvidia-ml --------------------------------

STUB_SOURCE = r"""
#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <unistd.h>

typedef struct { char busIdLegacy[16]; unsigned int domain, bus, device, pciDeviceId,
                 pciSubSystemId; char busId[32]; } nvmlPciInfo_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct { unsigned int version; unsigned long long total, reserved, free, used; }
        nvmlMemory_v2_t;
typedef struct nvmlDevice_st { int index; } *nvmlDevice_t;
typedef struct nvmlEventSet_st { int unused; } *nvmlEventSet_t;
typedef struct { nvmlDevice_t device; unsigned long long eventType, eventData;
                 unsigned int gpuInstanceId, computeInstanceId; } nvmlEventData_t;

static struct nvmlDevice_st devices[2] = {{0}, {1}};
static struct nvmlEventSet_st event_set;
static int inits, temperature_calls, queued_gpu = -1;
static unsigned long long queued_xid;
#define MIB (1024ULL * 1024ULL)

void stub_queue_xid(int gpu, unsigned long long xid) { queued_xid = xid; queued_gpu = gpu; }
int stub_inits(void) { return inits; }
int nvmlInit_v2(void) {
    const char *fail = getenv("STUB_NVML_INIT");
    if (fail && *fail) return atoi(fail);
    inits++; return 0;
}
int nvmlShutdown(void) { if (inits == 0) return 1; inits--; return 0; }
const char *nvmlErrorString(int code) { return code == 9 ? "Driver Not Loaded" : "stub error"; }
int nvmlSystemGetDriverVersion(char *text, unsigned int size) {
    snprintf(text, size, "550.54.15"); return 0;
}
int nvmlSystemGetCudaDriverVersion_v2(int *version) { *version = 12040; return 0; }
int nvmlDeviceGetCount_v2(unsigned int *count) { *count = 2; return 0; }
int nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (index > 1) return 2;
    *device = &devices[index]; return 0;
}
int nvmlDeviceGetName(nvmlDevice_t d, char *text, unsigned int size) {
    snprintf(text, size, d->index ? "NVIDIA GeForce RTX 4090" : "NVIDIA H100 80GB HBM3");
    return 0;
}
int nvmlDeviceGetUUID(nvmlDevice_t d, char *text, unsigned int size) {
    snprintf(text, size, "GPU-00000000-0000-0000-0000-00000000000%d", d->index); return 0;
}
int nvmlDeviceGetPciInfo_v3(nvmlDevice_t d, nvmlPciInfo_t *info) {
    memset(info, 0, sizeof *info);
    snprintf(info->busIdLegacy, 16, "0000:%02X:00.0", 0x3B + d->index);
    snprintf(info->busId, 32, "00000000:%02X:00.0", 0x3B + d->index);
    info->pciSubSystemId = 0xdeadbeef; return 0;
}
int nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) { *minor = d->index; return 0; }
int nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *u) {
    u->gpu = d->index ? 3 : 87; u->memory = d->index ? 0 : 41; return 0;
}
int nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *m) {
    if (m->version != ((2u << 24) | sizeof *m)) return 25;
    if (d->index) return 13;  /* as if the old call were all there is: see below */
    m->total = 81559 * MIB; m->reserved = 550 * MIB; m->free = 11009 * MIB;
    m->used = 70000 * MIB + 123456; return 0;
}
int nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *m) {
    m->total = 24564 * MIB; m->free = 24000 * MIB; m->used = 564 * MIB; return 0;
}
int nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *t) {
    const char *after = getenv("STUB_NVML_HANG_AFTER");
    if (after && *after && ++temperature_calls > atoi(after)) sleep(3600);
    if (sensor != 0) return 2;
    *t = d->index ? 41 : 64; return 0;
}
int nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *mw) {
    if (d->index) return 3;
    *mw = 312512; return 0;
}
int nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *mj) {
    *mj = 123456789012ULL; return 0;
}
int nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *mhz) {
    if (type == 1) { *mhz = d->index ? 210 : 1980; return 0; }
    if (type == 2) { *mhz = d->index ? 405 : 2619; return 0; }
    return 2;
}
int nvmlDeviceGetTotalEccErrors(nvmlDevice_t d, int type, int counter, unsigned long long *n) {
    if (d->index) return 3;
    *n = 5000000000ULL + 10 * type + counter; return 0;
}
int nvmlDeviceGetRemappedRows(nvmlDevice_t d, unsigned int *corr, unsigned int *unc,
                              unsigned int *pending, unsigned int *failure) {
    if (d->index) return 3;
    *corr = 2; *unc = 1; *pending = 1; *failure = 0; return 0;
}
int nvmlEventSetCreate(nvmlEventSet_t *set) { *set = &event_set; return 0; }
int nvmlDeviceRegisterEvents(nvmlDevice_t d, unsigned long long types, nvmlEventSet_t set) {
    if (types != 8ULL || set != &event_set) return 2;
    return 0;
}
int nvmlEventSetWait_v2(nvmlEventSet_t set, nvmlEventData_t *data, unsigned int ms) {
    if (set != &event_set) return 2;
    if (queued_gpu >= 0) {
        data->device = &devices[queued_gpu]; data->eventType = 8ULL;
        data->eventData = queued_xid; queued_gpu = -1; return 0;
    }
    usleep(ms * 1000); return 10;
}
int nvmlEventSetFree(nvmlEventSet_t set) { return set == &event_set ? 0 : 2; }
"""


@pytest.fixture(scope="module")
def stub_library(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here: the ctypes binding is not run against a stand-in")
    directory = tmp_path_factory.mktemp("stubnvml")
    (directory / "stub.c").write_text(STUB_SOURCE)
    library = directory / "libnvidia-ml.so.1"
    built = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(directory / "stub.c")],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    return library


def test_the_binding_marshals_every_call_through_ctypes(stub_library, monkeypatch):
    monkeypatch.delenv("STUB_NVML_HANG_AFTER", raising=False)
    monkeypatch.delenv("STUB_NVML_INIT", raising=False)
    binding = nvml.Nvml(str(stub_library))
    binding.init()
    try:
        assert binding.driver_version() == "550.54.15"
        assert binding.cuda_driver_version() == "12.4"
        assert binding.device_count() == 2
        first, second = binding.device_handle(0), binding.device_handle(1)
        assert first > 2**32 and second - first == 4, "64-bit handles pass through unharmed"
        assert binding.name(first) == "NVIDIA H100 80GB HBM3"
        assert binding.uuid(second) == "GPU-00000000-0000-0000-0000-000000000001"
        assert binding.pci_bus_id(second) == "00000000:3C:00.0"
        assert binding.minor_number(second) == 1
        assert binding.utilization(first) == Utilization(gpu=87, memory=41)
        assert binding.memory(first) == Memory(
            total=81559 * MIB, free=11009 * MIB, used=70000 * MIB + 123456, reserved=550 * MIB
        )
        assert binding.memory(second) == Memory(  # the v1 call where v2 is missing
            total=24564 * MIB, free=24000 * MIB, used=564 * MIB, reserved=None
        )
        assert binding.temperature(first) == 64
        assert binding.power_usage(first) == 312.512 and binding.power_usage(second) is None
        assert binding.total_energy(first) == 123456789012
        assert binding.clock(first, nvml.CLOCK_SM) == 1980
        assert binding.clock(second, nvml.CLOCK_MEM) == 405
        with pytest.raises(NvmlError) as raised:
            binding.clock(first, 7)
        assert raised.value.name == "INVALID_ARGUMENT" and "stub error" in str(raised.value)
        ecc = binding.total_ecc_errors(first, nvml.MEMORY_ERROR_UNCORRECTED, nvml.AGGREGATE_ECC)
        assert ecc == 5000000011
        assert binding.total_ecc_errors(second, 0, 0) is None
        assert binding.remapped_rows(first) == RemappedRows(2, 1, pending=True, failure=False)
        assert binding.remapped_rows(second) is None
        event_set = binding.event_set_create()
        assert binding.register_xid_events(event_set, second)
        assert binding.wait_event(event_set, 10) is None  # NVML_ERROR_TIMEOUT
        ctypes.CDLL(str(stub_library)).stub_queue_xid(1, ctypes.c_ulonglong(79))
        assert binding.wait_event(event_set, 10) == XidEvent(device=second, xid=79)
        binding.event_set_free(event_set)
    finally:
        binding.shutdown()
    assert ctypes.CDLL(str(stub_library)).stub_inits() == 0


def test_the_binding_tells_a_driver_not_loaded_from_a_missing_library(stub_library, monkeypatch):
    monkeypatch.setenv("STUB_NVML_INIT", str(nvml.DRIVER_NOT_LOADED))
    with pytest.raises(nvml.DriverNotLoaded) as raised:
        nvml.Nvml(str(stub_library)).init()
    assert "Driver Not Loaded" in str(raised.value)
    with pytest.raises(nvml.NvmlLibraryNotFound):
        nvml.Nvml(str(stub_library.parent / "absent.so")).init()


def test_from_the_archive_a_call_hung_inside_the_library_never_hangs_a_scrape(
    shipped, stub_library
):
    env = {
        "LD_LIBRARY_PATH": str(stub_library.parent),
        "STUB_NVML_HANG_AFTER": "2",  # the first collection reads both GPUs, the next hangs
        "PATH": "/usr/bin:/bin",
    }
    process, base = run_exporter(shipped, "--interval", "0.5", "--collect-timeout", "0.2", env=env)
    try:
        status, _, text, _ = scrape(base)
        assert status == 200 and "llmhost_gpu_up 1" in text.splitlines(), text
        assert values(text, "DCGM_FI_DEV_GPU_TEMP") == {"0": 64, "1": 41}
        assert values(text, "DCGM_FI_DEV_FB_USED") == {"0": 70000, "1": 564}
        assert values(text, "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL") == {"0": 5000000011}
        assert 'llmhost_gpu_info{driver_version="550.54.15",cuda_version="12.4"} 1' in text
        first = parse(text)[("llmhost_gpu_last_collect_timestamp_seconds", ())]
        slowest, deadline = 0.0, time.monotonic() + 10
        while "llmhost_gpu_collect_stale 1" not in text.splitlines():
            assert time.monotonic() < deadline, text
            status, _, text, seconds = scrape(base)
            slowest = max(slowest, seconds)
        assert slowest < 0.25, f"a scrape took {slowest:.2f} s while NVML hung"
        series = parse(text)
        assert series[("llmhost_gpu_last_collect_timestamp_seconds", ())] == first
        assert series[("llmhost_gpu_collect_timeouts_total", ())] == 1
        assert values(text, "DCGM_FI_DEV_GPU_TEMP") == {"0": 64, "1": 41}
    finally:
        code, err = stop_exporter(process)
    assert code == 0, err
    assert "abandoned" in err and err.count("still inside NVML: not starting another") <= 1
