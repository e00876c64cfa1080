"""The few NVML calls llmhost's GPU tools need, through ``ctypes`` (standard library only).

NVML is the C library the NVIDIA driver installs (``libnvidia-ml.so.1``); nvidia-smi,
DCGM and pynvml all sit on it. This module binds only what ``gpuexporter`` and
``gpucheck`` read, with the signatures of NVIDIA's ``nvml.h`` (nvidia-ml-py's ``pynvml``
is the model for the structures), and says what NVML said in Python terms:

- a field the device does not have (``NVML_ERROR_NOT_SUPPORTED``) reads as ``None``,
  so the exporter leaves the series out instead of exporting a sentinel;
- every other failure raises :class:`NvmlError` with NVML's name for the code, and the
  two "no driver" cases are their own types: :class:`NvmlLibraryNotFound` (the
  library is not installed at all) and :class:`DriverNotLoaded` (it is, but the
  kernel module is not loaded), because an operator fixes them differently.

Nothing is loaded at import: the library is opened by :meth:`Nvml.init`, so importing
this module on a host without a driver (or in a test) costs nothing and cannot fail.
Device and event-set handles are plain ``int`` pointer values, so a fake can stand in
for :class:`Nvml` (see :class:`NvmlApi`). NVML is thread-safe, and ctypes releases the
GIL for each foreign call, so a call that hangs in the driver blocks only its thread.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

LIBRARY = "libnvidia-ml.so.1"

# nvmlReturn_t, as nvml.h names them (without the NVML_ERROR_ prefix).
SUCCESS = 0
ERROR_NAMES = {
    1: "UNINITIALIZED",
    2: "INVALID_ARGUMENT",
    3: "NOT_SUPPORTED",
    4: "NO_PERMISSION",
    5: "ALREADY_INITIALIZED",
    6: "NOT_FOUND",
    7: "INSUFFICIENT_SIZE",
    8: "INSUFFICIENT_POWER",
    9: "DRIVER_NOT_LOADED",
    10: "TIMEOUT",
    11: "IRQ_ISSUE",
    12: "LIBRARY_NOT_FOUND",
    13: "FUNCTION_NOT_FOUND",
    14: "CORRUPTED_INFOROM",
    15: "GPU_IS_LOST",
    16: "RESET_REQUIRED",
    17: "OPERATING_SYSTEM",
    18: "LIB_RM_VERSION_MISMATCH",
    19: "IN_USE",
    20: "MEMORY",
    21: "NO_DATA",
    22: "VGPU_ECC_NOT_SUPPORTED",
    23: "INSUFFICIENT_RESOURCES",
    24: "FREQ_NOT_SUPPORTED",
    25: "ARGUMENT_VERSION_MISMATCH",
    26: "DEPRECATED",
    27: "NOT_READY",
    28: "GPU_NOT_FOUND",
    29: "INVALID_STATE",
    30: "RESET_TYPE_NOT_SUPPORTED",
    999: "UNKNOWN",
}
NOT_SUPPORTED = 3
NO_PERMISSION = 4
DRIVER_NOT_LOADED = 9
TIMEOUT = 10
LIBRARY_NOT_FOUND = 12
FUNCTION_NOT_FOUND = 13
GPU_IS_LOST = 15
LIB_RM_VERSION_MISMATCH = 18
ARGUMENT_VERSION_MISMATCH = 25
UNINITIALIZED = 1

# Enum values from nvml.h.
TEMPERATURE_GPU = 0  # nvmlTemperatureSensors_t
CLOCK_SM = 1  # nvmlClockType_t
CLOCK_MEM = 2
MEMORY_ERROR_CORRECTED = 0  # nvmlMemoryErrorType_t: DCGM's "SBE"
MEMORY_ERROR_UNCORRECTED = 1  # DCGM's "DBE"
VOLATILE_ECC = 0  # nvmlEccCounterType_t: since the last driver load
AGGREGATE_ECC = 1  # over the board's life (kept in the inforom)
EVENT_TYPE_XID_CRITICAL_ERROR = 0x0000000000000008

_NAME_BUFFER = 96  # NVML_DEVICE_NAME_V2_BUFFER_SIZE
_UUID_BUFFER = 96  # NVML_DEVICE_UUID_V2_BUFFER_SIZE
_DRIVER_VERSION_BUFFER = 80  # NVML_SYSTEM_DRIVER_VERSION_BUFFER_SIZE


class NvmlError(Exception):
    """An NVML call failed; ``name`` is nvml.h's name for ``code`` (``GPU_IS_LOST``)."""

    def __init__(self, code: int, function: str, detail: str | None = None) -> None:
        self.code = code
        self.name = ERROR_NAMES.get(code, f"UNKNOWN_{code}")
        self.function = function
        self.detail = detail
        text = f"{function}: NVML_ERROR_{self.name}"
        super().__init__(f"{text} ({detail})" if detail else text)


