"""The GPU exporter: NVML readings as Prometheus metrics, with dcgm-exporter's names.

Runs on every GPU host as ``python3 /usr/local/lib/llmhost/onhost.pyz gpu-exporter``
(its own unit), listening on dcgm-exporter's port, 9400, on all addresses by default:
the base role's firewall decides who reaches it (the Prometheus host), not the bind.

What it serves, on ``GET /metrics`` (text format 0.0.4):

- dcgm-exporter's series, with its names, types, units and help texts (its
  ``etc/default-counters.csv``) and its per-GPU labels ``gpu``, ``UUID``,
  ``pci_bus_id``, ``device``, ``modelName``, ``Hostname``, so its community Grafana
  dashboard (id 12239) works unchanged: utilisation in %, framebuffer in MiB, power
  in W, energy in mJ, clocks in MHz, temperature in C, ECC counts, remapped rows.
  The dashboard's tensor-core panel (``DCGM_FI_PROF_PIPE_TENSOR_ACTIVE``) needs DCGM's
  profiling module, which NVML does not expose: that one panel stays empty.
- ``llmhost_gpu_info{driver_version,cuda_version} 1``: dcgm-exporter puts the driver
  version as a label on every series instead, so a driver upgrade gives every series
  a new identity; join this one where it is wanted.
- ``llmhost_gpu_up``: 1 when NVML answers; else 0 with ``llmhost_gpu_up_reason{reason}``
  (no driver installed, driver not loaded, version mismatch...). The exporter keeps
  serving and retries NVML every interval: a host without a driver is a fact to report,
  never a crash loop.

Where it does better than dcgm-exporter, as its users ask:

- XID errors are counted, not a sticky gauge holding the last code:
  ``llmhost_gpu_xid_errors_total{...,xid}`` per code and
  ``llmhost_gpu_xid_last_seen_timestamp_seconds{...,xid}``, from NVML's event API on
  a thread of their own, so no XID is missed between two scrapes; and
  ``llmhost_gpu_xid_events_total`` per GPU, which exists (at 0) before the first XID so
  ``increase()`` sees that one too.
- NVML is read on the exporter's own schedule (``--interval``), each collection with a
  deadline (``--collect-timeout``), and a scrape only renders the cached result: a
  hung NVML call (a GPU falling off the bus does that) never hangs a scrape. An
  abandoned collection leaves the last good readings in place, marked
  ``llmhost_gpu_collect_stale 1``, with ``llmhost_gpu_last_collect_timestamp_seconds``
  saying how old they are; no second collection starts while one is still stuck.
- A field the GPU does not have (ECC on a consumer board, power on some) is left out,
  not exported as a sentinel value; a field that fails shows in
  ``llmhost_gpu_read_error{gpu,field,error}`` instead of a bogus reading.

Why the standard library, not pynvml + prometheus-client: everything that runs on a
host ships inside onhost.pyz and imports with the standard library alone (hosts have
python3, no egress and no pip; a test imports each module with ``python3 -I -S``).
The two packages would need a wheel mirror and a virtualenv on every GPU host: a
second artefact to pin, verify, upgrade and prove idempotent, for very little code.
pynvml is itself a ctypes wrapper over ``libnvidia-ml.so.1``, so ``llmhost.onhost.nvml``
calls the library the same way, with no compiled code and no loss; it binds only the
~20 stable, versioned nvml.h entry points used here, and tests/gpu checks the readings
against nvidia-smi on a real GPU. prometheus-client's usual collect-on-scrape model is
the behaviour this exporter exists to avoid, so it would have needed a custom cached
collector anyway; the text format it would write is a few dozen lines here, tested
line by line.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import math
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from llmhost.onhost import nvml
from llmhost.onhost.nvml import NvmlApi, NvmlError

DEFAULT_LISTEN = "0.0.0.0:9400"  # dcgm-exporter's port; the firewall limits who reaches it
DEFAULT_INTERVAL_S = 10.0
DEFAULT_COLLECT_TIMEOUT_S = 5.0
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MIB = 1024 * 1024
GAUGE, COUNTER = "gauge", "counter"

Labels = tuple[tuple[str, str], ...]
T = TypeVar("T")

# dcgm-exporter's series: name -> (type, help), as its default-counters.csv has them.
DCGM_METRICS: dict[str, tuple[str, str]] = {
    "DCGM_FI_DEV_SM_CLOCK": (GAUGE, "SM clock frequency (in MHz)."),
    "DCGM_FI_DEV_MEM_CLOCK": (GAUGE, "Memory clock frequency (in MHz)."),
    "DCGM_FI_DEV_GPU_TEMP": (GAUGE, "GPU temperature (in C)."),
    "DCGM_FI_DEV_POWER_USAGE": (GAUGE, "Power draw (in W)."),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": (
        COUNTER,
        "Total energy consumption since boot (in mJ).",
    ),
    "DCGM_FI_DEV_GPU_UTIL": (GAUGE, "GPU utilization (in %)."),
    "DCGM_FI_DEV_MEM_COPY_UTIL": (GAUGE, "Memory utilization (in %)."),
    "DCGM_FI_DEV_FB_FREE": (GAUGE, "Framebuffer memory free (in MiB)."),
    "DCGM_FI_DEV_FB_USED": (GAUGE, "Framebuffer memory used (in MiB)."),
    "DCGM_FI_DEV_FB_RESERVED": (GAUGE, "Framebuffer memory reserved (in MiB)."),
    "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": (COUNTER, "Total number of single-bit volatile ECC errors."),
    "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": (COUNTER, "Total number of double-bit volatile ECC errors."),
    "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL": (
        COUNTER,
        "Total number of single-bit persistent ECC errors.",
    ),
    "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL": (
        COUNTER,
        "Total number of double-bit persistent ECC errors.",
    ),
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": (
        COUNTER,
        "Number of remapped rows for uncorrectable errors",
    ),
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": (
        COUNTER,
        "Number of remapped rows for correctable errors",
    ),
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": (GAUGE, "Whether remapping of rows has failed"),
    "DCGM_FI_DEV_ROW_REMAP_PENDING": (GAUGE, "Whether remapping of rows is pending"),
}

# The exporter's own series.
OWN_METRICS: dict[str, tuple[str, str]] = {
    "llmhost_gpu_up": (
        GAUGE,
        "1 when NVML answers and the GPUs were read; 0 when not (see llmhost_gpu_up_reason).",
    ),
    "llmhost_gpu_up_reason": (GAUGE, "Why llmhost_gpu_up is 0: 1 for the current reason."),
    "llmhost_gpu_info": (
        GAUGE,
        "The NVIDIA driver version and the newest CUDA version it supports (always 1).",
    ),
    "llmhost_gpu_devices": (GAUGE, "GPUs NVML lists on this host."),
    "llmhost_gpu_read_error": (
        GAUGE,
        "1 for each field the last collection failed to read, with NVML's error name "
        "(fields a GPU does not support are left out, not errors).",
    ),
    "llmhost_gpu_last_collect_timestamp_seconds": (
        GAUGE,
        "Unix time the last complete collection finished.",
    ),
    "llmhost_gpu_collect_duration_seconds": (GAUGE, "How long the last complete collection took."),
    "llmhost_gpu_collect_stale": (
        GAUGE,
        "1 when the GPU series come from an older collection: the last one did not finish "
        "within --collect-timeout.",
    ),
    "llmhost_gpu_collect_timeouts_total": (
        COUNTER,
        "Collections abandoned because NVML did not answer within --collect-timeout.",
    ),
    "llmhost_gpu_xid_events_total": (
        COUNTER,
        "XID critical-error events on a GPU, any code, since the exporter started.",
    ),
    "llmhost_gpu_xid_errors_total": (
        COUNTER,
        "XID critical errors on a GPU per XID code, since the exporter started.",
    ),
    "llmhost_gpu_xid_last_seen_timestamp_seconds": (
        GAUGE,
        "Unix time an XID code was last seen on a GPU.",
    ),
}
METRICS = {**DCGM_METRICS, **OWN_METRICS}

# Errors that say NVML as a whole is unusable (reported as llmhost_gpu_up 0), as opposed
# to one GPU or one field failing.
SYSTEM_ERRORS = frozenset(
    {
        nvml.UNINITIALIZED,
        nvml.DRIVER_NOT_LOADED,
        nvml.LIBRARY_NOT_FOUND,
        nvml.LIB_RM_VERSION_MISMATCH,
    }
)


def reason_for(error: NvmlError) -> str:
    """What ``llmhost_gpu_up_reason`` says: the cause in words an operator acts on."""
    if isinstance(error, nvml.NvmlLibraryNotFound):
        return f"{nvml.LIBRARY} not found: no NVIDIA driver installed"
    if isinstance(error, nvml.DriverNotLoaded):
        return f"driver not loaded: {nvml.LIBRARY} is installed but the nvidia kernel module is not"
    if error.code == nvml.LIB_RM_VERSION_MISMATCH:
        return "driver/library version mismatch: reboot after the driver upgrade"
    if error.code == nvml.NO_PERMISSION:
        return "no permission to open the NVIDIA devices (/dev/nvidia*)"
    return f"NVML error {error.name} in {error.function}"


# -- one collection --------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """A GPU as its series name it."""

    index: int
    uuid: str
    model: str
    pci_bus_id: str = ""
    minor: int | None = None

    def labels(self, hostname: str) -> Labels:
        """dcgm-exporter's labels, in its order."""
        return (
            ("gpu", str(self.index)),
            ("UUID", self.uuid),
            ("pci_bus_id", self.pci_bus_id),
            ("device", "" if self.minor is None else f"nvidia{self.minor}"),
            ("modelName", self.model),
            ("Hostname", hostname),
        )


