"""``onhost.pyz gpu-check``: does the running driver match what the host's class pins?

The nvidia role runs it after it installed a driver or rebooted into one:

    python3 /usr/local/lib/llmhost/onhost.pyz gpu-check --driver 550.127.08 --cuda 12.4 --gpus 8

NVML must report that driver release (the loaded kernel module's), the CUDA version the
driver provides (major.minor, as the class pins it) and the class's number of GPUs. Each
GPU's ECC mode is reported, not judged: consumer boards have none. It prints JSON
(``{"ok": bool, "failures": [...], "driver", "cuda", "gpus": [...]}``), each failure also
on stderr, and exits 0 when all match, 1 when something does not, 2 when it cannot check
(no NVML library: the driver is not installed).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, Protocol

from llmhost.onhost import nvml

EXIT_OK, EXIT_FAILED, EXIT_CANNOT_RUN = 0, 1, 2
RUNBOOK = "docs/runbooks/nvidia.md"


class CheckApi(Protocol):
    """What the check reads from NVML: :class:`nvml.Nvml`, or a fake in tests."""

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str: ...
    def cuda_driver_version(self) -> str | None: ...
    def device_count(self) -> int: ...
    def device_handle(self, index: int) -> int: ...
    def name(self, device: int) -> str: ...
    def ecc_mode(self, device: int) -> nvml.EccMode | None: ...


def init_failure(error: nvml.NvmlError) -> str:
    """What an NVML start-up error means for the operator."""
    if isinstance(error, nvml.DriverNotLoaded):
        return (
            f"the nvidia kernel module is not loaded ({error}): reboot into the installed "
            f"driver, or see `modprobe nvidia` and dmesg ({RUNBOOK})"
        )
    if error.code == nvml.LIB_RM_VERSION_MISMATCH:
        return (
            f"driver/library version mismatch ({error}): the installed driver is not the "
            f"loaded module; reboot the host to load it ({RUNBOOK})"
        )
    return f"NVML does not start: {error} ({RUNBOOK})"


def ecc_text(mode: nvml.EccMode | None) -> str:
    if mode is None:
        return "not supported"
    text = "enabled" if mode.current else "disabled"
    if mode.pending != mode.current:
        text += f" ({'enabled' if mode.pending else 'disabled'} after the next GPU reset)"
    return text


def major_minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def read_gpus(api: CheckApi, count: int) -> list[dict[str, Any]]:
    gpus = []
    for index in range(count):
        device = api.device_handle(index)
        ecc = ecc_text(api.ecc_mode(device))
        gpus.append({"index": index, "name": api.name(device), "ecc": ecc})
    return gpus


def check(api: CheckApi, driver: str, cuda: str, gpus: int) -> dict[str, Any]:
    """The verdict, with what NVML reported; raises NvmlLibraryNotFound when there is no driver."""
    try:
        api.init()
    except nvml.NvmlLibraryNotFound:
        raise
    except nvml.NvmlError as error:
        return {"ok": False, "failures": [init_failure(error)], "driver": None, "cuda": None,
                "gpus": []}  # fmt: skip
    try:
        found_driver, found_cuda = api.driver_version(), api.cuda_driver_version()
        count = api.device_count()
        devices = read_gpus(api, count)
    except nvml.NvmlError as error:
        return {"ok": False, "failures": [f"NVML failed while reading: {error} ({RUNBOOK})"],
                "driver": None, "cuda": None, "gpus": []}  # fmt: skip
    finally:
        api.shutdown()
    failures = []
    if found_driver != driver:
        failures.append(
            f"driver {found_driver} is running, not {driver}: reboot into the installed "
            f"driver, or check nvidia_driver_version ({RUNBOOK})"
        )
    if found_cuda is None or major_minor(found_cuda) != major_minor(cuda):
        failures.append(
            f"the driver provides CUDA {found_cuda or 'unknown'}, the class pins {cuda}: "
            "set the class's cuda_version to what its driver branch provides "
            "(inventories/hardware.toml)"
        )
    if count != gpus:
        failures.append(
            f"the driver sees {count} GPU(s), the class has {gpus}: a GPU is missing "
            f"(dmesg, nvidia-smi -q) or the host is in the wrong class ({RUNBOOK})"
        )
    return {"ok": not failures, "failures": failures, "driver": found_driver,
            "cuda": found_cuda, "gpus": devices}  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onhost.pyz gpu-check",
        description="Check that NVML reports the pinned driver, CUDA version and GPU count.",
    )
    parser.add_argument("--driver", required=True, help="driver release, e.g. 550.127.08")
    parser.add_argument("--cuda", required=True, help="CUDA version the class pins, e.g. 12.4")
    parser.add_argument("--gpus", required=True, type=int, help="GPUs the class has")
    return parser


def main(argv: Sequence[str] | None = None, api: CheckApi | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        verdict = check(api or nvml.Nvml(), args.driver, args.cuda, args.gpus)
    except nvml.NvmlLibraryNotFound as error:
        problem = f"no NVIDIA driver is installed ({error})"
        print(json.dumps({"ok": False, "failures": [problem]}))
        print(f"gpu-check: {problem}", file=sys.stderr)
        return EXIT_CANNOT_RUN
    print(json.dumps(verdict, sort_keys=True))
    for failure in verdict["failures"]:
        print(f"gpu-check: {failure}", file=sys.stderr)
    return EXIT_OK if verdict["ok"] else EXIT_FAILED