class NvmlLibraryNotFound(NvmlError):
    """``libnvidia-ml.so.1`` cannot be opened: no NVIDIA driver is installed."""


class DriverNotLoaded(NvmlError):
    """The library is installed but the nvidia kernel module is not loaded."""


class FunctionNotFound(NvmlError):
    """The installed driver's NVML predates the function (an older driver branch)."""


_ERROR_TYPES: dict[int, type[NvmlError]] = {
    LIBRARY_NOT_FOUND: NvmlLibraryNotFound,
    DRIVER_NOT_LOADED: DriverNotLoaded,
    FUNCTION_NOT_FOUND: FunctionNotFound,
}


def error_for(code: int, function: str, detail: str | None = None) -> NvmlError:
    """The typed error for an NVML return code."""
    return _ERROR_TYPES.get(code, NvmlError)(code, function, detail)


@dataclass(frozen=True)
class Utilization:
    gpu: int  # percent of the last sample period a kernel ran
    memory: int  # percent of it device memory was read or written


@dataclass(frozen=True)
class Memory:
    """Framebuffer memory in bytes; ``reserved`` is None where the driver lacks the v2 call."""

    total: int
    free: int
    used: int
    reserved: int | None


@dataclass(frozen=True)
class RemappedRows:
    correctable: int
    uncorrectable: int
    pending: bool  # a remap waits for a GPU reset
    failure: bool  # a remap failed: the bank has no spare row left


@dataclass(frozen=True)
class EccMode:
    current: bool  # ECC is on now
    pending: bool  # ECC will be on after the next GPU reset (a change waits for one)


@dataclass(frozen=True)
class XidEvent:
    device: int  # the device handle, as device_handle() returned it
    xid: int


class NvmlApi(Protocol):
    """What the exporter needs from NVML: :class:`Nvml`, or a fake in tests.

    Readings return None when the device does not support them and raise
    :class:`NvmlError` for anything else.
    """

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str: ...
    def cuda_driver_version(self) -> str | None: ...
    def device_count(self) -> int: ...
    def device_handle(self, index: int) -> int: ...
    def name(self, device: int) -> str: ...
    def uuid(self, device: int) -> str: ...
    def pci_bus_id(self, device: int) -> str | None: ...
    def minor_number(self, device: int) -> int | None: ...
    def utilization(self, device: int) -> Utilization | None: ...
    def memory(self, device: int) -> Memory | None: ...
    def temperature(self, device: int) -> int | None: ...
    def power_usage(self, device: int) -> float | None: ...
    def total_energy(self, device: int) -> int | None: ...
    def clock(self, device: int, clock_type: int) -> int | None: ...
    def total_ecc_errors(self, device: int, error_type: int, counter_type: int) -> int | None: ...
    def remapped_rows(self, device: int) -> RemappedRows | None: ...
    def event_set_create(self) -> int: ...
    def register_xid_events(self, event_set: int, device: int) -> bool: ...
    def wait_event(self, event_set: int, timeout_ms: int) -> XidEvent | None: ...
    def event_set_free(self, event_set: int) -> None: ...


# -- the structures nvml.h defines, as far as these calls use them ----------------------------


class _PciInfo(ctypes.Structure):  # nvmlPciInfo_t
    _fields_ = (
        ("busIdLegacy", ctypes.c_char * 16),
        ("domain", ctypes.c_uint),
        ("bus", ctypes.c_uint),
        ("device", ctypes.c_uint),
        ("pciDeviceId", ctypes.c_uint),
        ("pciSubSystemId", ctypes.c_uint),
        ("busId", ctypes.c_char * 32),
    )


class _Utilization(ctypes.Structure):  # nvmlUtilization_t
    _fields_ = (("gpu", ctypes.c_uint), ("memory", ctypes.c_uint))