@dataclass(frozen=True)
class Reading:
    device: Device
    values: dict[str, float]  # DCGM name -> value; only the fields the GPU has


@dataclass(frozen=True)
class ReadError:
    gpu: int
    field: str
    error: str  # NVML's name for it (GPU_IS_LOST)


@dataclass(frozen=True)
class Snapshot:
    driver_version: str
    cuda_version: str | None
    readings: tuple[Reading, ...]
    errors: tuple[ReadError, ...]
    finished_at: float  # unix time
    duration_s: float


@dataclass(frozen=True)
class Down:
    reason: str


def read_device(api: NvmlApi, index: int, errors: list[ReadError]) -> Reading | None:
    """Every field of one GPU; a field that fails is left out and noted in ``errors``."""

    def attempt(field: str, call: Callable[..., T], *arguments: object) -> T | None:
        try:
            return call(*arguments)
        except NvmlError as error:
            if error.code in SYSTEM_ERRORS:
                raise
            errors.append(ReadError(index, field, error.name))
            return None

    handle = attempt("handle", api.device_handle, index)
    if handle is None:
        return None
    uuid, model = attempt("uuid", api.uuid, handle), attempt("name", api.name, handle)
    if uuid is None or model is None:
        return None
    bus_id = attempt("pci_bus_id", api.pci_bus_id, handle)
    minor = attempt("minor_number", api.minor_number, handle)
    device = Device(index=index, uuid=uuid, model=model, pci_bus_id=bus_id or "", minor=minor)
    values: dict[str, float] = {}

    def put(name: str, value: float | None) -> None:
        if value is not None:
            values[name] = value

    put("DCGM_FI_DEV_SM_CLOCK", attempt("sm_clock", api.clock, handle, nvml.CLOCK_SM))
    put("DCGM_FI_DEV_MEM_CLOCK", attempt("mem_clock", api.clock, handle, nvml.CLOCK_MEM))
    put("DCGM_FI_DEV_GPU_TEMP", attempt("temperature", api.temperature, handle))
    put("DCGM_FI_DEV_POWER_USAGE", attempt("power_usage", api.power_usage, handle))
    put("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", attempt("energy", api.total_energy, handle))
    rates = attempt("utilization", api.utilization, handle)
    if rates is not None:
        put("DCGM_FI_DEV_GPU_UTIL", rates.gpu)
        put("DCGM_FI_DEV_MEM_COPY_UTIL", rates.memory)
    memory = attempt("memory", api.memory, handle)
    if memory is not None:  # MiB, truncated, as DCGM and nvidia-smi write them
        put("DCGM_FI_DEV_FB_FREE", memory.free // MIB)
        put("DCGM_FI_DEV_FB_USED", memory.used // MIB)
        if memory.reserved is not None:
            put("DCGM_FI_DEV_FB_RESERVED", memory.reserved // MIB)
    for name, error_type, counter_type in (
        ("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", nvml.MEMORY_ERROR_CORRECTED, nvml.VOLATILE_ECC),
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", nvml.MEMORY_ERROR_UNCORRECTED, nvml.VOLATILE_ECC),
        ("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", nvml.MEMORY_ERROR_CORRECTED, nvml.AGGREGATE_ECC),
        ("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", nvml.MEMORY_ERROR_UNCORRECTED, nvml.AGGREGATE_ECC),
    ):
        field = name.removeprefix("DCGM_FI_DEV_").lower()
        put(name, attempt(field, api.total_ecc_errors, handle, error_type, counter_type))
    rows = attempt("remapped_rows", api.remapped_rows, handle)
    if rows is not None:
        put("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", rows.uncorrectable)
        put("DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS", rows.correctable)
        put("DCGM_FI_DEV_ROW_REMAP_FAILURE", int(rows.failure))
        put("DCGM_FI_DEV_ROW_REMAP_PENDING", int(rows.pending))
    return Reading(device, values)


# -- the text format ---------------------------------------------------------------------------


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


class Exposition:
    """Samples grouped per metric, written with one HELP and TYPE each, no series twice."""

    def __init__(self) -> None:
        self._families: dict[str, dict[Labels, float]] = {}

    def add(self, name: str, labels: Labels, value: float) -> None:
        if name not in METRICS:
            raise KeyError(f"{name} has no HELP/TYPE in gpuexporter.METRICS")
        self._families.setdefault(name, {})[labels] = value

    def text(self) -> str:
        lines = []
        for name, samples in self._families.items():
            kind, description = METRICS[name]
            lines += [f"# HELP {name} {escape_help(description)}", f"# TYPE {name} {kind}"]
            for labels, value in samples.items():
                inner = ",".join(f'{key}="{escape_label_value(text)}"' for key, text in labels)
                lines.append(f"{name}{{{inner}}} {format_value(value)}" if labels else
                             f"{name} {format_value(value)}")  # fmt: skip
        return "\n".join(lines) + "\n"


# -- the collector -----------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"gpu-exporter: {message}", file=sys.stderr, flush=True)


class Collector:
    """Reads NVML on its own schedule and keeps the result for scrapes to render.

    Each collection runs in a worker thread of its own, waited for at most
    ``collect_timeout_s``: one still running then is abandoned (a thread stuck in the
    driver cannot be killed, only left), the last good snapshot stays and is marked
    stale, and no new collection starts until the stuck one returns. The lock is never
    held across an NVML call, so :meth:`render` never waits for the driver.
    """

    def __init__(
        self,
        api: NvmlApi,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        collect_timeout_s: float = DEFAULT_COLLECT_TIMEOUT_S,
        hostname: str | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = _log,
    ) -> None:
        self.api = api
        self.interval_s = interval_s
        self.collect_timeout_s = collect_timeout_s
        self.hostname = socket.gethostname() if hostname is None else hostname
        self.clock = clock
        self.log = log
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._reason: str | None = "no collection has finished yet"
        self._stale = False
        self._timeouts = 0
        self._last_success: Snapshot | None = None
        self._devices: tuple[Device, ...] = ()
        self._generation = 0
        self._xid_events: dict[Labels, int] = {}
        self._xid: dict[tuple[Labels, int], tuple[int, float]] = {}  # -> (count, last seen)
        self._initialised = False  # NVML, as the worker threads see it (one at a time)
        self._worker: threading.Thread | None = None
        self._skipped = 0  # ticks passed while the abandoned collection is still stuck
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- collecting ------------------------------------------------------------------------

    def collect_once(self) -> bool:
        """One collection, waited for at most ``collect_timeout_s``; True if it finished."""
        stuck = self._worker
        if stuck is not None and stuck.is_alive():
            with self._lock:
                self._stale = True
                self._skipped += 1
                first = self._skipped == 1
            if first:
                self.log("the abandoned collection is still inside NVML: not starting another")
            return False
        self._skipped = 0
        box: list[Snapshot | Down] = []
        worker = threading.Thread(target=self._collect, args=(box,), name="gpu-collect")
        worker.daemon = True
        self._worker = worker
        worker.start()
        worker.join(self.collect_timeout_s)
        if worker.is_alive():
            with self._lock:
                self._stale = True
                self._timeouts += 1
                if self._snapshot is None:
                    self._reason = f"NVML did not answer within {self.collect_timeout_s:g} s"
                last = self._last_success
            since = f"the snapshot of {last.finished_at:.0f}" if last else "no snapshot"
            self.log(
                f"collection still inside NVML after {self.collect_timeout_s:g} s: "
                f"abandoned, serving {since} (marked stale)"
            )
            return False
        self._worker = None
        self._store(box[0] if box else Down("the collection failed: see the exporter's log"))
        return True

    def _collect(self, box: list[Snapshot | Down]) -> None:
        started = time.monotonic()
        try:
            if not self._initialised:
                self.api.init()
                self._initialised = True
            driver = self.api.driver_version()
            try:
                cuda = self.api.cuda_driver_version()
            except NvmlError as error:
                if error.code in SYSTEM_ERRORS:
                    raise
                cuda = None
            errors: list[ReadError] = []
            readings = [
                reading
                for index in range(self.api.device_count())
                if (reading := read_device(self.api, index, errors)) is not None
            ]
            box.append(
                Snapshot(
                    driver_version=driver,
                    cuda_version=cuda,
                    readings=tuple(readings),
                    errors=tuple(errors),
                    finished_at=self.clock(),
                    duration_s=time.monotonic() - started,
                )
            )
        except NvmlError as error:
            self._release_nvml()
            box.append(Down(reason_for(error)))
        except Exception as error:  # a bug here must not stop the exporter serving
            traceback.print_exc()
            box.append(Down(f"unexpected {type(error).__name__} reading NVML: {error}"))

    def _release_nvml(self) -> None:
        """Shut NVML down after a failure, so the next collection initialises it afresh."""
        if self._initialised:
            self._initialised = False
            with contextlib.suppress(NvmlError):
                self.api.shutdown()

    def _store(self, outcome: Snapshot | Down) -> None:
        with self._lock:
            previous = self._reason
            if isinstance(outcome, Snapshot):
                self._snapshot = self._last_success = outcome
                self._reason = None
                devices = tuple(reading.device for reading in outcome.readings)
            else:
                self._snapshot = None
                self._reason = outcome.reason
                devices = ()
            self._stale = False
            if devices != self._devices:
                self._devices = devices
                self._generation += 1
        if isinstance(outcome, Snapshot) and previous is not None:
            self.log(
                f"NVML up: {len(outcome.readings)} GPU(s), driver {outcome.driver_version}, "
                f"CUDA {outcome.cuda_version or 'unknown'}"
            )
        elif isinstance(outcome, Down) and outcome.reason != previous:
            self.log(f"NVML unavailable: {outcome.reason} (retrying every {self.interval_s:g} s)")

    def start(self, *, immediately: bool = True) -> None:
        """Collect every ``interval_s`` on a thread of its own (the first one now, or not)."""
        self._thread = threading.Thread(
            target=self._run, args=(immediately,), name="gpu-scheduler", daemon=True
        )
        self._thread.start()

    def _run(self, immediately: bool) -> None:
        due = time.monotonic() + (0 if immediately else self.interval_s)
        while not self._stop.wait(max(0.0, due - time.monotonic())):
            self.collect_once()
            due += self.interval_s
            if due <= time.monotonic():  # fell behind: skip the missed ticks
                due = time.monotonic() + self.interval_s

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        worker = self._worker
        if worker is None or not worker.is_alive():  # never shut NVML under a stuck call
            self._release_nvml()

    # -- XID events (from XidWatcher's thread) ----------------------------------------------

    def devices(self) -> tuple[int, tuple[Device, ...]]:
        """The GPUs of the last good collection, and a number that changes when they do."""
        with self._lock:
            return self._generation, self._devices

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def watching_xid(self, devices: Iterable[Device]) -> None:
        with self._lock:
            for device in devices:
                self._xid_events.setdefault(device.labels(self.hostname), 0)

    def record_xid(self, device: Device, xid: int) -> None:
        now = self.clock()
        labels = device.labels(self.hostname)
        with self._lock:
            count, _ = self._xid.get((labels, xid), (0, now))
            self._xid[(labels, xid)] = (count + 1, now)
            self._xid_events[labels] = self._xid_events.get(labels, 0) + 1

    # -- a scrape --------------------------------------------------------------------------

    def render(self) -> str:
        """The cached state as text format 0.0.4 (no NVML call: cheap and never blocks)."""
        now = self.clock()
        with self._lock:
            snapshot, reason, stale = self._snapshot, self._reason, self._stale
            last, timeouts = self._last_success, self._timeouts
            xid_events, xid = dict(self._xid_events), dict(self._xid)
        out = Exposition()
        out.add("llmhost_gpu_up", (), int(snapshot is not None and reason is None))
        if reason is not None:
            out.add("llmhost_gpu_up_reason", (("reason", reason),), 1)
        if snapshot is not None:
            versions = (
                ("driver_version", snapshot.driver_version),
                ("cuda_version", snapshot.cuda_version or ""),
            )
            out.add("llmhost_gpu_info", versions, 1)
            out.add("llmhost_gpu_devices", (), len(snapshot.readings))
            for name in DCGM_METRICS:
                for reading in snapshot.readings:
                    if name in reading.values:
                        out.add(name, reading.device.labels(self.hostname), reading.values[name])
            for error in snapshot.errors:
                failed = (("gpu", str(error.gpu)), ("field", error.field), ("error", error.error))
                out.add("llmhost_gpu_read_error", failed, 1)
            # A scheduler that stopped ticking makes the readings stale as surely as a timeout.
            limit = 2 * self.interval_s + self.collect_timeout_s
            stale = stale or now - snapshot.finished_at > limit
        if last is not None:
            out.add("llmhost_gpu_last_collect_timestamp_seconds", (), last.finished_at)
            out.add("llmhost_gpu_collect_duration_seconds", (), last.duration_s)
        out.add("llmhost_gpu_collect_stale", (), int(stale))
        out.add("llmhost_gpu_collect_timeouts_total", (), timeouts)
        for labels, count in xid_events.items():
            out.add("llmhost_gpu_xid_events_total", labels, count)
        for (labels, code), (count, seen) in sorted(xid.items(), key=lambda i: (i[0][0], i[0][1])):
            coded = (*labels, ("xid", str(code)))
            out.add("llmhost_gpu_xid_errors_total", coded, count)
            out.add("llmhost_gpu_xid_last_seen_timestamp_seconds", coded, seen)
        return out.text()


class XidWatcher:
    """Counts XID critical errors as NVML delivers them, on a thread of its own.

    Waits on an NVML event set for every GPU of the collector's last good collection
    (``wait_ms`` at a time, so it notices a stop or a changed set of GPUs), and starts
    over when the GPUs change or NVML fails. A GPU that cannot deliver events is left
    out (its ``llmhost_gpu_xid_events_total`` is absent, so that shows).
    """

    def __init__(
        self,
        api: NvmlApi,
        collector: Collector,
        *,
        wait_ms: int = 1000,
        retry_s: float | None = None,
        log: Callable[[str], None] = _log,
    ) -> None:
        self.api = api
        self.collector = collector
        self.wait_ms = wait_ms
        self.retry_s = collector.interval_s if retry_s is None else retry_s
        self.log = log
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_problem: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpu-xid", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _problem(self, text: str) -> None:
        if text != self._last_problem:
            self._last_problem = text
            self.log(text)

    def _run(self) -> None:
        while not self._stop.is_set():
            generation, devices = self.collector.devices()
            if not devices:
                self._stop.wait(self.retry_s)
                continue
            try:
                self._watch(generation, devices)
            except NvmlError as error:
                self._problem(f"XID events not watched: {error} (retrying)")
                self._stop.wait(self.retry_s)

    def _unchanged(self, generation: int) -> bool:
        return not self._stop.is_set() and self.collector.generation == generation

    def _watch(self, generation: int, devices: Sequence[Device]) -> None:
        self.api.init()
        try:
            event_set = self.api.event_set_create()
            try:
                watched = self._register(event_set, devices)
                self.collector.watching_xid(watched.values())
                if not watched:
                    self._problem("no GPU here delivers XID events: they are not counted")
                    while self._unchanged(generation):
                        self._stop.wait(self.retry_s)
                    return
                self._last_problem = None
                while self._unchanged(generation):
                    event = self.api.wait_event(event_set, self.wait_ms)
                    if event is not None and event.device in watched:
                        self.collector.record_xid(watched[event.device], event.xid)
            finally:
                with contextlib.suppress(NvmlError):
                    self.api.event_set_free(event_set)
        finally:
            with contextlib.suppress(NvmlError):
                self.api.shutdown()

    def _register(self, event_set: int, devices: Sequence[Device]) -> dict[int, Device]:
        watched: dict[int, Device] = {}
        for device in devices:
            try:
                handle = self.api.device_handle(device.index)
                if self.api.uuid(handle) != device.uuid:  # renumbered since the collection
                    continue
                if self.api.register_xid_events(event_set, handle):
                    watched[handle] = device
            except NvmlError as error:
                if error.code in SYSTEM_ERRORS:
                    raise
                self._problem(f"XID events not watched on GPU {device.index}: {error}")
        return watched


# -- serving -----------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "llmhost-gpu-exporter"
    timeout = 30  # a client that never finishes its request does not keep a thread for ever

    def do_GET(self) -> None:
        server = self.server
        assert isinstance(server, MetricsServer)
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._answer(200, CONTENT_TYPE, server.collector.render().encode("utf-8"))
        elif path == "/":
            self._answer(200, "text/plain; charset=utf-8", b"llmhost GPU exporter: /metrics\n")
        else:
            self._answer(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

    def _answer(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a scrape every few seconds is not news for the journal."""


class MetricsServer(http.server.ThreadingHTTPServer):
    """``GET /metrics`` from the collector's cache; one thread per connection."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], collector: Collector) -> None:
        self.collector = collector
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::]:9400`` for IPv6) -> (host, port)."""
    host, colon, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not colon or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (like {DEFAULT_LISTEN})")
    return host, int(port)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onhost.pyz gpu-exporter",
        description="Serve NVML GPU metrics, with dcgm-exporter's names, on GET /metrics.",
    )
    parser.add_argument(
        "--listen",
        type=parse_listen,
        default=DEFAULT_LISTEN,
        help=f"HOST:PORT to serve on (default {DEFAULT_LISTEN}: the firewall limits who "
        "reaches it)",
    )
    parser.add_argument(
        "--interval",
        type=_seconds,
        default=DEFAULT_INTERVAL_S,
        help=f"seconds between collections (default {DEFAULT_INTERVAL_S:g})",
    )
    parser.add_argument(
        "--collect-timeout",
        type=_seconds,
        default=DEFAULT_COLLECT_TIMEOUT_S,
        help="seconds a collection may take before it is abandoned and the last one served, "
        f"marked stale (default {DEFAULT_COLLECT_TIMEOUT_S:g}; less than --interval)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until SIGTERM; exit 0 then, 2 when it cannot listen or is given bad options.

    A missing driver is not an exit: it is ``llmhost_gpu_up 0`` and a retry every interval.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.collect_timeout >= args.interval:
        parser.error("--collect-timeout must be less than --interval")
    host, port = args.listen
    api = nvml.Nvml()
    collector = Collector(api, interval_s=args.interval, collect_timeout_s=args.collect_timeout)
    try:
        server = MetricsServer((host, port), collector)
    except OSError as error:
        _log(f"cannot listen on {host}:{port}: {error}")
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    collector.collect_once()  # the first scrape already sees GPUs (connections wait meanwhile)
    collector.start(immediately=False)
    watcher = XidWatcher(api, collector)
    watcher.start()
    serving = threading.Thread(target=server.serve_forever, args=(0.5,), name="gpu-http")
    serving.daemon = True
    serving.start()
    _log(f"serving http://{host}:{server.server_address[1]}/metrics every {args.interval:g} s")
    while not stop.is_set():
        stop.wait(1.0)
    server.shutdown()
    server.server_close()
    watcher.stop()
    collector.stop()
    _log("stopped")
    return 0
