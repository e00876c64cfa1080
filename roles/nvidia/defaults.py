"""Public settings of the nvidia role, and the tables it decides from.

The driver branch and CUDA version come from the host's hardware class
(inventories/hardware.toml); the exact release within the branch is a setting,
so one group can take a new point release ahead of the rest of its class.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmhost.settings import setting
from roles._common.operations import APT_KEYRINGS_DIR

# NVIDIA's CUDA repository: <base>/<distro>/<arch>/ holds the packages and the key.
REPOSITORY = "https://developer.download.nvidia.com/compute/cuda/repos"
KEY_FILE = "3bf863cc.pub"
# NVIDIA's CUDA repository signing key ("cudatools <cudatools@nvidia.com>", 2022).
KEY_FINGERPRINT = "EB693B3035CD5710E231E123A4B469963BF863CC"
KEYRING = f"{APT_KEYRINGS_DIR}/llmhost-nvidia-cuda.gpg"
SOURCES_FILE = "/etc/apt/sources.list.d/llmhost-nvidia-cuda.list"
PREFERENCES_FILE = "/etc/apt/preferences.d/llmhost-nvidia"
UNATTENDED_FILE = "/etc/apt/apt.conf.d/51llmhost-nvidia"
NOUVEAU_FILE = "/etc/modprobe.d/llmhost-blacklist-nouveau.conf"
LOADED_MODULE_VERSION = "/sys/module/nvidia/version"

# The repository's directory for each supported OS (base's preflight allows no other).
DISTROS = {("debian", "12"): "debian12", ("ubuntu", "22.04"): "ubuntu2204",
           ("ubuntu", "24.04"): "ubuntu2404"}  # fmt: skip
# `uname -m` -> (the repository's architecture directory, dpkg's architecture).
ARCHITECTURES = {"x86_64": ("x86_64", "amd64"), "aarch64": ("sbsa", "arm64")}

# Every package of the driver stack: pinned to the release, and kept from unattended upgrades.
PINNED_PACKAGES = ("nvidia-*", "libnvidia-*", "cuda-drivers*", "nvidia-fabricmanager*")
# Match the patterns above but are versioned on their own: never pinned to the driver.
UNPINNED_PACKAGES = ("nvidia-container-*", "libnvidia-container*")

# What is installed, by OS family and kernel-module flavour, as NVIDIA's repository names it.
# Debian's packaging leaves the branch out of the names (the pin picks the release);
# Ubuntu's carries it, like Ubuntu's own archive (from branch 590 on it no longer does:
# revisit this table before a class moves past 580). Each list names the DKMS package, so
# a kernel update rebuilds the module, and what ships nvidia-persistenced.
PACKAGES = {
    "debian": {
        "open": ("nvidia-open", "nvidia-kernel-open-dkms", "nvidia-persistenced"),
        "proprietary": ("cuda-drivers", "nvidia-kernel-dkms", "nvidia-persistenced"),
    },
    "ubuntu": {
        "open": (
            "nvidia-driver-{branch}-open",
            "nvidia-dkms-{branch}-open",
            "nvidia-compute-utils-{branch}",
        ),
        "proprietary": (
            "cuda-drivers-{branch}",
            "nvidia-dkms-{branch}",
            "nvidia-compute-utils-{branch}",
        ),
    },
}
FABRIC_MANAGER_PACKAGE = "nvidia-fabricmanager-{branch}"
PERSISTENCED_UNIT = "nvidia-persistenced.service"
FABRIC_MANAGER_UNIT = "nvidia-fabricmanager.service"

KERNEL_MODULES = ("open", "proprietary")
# GPU generation by the class's `gpu_model` (first match wins). NVIDIA's open kernel
# modules run Turing and newer, and are the only ones for Blackwell; Volta and older
# need the proprietary ones.
GPU_GENERATIONS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("blackwell", re.compile(r"\bG?B(100|200|300)\b|RTX 50[0-9]0|RTX PRO [0-9]+ Blackwell")),
    ("hopper", re.compile(r"\bG?H(100|200|800|20)\b")),
    ("ada", re.compile(r"\bL(4|20|40S?)\b|RTX 40[0-9]0|RTX [0-9]+ Ada")),
    ("ampere", re.compile(r"\bA(2|10G?|16|30|40|100|800)\b|RTX 30[0-9]0|RTX A[0-9]+\b")),
    ("turing", re.compile(r"\bT4\b|RTX 20[0-9]0|GTX 16[0-9]0|Quadro RTX|TITAN RTX")),
    ("volta", re.compile(r"\bV100\b|TITAN V\b")),
    ("pascal", re.compile(r"\bP(4|40|100)\b|GTX 10[0-9]0")),
)
OPEN_ONLY = frozenset({"blackwell"})
PROPRIETARY_ONLY = frozenset({"volta", "pascal"})

# 550.127.08, 550.127.08-1, 570.86.15-0ubuntu1: the release, and optionally the
# packaging revision.
DRIVER_VERSION = re.compile(
    r"(?P<release>(?P<branch>[0-9]{3,4})\.[0-9]+(?:\.[0-9]+)?)(?:-(?P<revision>[0-9A-Za-z.+~]+))?"
)


@dataclass(frozen=True)
class NvidiaSettings:
    nvidia_driver_version: str | None = setting(
        None,
        "Exact driver release on GPU classes, within the class's `driver_branch` "
        '(`"550.127.08"`: any packaging of that release; `"550.127.08-1"`: that package '
        "revision too); required, since a branch alone installs whichever release is newest",
    )
    nvidia_kernel_modules: str | None = setting(
        None,
        "`open` or `proprietary` kernel modules; unset: by the class's GPU generation "
        "(open for Turing and newer)",
    )
    nvidia_apt_mirror: str | None = setting(
        None,
        "Internal mirror of NVIDIA's CUDA repository (laid out as "
        "https://developer.download.nvidia.com/compute/cuda/repos), for hosts without egress",
    )
    nvidia_reboot: bool = setting(
        False,
        "Reboot the host when the loaded kernel module is not the installed driver; false: "
        "the deploy stops and says so (the control machine is never rebooted)",
    )
    nvidia_reboot_timeout_s: int = setting(
        900, "Seconds a rebooted host has to come back (a new boot id over SSH)"
    )
    nvidia_secure_boot_ok: bool = setting(
        False,
        "Allow hosts with Secure Boot on: the DKMS-built module is signed with the host's "
        "MOK, which must be enrolled at the console, or the module will not load",
    )
    nvidia_require_gpus: bool = setting(
        True,
        "Refuse a GPU class host whose PCI bus does not show the class's GPUs; false "
        "installs the stack anyway (a machine image built without GPUs) and skips the "
        "reboot, the services and the GPU checks while none is present",
    )
