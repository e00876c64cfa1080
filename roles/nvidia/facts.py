"""Facts the nvidia role decides on: GPUs on the bus, Secure Boot, the running driver, NVML.

The repository key's fact is roles._common.facts.KeyringFingerprints."""

from __future__ import annotations

import json
import shlex
from typing import Any, TypedDict

from pyinfra.api import FactBase

from roles.nvidia.defaults import LOADED_MODULE_VERSION

NVIDIA_VENDOR = "0x10de"
# PCI classes of NVIDIA functions that are GPUs: VGA and 3D controllers. (A GeForce board
# also shows an audio function, an HGX board its NVSwitches as bridges: neither is a GPU.)
GPU_CLASSES = ("0x0300", "0x0302")
SECURE_BOOT_VARIABLE = "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"


class PciDeviceDict(TypedDict):
    address: str  # 0000:3b:00.0
    pci_class: str  # 0x030200
    device: str  # 0x2330


class NvidiaPciDevices(FactBase[list[PciDeviceDict]]):
    """NVIDIA's functions on the PCI bus (vendor 0x10de in /sys/bus/pci/devices/*/vendor).

    Read from sysfs, so it needs no driver and no lspci: this is how preflight knows
    the host really has the class's GPUs before anything is installed.
    """

    def command(self) -> str:
        return (
            "for d in /sys/bus/pci/devices/*; do "
            f'[ "$(cat "$d/vendor" 2>/dev/null)" = {NVIDIA_VENDOR} ] || continue; '
            'echo "${d##*/} $(cat "$d/class") $(cat "$d/device")"; done'
        )

    @staticmethod
    def default() -> list[PciDeviceDict]:
        return []

    def process(self, output: list[str]) -> list[PciDeviceDict]:
        devices: list[PciDeviceDict] = []
        for line in output:
            parts = line.split()
            if len(parts) == 3 and parts[1].startswith("0x"):
                devices.append({"address": parts[0], "pci_class": parts[1], "device": parts[2]})
        return devices


def gpus(devices: list[PciDeviceDict]) -> list[PciDeviceDict]:
    return [d for d in devices if d["pci_class"].startswith(GPU_CLASSES)]


class SecureBootDict(TypedDict):
    state: str  # "enabled", "disabled", "no EFI" (legacy boot: no Secure Boot), "unknown"
    source: str  # what said so


class SecureBoot(FactBase[SecureBootDict]):
    """Whether the firmware enforces Secure Boot: mokutil's answer, else the EFI variable.

    The variable's fifth byte is the state (the first four are its attributes).
    """

    def command(self) -> str:
        variable = shlex.quote(SECURE_BOOT_VARIABLE)
        return (
            "if command -v mokutil >/dev/null 2>&1; then "
            'echo "mokutil=$(mokutil --sb-state 2>&1 | head -n 1)"; fi; '
            f"if [ -r {variable} ]; then "
            f'echo "efivar=$(od -An -t u1 -j 4 -N 1 {variable} | tr -d " ")"; '
            "elif [ -d /sys/firmware/efi ]; then echo efi=yes; else echo efi=no; fi"
        )

    @staticmethod
    def default() -> SecureBootDict:
        return {"state": "unknown", "source": "no answer"}

    def process(self, output: list[str]) -> SecureBootDict:
        values = dict(line.split("=", 1) for line in output if "=" in line)
        mokutil = values.get("mokutil", "")
        if "SecureBoot enabled" in mokutil:
            return {"state": "enabled", "source": "mokutil --sb-state"}
        if "SecureBoot disabled" in mokutil:
            return {"state": "disabled", "source": "mokutil --sb-state"}
        efivar = values.get("efivar")
        if efivar in ("0", "1"):
            state = "enabled" if efivar == "1" else "disabled"
            return {"state": state, "source": "the SecureBoot EFI variable"}
        if values.get("efi") == "no":
            return {"state": "no EFI", "source": "no /sys/firmware/efi (legacy boot)"}
        return self.default()


class LoadedDriver(FactBase[str | None]):
    """The version of the nvidia kernel module running now; None when none is loaded.

    The installed packages can be newer: the module loaded at boot stays until a reboot.
    """

    def command(self) -> str:
        return f"cat {LOADED_MODULE_VERSION} 2>/dev/null || true"

    @staticmethod
    def default() -> str | None:
        return None

    def process(self, output: list[str]) -> str | None:
        version = "".join(output).strip()
        return version or None


class BootId(FactBase[str]):
    """This boot's id: a new one proves the host rebooted (uptime can mislead in a VM)."""

    def command(self) -> str:
        return "cat /proc/sys/kernel/random/boot_id"

    def process(self, output: list[str]) -> str:
        return "".join(output).strip()


class DriverCheckDict(TypedDict):
    ran: bool  # False: no tools on the host yet, or they predate the check
    ok: bool
    failures: list[str]
    gpus: list[dict[str, Any]]  # index, name, ecc


class DriverCheck(FactBase[DriverCheckDict]):
    """``onhost.pyz gpu-check`` on a host whose driver is already in place: NVML must report
    the pinned release, CUDA version and GPU count on every run, not only after a change.

    Bounded by ``timeout``: NVML can hang on a GPU that fell off the bus.
    """

    def command(self, app: str, driver: str, cuda: str, gpus: int) -> str:
        check = shlex.join(["python3", app, "gpu-check", "--driver", driver, "--cuda", cuda,
                            "--gpus", str(gpus)])  # fmt: skip
        return f"test -f {shlex.quote(app)} || exit 0; timeout 120 {check} 2>/dev/null || true"

    @staticmethod
    def default() -> DriverCheckDict:
        return {"ran": False, "ok": False, "failures": [], "gpus": []}

    def process(self, output: list[str]) -> DriverCheckDict:
        try:
            verdict = json.loads(output[-1])
        except (ValueError, IndexError):
            return self.default()
        if not isinstance(verdict, dict) or not isinstance(verdict.get("ok"), bool):
            return self.default()
        return {
            "ran": True,
            "ok": verdict["ok"],
            "failures": [str(f) for f in verdict.get("failures") or []],
            "gpus": [g for g in verdict.get("gpus") or [] if isinstance(g, dict)],
        }