class _Memory(ctypes.Structure):  # nvmlMemory_t
    _fields_ = (
        ("total", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    )


class _MemoryV2(ctypes.Structure):  # nvmlMemory_v2_t: "used" no longer counts "reserved"
    _fields_ = (
        ("version", ctypes.c_uint),
        ("total", ctypes.c_ulonglong),
        ("reserved", ctypes.c_ulonglong),
        ("free", ctypes.c_ulonglong),
        ("used", ctypes.c_ulonglong),
    )


MEMORY_V2_VERSION = ctypes.sizeof(_MemoryV2) | (2 << 24)  # nvmlMemory_v2 (0x02000028)


class _EventData(ctypes.Structure):  # nvmlEventData_t
    _fields_ = (
        ("device", ctypes.c_void_p),
        ("eventType", ctypes.c_ulonglong),
        ("eventData", ctypes.c_ulonglong),  # the XID, for nvmlEventTypeXidCriticalError
        ("gpuInstanceId", ctypes.c_uint),
        ("computeInstanceId", ctypes.c_uint),
    )


_uint_p = ctypes.POINTER(ctypes.c_uint)
_ull_p = ctypes.POINTER(ctypes.c_ulonglong)
_handle = ctypes.c_void_p
# Every function bound, with its arguments (each returns nvmlReturn_t, a C int).
SIGNATURES: dict[str, Sequence[Any]] = {
    "nvmlInit_v2": (),
    "nvmlShutdown": (),
    "nvmlSystemGetDriverVersion": (ctypes.c_char_p, ctypes.c_uint),
    "nvmlSystemGetCudaDriverVersion_v2": (ctypes.POINTER(ctypes.c_int),),
    "nvmlSystemGetCudaDriverVersion": (ctypes.POINTER(ctypes.c_int),),
    "nvmlDeviceGetCount_v2": (_uint_p,),
    "nvmlDeviceGetHandleByIndex_v2": (ctypes.c_uint, ctypes.POINTER(_handle)),
    "nvmlDeviceGetName": (_handle, ctypes.c_char_p, ctypes.c_uint),
    "nvmlDeviceGetUUID": (_handle, ctypes.c_char_p, ctypes.c_uint),
    "nvmlDeviceGetPciInfo_v3": (_handle, ctypes.POINTER(_PciInfo)),
    "nvmlDeviceGetMinorNumber": (_handle, _uint_p),
    "nvmlDeviceGetUtilizationRates": (_handle, ctypes.POINTER(_Utilization)),
    "nvmlDeviceGetMemoryInfo_v2": (_handle, ctypes.POINTER(_MemoryV2)),
    "nvmlDeviceGetMemoryInfo": (_handle, ctypes.POINTER(_Memory)),
    "nvmlDeviceGetTemperature": (_handle, ctypes.c_int, _uint_p),
    "nvmlDeviceGetPowerUsage": (_handle, _uint_p),
    "nvmlDeviceGetTotalEnergyConsumption": (_handle, _ull_p),
    "nvmlDeviceGetClockInfo": (_handle, ctypes.c_int, _uint_p),
    "nvmlDeviceGetTotalEccErrors": (_handle, ctypes.c_int, ctypes.c_int, _ull_p),
    "nvmlDeviceGetRemappedRows": (_handle, _uint_p, _uint_p, _uint_p, _uint_p),
    "nvmlDeviceGetEccMode": (_handle, _uint_p, _uint_p),
    "nvmlEventSetCreate": (ctypes.POINTER(_handle),),
    "nvmlDeviceRegisterEvents": (_handle, ctypes.c_ulonglong, _handle),
    "nvmlEventSetWait_v2": (_handle, ctypes.POINTER(_EventData), ctypes.c_uint),
    "nvmlEventSetWait": (_handle, ctypes.POINTER(_EventData), ctypes.c_uint),
    "nvmlEventSetFree": (_handle,),
}


def _text(buffer: ctypes.Array[ctypes.c_char]) -> str:
    return buffer.value.decode("utf-8", errors="replace")


class Nvml:
    """NVML through ctypes: :class:`NvmlApi` for the real library.

    ``init`` may be called again after a failure (a driver installed or loaded later);
    NVML counts its own initialisations, so each successful ``init`` wants one
    ``shutdown``.
    """

    def __init__(self, library: str = LIBRARY) -> None:
        self.library = library
        self._lib: ctypes.CDLL | None = None
        self._functions: dict[str, Callable[..., int]] = {}
        self._lock = threading.Lock()

    # -- plumbing --------------------------------------------------------------------------

    def _function(self, name: str) -> Callable[..., int]:
        with self._lock:
            if name in self._functions:
                return self._functions[name]
            if self._lib is None:
                try:
                    self._lib = ctypes.CDLL(self.library)
                except OSError as error:
                    raise NvmlLibraryNotFound(LIBRARY_NOT_FOUND, name, str(error)) from None
            try:
                function = getattr(self._lib, name)
            except AttributeError:
                raise FunctionNotFound(FUNCTION_NOT_FOUND, name, self.library) from None
            function.argtypes = SIGNATURES[name]
            function.restype = ctypes.c_int
            self._functions[name] = function
            return function

    def _describe(self, code: int) -> str | None:
        """NVML's own sentence for a code (nvmlErrorString), when the library is open."""
        if self._lib is None:
            return None
        try:
            describe = self._lib.nvmlErrorString
        except AttributeError:
            return None
        describe.argtypes = (ctypes.c_int,)
        describe.restype = ctypes.c_char_p
        text = describe(code)
        return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else None

    def _call(self, name: str, *arguments: object) -> None:
        code = self._function(name)(*arguments)
        if code != SUCCESS:
            raise error_for(code, name, self._describe(code))

    def _supported(self, name: str, *arguments: object) -> bool:
        """The call succeeded (True) or NVML says the device lacks it (False)."""
        try:
            self._call(name, *arguments)
        except NvmlError as error:
            if error.code == NOT_SUPPORTED:
                return False
            raise
        return True

    # -- the library -----------------------------------------------------------------------

    def init(self) -> None:
        self._call("nvmlInit_v2")

    def shutdown(self) -> None:
        self._call("nvmlShutdown")

    def driver_version(self) -> str:
        buffer = ctypes.create_string_buffer(_DRIVER_VERSION_BUFFER)
        self._call("nvmlSystemGetDriverVersion", buffer, _DRIVER_VERSION_BUFFER)
        return _text(buffer)

    def cuda_driver_version(self) -> str | None:
        """The newest CUDA the driver supports, as ``major.minor`` (12040 -> ``12.4``)."""
        version = ctypes.c_int()
        try:
            found = self._supported("nvmlSystemGetCudaDriverVersion_v2", ctypes.byref(version))
        except FunctionNotFound:
            found = self._supported("nvmlSystemGetCudaDriverVersion", ctypes.byref(version))
        if not found:
            return None
        return f"{version.value // 1000}.{version.value % 1000 // 10}"

    def device_count(self) -> int:
        count = ctypes.c_uint()
        self._call("nvmlDeviceGetCount_v2", ctypes.byref(count))
        return count.value

    def device_handle(self, index: int) -> int:
        handle = _handle()
        self._call("nvmlDeviceGetHandleByIndex_v2", index, ctypes.byref(handle))
        if handle.value is None:
            raise error_for(999, "nvmlDeviceGetHandleByIndex_v2", "a NULL handle")
        return handle.value

    # -- one device ------------------------------------------------------------------------

    def name(self, device: int) -> str:
        buffer = ctypes.create_string_buffer(_NAME_BUFFER)
        self._call("nvmlDeviceGetName", device, buffer, _NAME_BUFFER)
        return _text(buffer)

    def uuid(self, device: int) -> str:
        buffer = ctypes.create_string_buffer(_UUID_BUFFER)
        self._call("nvmlDeviceGetUUID", device, buffer, _UUID_BUFFER)
        return _text(buffer)

    def pci_bus_id(self, device: int) -> str | None:
        """``00000000:3B:00.0``, as dcgm-exporter's ``pci_bus_id`` label writes it."""
        info = _PciInfo()
        if not self._supported("nvmlDeviceGetPciInfo_v3", device, ctypes.byref(info)):
            return None
        return bytes(info.busId).split(b"\0", 1)[0].decode("ascii", errors="replace")

    def minor_number(self, device: int) -> int | None:
        """N in /dev/nvidiaN."""
        minor = ctypes.c_uint()
        if not self._supported("nvmlDeviceGetMinorNumber", device, ctypes.byref(minor)):
            return None
        return minor.value

    def utilization(self, device: int) -> Utilization | None:
        rates = _Utilization()
        if not self._supported("nvmlDeviceGetUtilizationRates", device, ctypes.byref(rates)):
            return None
        return Utilization(gpu=rates.gpu, memory=rates.memory)

    def memory(self, device: int) -> Memory | None:
        """The v2 call where the driver has it: its "used" matches nvidia-smi's."""
        info = _MemoryV2(version=MEMORY_V2_VERSION)
        try:
            if not self._supported("nvmlDeviceGetMemoryInfo_v2", device, ctypes.byref(info)):
                return None
            return Memory(total=info.total, free=info.free, used=info.used, reserved=info.reserved)
        except NvmlError as error:
            if error.code not in (FUNCTION_NOT_FOUND, ARGUMENT_VERSION_MISMATCH):
                raise
        old = _Memory()
        if not self._supported("nvmlDeviceGetMemoryInfo", device, ctypes.byref(old)):
            return None
        return Memory(total=old.total, free=old.free, used=old.used, reserved=None)

    def temperature(self, device: int) -> int | None:
        """The GPU die's temperature in degrees C."""
        value = ctypes.c_uint()
        arguments = (device, TEMPERATURE_GPU, ctypes.byref(value))
        return value.value if self._supported("nvmlDeviceGetTemperature", *arguments) else None

    def power_usage(self, device: int) -> float | None:
        """Board power draw in W (NVML reports mW)."""
        value = ctypes.c_uint()
        if not self._supported("nvmlDeviceGetPowerUsage", device, ctypes.byref(value)):
            return None
        return value.value / 1000

    def total_energy(self, device: int) -> int | None:
        """Energy since the driver was loaded, in mJ."""
        value = ctypes.c_ulonglong()
        arguments = (device, ctypes.byref(value))
        found = self._supported("nvmlDeviceGetTotalEnergyConsumption", *arguments)
        return value.value if found else None

    def clock(self, device: int, clock_type: int) -> int | None:
        """The current clock in MHz (``CLOCK_SM``, ``CLOCK_MEM``)."""
        value = ctypes.c_uint()
        arguments = (device, clock_type, ctypes.byref(value))
        return value.value if self._supported("nvmlDeviceGetClockInfo", *arguments) else None

    def total_ecc_errors(self, device: int, error_type: int, counter_type: int) -> int | None:
        """ECC error count (``MEMORY_ERROR_*`` x ``VOLATILE_ECC``/``AGGREGATE_ECC``)."""
        value = ctypes.c_ulonglong()
        arguments = (device, error_type, counter_type, ctypes.byref(value))
        return value.value if self._supported("nvmlDeviceGetTotalEccErrors", *arguments) else None

    def remapped_rows(self, device: int) -> RemappedRows | None:
        """Row remapping (Ampere and newer HBM GPUs); None on boards without it."""
        correctable, uncorrectable = ctypes.c_uint(), ctypes.c_uint()
        pending, failure = ctypes.c_uint(), ctypes.c_uint()
        outputs = (correctable, uncorrectable, pending, failure)
        arguments = (device, *(ctypes.byref(v) for v in outputs))
        if not self._supported("nvmlDeviceGetRemappedRows", *arguments):
            return None
        return RemappedRows(
            correctable=correctable.value,
            uncorrectable=uncorrectable.value,
            pending=bool(pending.value),
            failure=bool(failure.value),
        )

    def ecc_mode(self, device: int) -> EccMode | None:
        """ECC now and after the next reset; None on boards without ECC (GeForce)."""
        current, pending = ctypes.c_uint(), ctypes.c_uint()
        arguments = (device, ctypes.byref(current), ctypes.byref(pending))
        if not self._supported("nvmlDeviceGetEccMode", *arguments):
            return None
        return EccMode(current=bool(current.value), pending=bool(pending.value))

    # -- XID events ------------------------------------------------------------------------

    def event_set_create(self) -> int:
        event_set = _handle()
        self._call("nvmlEventSetCreate", ctypes.byref(event_set))
        if event_set.value is None:
            raise error_for(999, "nvmlEventSetCreate", "a NULL event set")
        return event_set.value

    def register_xid_events(self, event_set: int, device: int) -> bool:
        """Deliver the device's XID critical errors to the set; False where not supported."""
        arguments = (device, EVENT_TYPE_XID_CRITICAL_ERROR, event_set)
        return self._supported("nvmlDeviceRegisterEvents", *arguments)

    def wait_event(self, event_set: int, timeout_ms: int) -> XidEvent | None:
        """The next event, or None when none arrived within ``timeout_ms``."""
        data = _EventData()
        try:
            try:
                self._call("nvmlEventSetWait_v2", event_set, ctypes.byref(data), timeout_ms)
            except FunctionNotFound:
                self._call("nvmlEventSetWait", event_set, ctypes.byref(data), timeout_ms)
        except NvmlError as error:
            if error.code == TIMEOUT:
                return None
            raise
        return XidEvent(device=data.device or 0, xid=int(data.eventData))

    def event_set_free(self, event_set: int) -> None:
        self._call("nvmlEventSetFree", event_set)
