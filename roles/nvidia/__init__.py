"""Role nvidia: the NVIDIA driver of the host's hardware class, pinned, held and verified.

preflight  the class's driver branch and CUDA version (inventories/hardware.toml), the exact
           release (`nvidia_driver_version`), the kernel-module flavour by GPU generation;
           then the host: a repository for its OS and architecture, the class's GPUs on
           the PCI bus, Secure Boot (refused unless `nvidia_secure_boot_ok`)
install    NVIDIA's CUDA repository, its key trusted only once its fingerprint is checked;
           apt pins to the exact release and an unattended-upgrades blacklist, written
           before anything is installed; nouveau blacklisted (the initramfs rebuilt when
           that file changed); the driver, its DKMS module, the kernel headers and, on
           NVSwitch classes, fabric manager, in one apt transaction
configure  a reboot when the loaded module is not the installed driver (`nvidia_reboot`;
           never the control machine), done when the host answers with a new boot id
service    nvidia-persistenced, and nvidia-fabricmanager on NVSwitch classes; then NVML
           must report the release, the class's CUDA version and GPU count

Hosts of a class without GPUs (`cpu`) get nothing: a noop that says so, and they call
nothing of NVIDIA's (``endpoints()``, for the residency audit, lists the repository on GPU
classes only). It runs right after base in deploy/site.py, before anything that needs a GPU.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.operation import OperationMeta
from pyinfra.connectors.local import LocalConnector
from pyinfra.facts.server import Arch, KernelVersion
from pyinfra.operations import server
from pyinfra.operations.util import any_changed

from llmhost.endpoints import NVIDIA_REPOSITORY, Call
from llmhost.errors import ConfigError
from llmhost.hardware import HardwareClass, check_hardware, load_classes
from llmhost.onhost.layout import ONHOST_APP
from llmhost.settings import from_data
from roles._common import checked
from roles._common.checked import put_template
from roles._common.checks import check_at_least, check_url
from roles._common.egress import apt_through_proxy
from roles._common.onhost import install_onhost_tools, onhost_command
from roles._common.operations import apt_key_tools, apt_key_trusted
from roles.base.facts import Platform
from roles.nvidia.defaults import (
    ARCHITECTURES,
    DISTROS,
    FABRIC_MANAGER_PACKAGE,
    FABRIC_MANAGER_UNIT,
    GPU_GENERATIONS,
    KERNEL_MODULES,
    KEY_FILE,
    KEY_FINGERPRINT,
    KEYRING,
    NOUVEAU_FILE,
    OPEN_ONLY,
    PACKAGES,
    PERSISTENCED_UNIT,
    PINNED_PACKAGES,
    PREFERENCES_FILE,
    PROPRIETARY_ONLY,
    REPOSITORY,
    SOURCES_FILE,
    UNATTENDED_FILE,
    UNPINNED_PACKAGES,
    NvidiaSettings,
)
from roles.nvidia.facts import DriverCheck, LoadedDriver, NvidiaPciDevices, SecureBoot, gpus
from roles.nvidia.operations import Release, Wanted, driver_installed, rebooted

# What the repository key's errors say to do (after what failed, and that nothing was trusted).
KEY_UNREACHABLE = (
    "Fix: let the host reach it (the egress proxy must allow it), or set nvidia_apt_mirror "
    "to an internal mirror of the repository."
)
KEY_REFUSED = (
    "Fix: make the mirror or proxy serve NVIDIA's key unchanged; never trust another key. "
    "If NVIDIA has rotated its key, check the new fingerprint against NVIDIA's own "
    "announcement before changing KEY_FINGERPRINT in roles/nvidia/defaults.py."
)


@dataclass(frozen=True)
class NoGpus:
    """A class without GPUs: nothing to install, and why."""

    why: str


@dataclass(frozen=True)
class Plan:
    """What the inventory asks of a GPU host, validated with no host contacted."""

    settings: NvidiaSettings
    hardware: HardwareClass
    release: Release
    modules: str  # "open" or "proprietary"

    @property
    def cuda(self) -> str:
        return self.hardware.cuda_version or ""


@dataclass(frozen=True)
class Target:
    """What preflight found on the host."""

    family: str  # debian, ubuntu: how NVIDIA's packages are named there
    repository: str  # the repository's URL for the host's OS and architecture
    deb_arch: str
    kernel: str  # uname -r: whose headers DKMS builds against
    gpus_present: int
    loaded: str | None  # the nvidia module running now


@deploy("llmhost nvidia")
def nvidia() -> None:
    plan = check()
    if isinstance(plan, NoGpus):
        host.noop(plan.why)
        return
    target = preflight(plan)
    sources = repository(plan, target)
    packages = install(plan, target, sources)
    load(plan, target)
    service(plan, target)
    verify(plan, target, packages)


# -- preflight ---------------------------------------------------------------------------


def check() -> Plan | NoGpus:
    """The settings, the class's pins and the module flavour, with no host contacted."""
    settings = from_data(NvidiaSettings, host.data, host.name)
    hardware = check_hardware(host.data.get("hardware"), load_classes(), host.name)
    if not hardware.has_gpu:
        return NoGpus(f"class {hardware.name} has no GPUs: no NVIDIA driver is installed")
    check_at_least(host.name, settings, ("nvidia_reboot_timeout_s",), 60)
    if settings.nvidia_apt_mirror is not None:
        check_url(host.name, "nvidia_apt_mirror", settings.nvidia_apt_mirror)
    release = exact_release(settings.nvidia_driver_version, hardware, host.name)
    modules = kernel_modules(settings.nvidia_kernel_modules, hardware, host.name)
    return Plan(settings, hardware, release, modules)


def endpoints() -> list[Call]:
    """NVIDIA's CUDA repository, on GPU classes only: `nvidia_apt_mirror`, else NVIDIA's own.

    APT fetches the key and the driver stack from ``<repository>/<distro>/<arch>/``, by the
    host's OS and architecture (DISTROS, ARCHITECTURES), which only its preflight reads. One
    host serves every such path, and where that host is is what the audit asks: the
    repository itself is listed.
    """
    hardware = check_hardware(host.data.get("hardware"), load_classes(), host.name)
    if not hardware.has_gpu:
        return []
    settings = from_data(NvidiaSettings, host.data, host.name)
    paths = "|".join(sorted(set(DISTROS.values())))
    arches = "|".join(directory for directory, _ in ARCHITECTURES.values())
    return [
        apt_through_proxy(
            NVIDIA_REPOSITORY,
            repository_base(settings),
            "nvidia_apt_mirror",
            note=f"APT: the key and the driver stack, from {{{paths}}}/{{{arches}}}/ below it",
        )
    ]


def repository_base(settings: NvidiaSettings) -> str:
    """NVIDIA's repository, or its mirror: the directory above ``<distro>/<arch>/``."""
    return (settings.nvidia_apt_mirror or REPOSITORY).rstrip("/")


def exact_release(value: str | None, hardware: HardwareClass, name: str) -> Release:
    """The release within the class's branch: a branch alone would install whatever
    release is newest in the repository that day, so two builds of a host could differ."""
    branch = hardware.driver_branch
    release = "550.127.08" if branch == "550" else f"{branch}.<minor>.<patch>"
    example = f'"{release}" (any packaging of it) or "{release}-1" (that package revision)'
    if value is None:
        raise ConfigError(
            f"is unset: class {hardware.name} pins driver branch {branch}, and a branch alone "
            "installs whichever release is newest, so a rebuilt host could get another",
            key="nvidia_driver_version",
            fix=f"set the exact release, e.g. {example}, for the hosts of this class "
            "(`apt-cache madison cuda-drivers` on a host with NVIDIA's repository lists them)",
            host=name,
        )
    parsed = Release.parse(value)
    if parsed is None:
        raise ConfigError(
            f"{value!r} is not a driver version",
            key="nvidia_driver_version",
            fix=f"give a release like {example}",
            host=name,
        )
    if parsed.branch != branch:
        raise ConfigError(
            f"{value} is not a release of class {hardware.name}'s driver branch {branch}",
            key="nvidia_driver_version",
            fix=f"use a {branch}.* release, or change the class's driver_branch (and its "
            "cuda_version) in inventories/hardware.toml",
            host=name,
        )
    return parsed


def gpu_generation(model: str) -> str | None:
    return next((name for name, pattern in GPU_GENERATIONS if pattern.search(model)), None)


def kernel_modules(chosen: str | None, hardware: HardwareClass, name: str) -> str:
    """Open modules for Turing and newer, proprietary for older; the setting may choose
    where the generation allows both."""
    model = hardware.gpu_model or ""
    generation = gpu_generation(model)
    if chosen is not None and chosen not in KERNEL_MODULES:
        raise ConfigError(
            f"{chosen!r} is not a kernel-module flavour",
            key="nvidia_kernel_modules",
            fix='use "open" or "proprietary", or leave it unset',
            host=name,
        )
    if chosen is None and generation is None:
        raise ConfigError(
            f"class {hardware.name}'s gpu_model {model!r} is not in the GPU generation table, "
            "so whether it runs NVIDIA's open kernel modules is unknown",
            key="nvidia_kernel_modules",
            fix='set nvidia_kernel_modules = "open" (Turing and newer) or "proprietary" '
            "(Volta and older), or add the model to GPU_GENERATIONS in roles/nvidia/defaults.py",
            host=name,
        )
    if (chosen == "open" and generation in PROPRIETARY_ONLY) or (
        chosen == "proprietary" and generation in OPEN_ONLY
    ):
        raise ConfigError(
            f"{chosen} kernel modules do not run {model} ({generation})",
            key="nvidia_kernel_modules",
            fix="leave it unset: the GPU generation decides",
            host=name,
        )
    if chosen is not None:
        return chosen
    return "proprietary" if generation in PROPRIETARY_ONLY else "open"


def preflight(plan: Plan) -> Target:
    """The host: a repository for its OS and architecture, its GPUs, Secure Boot. Asserts only."""
    platform = host.get_fact(Platform)
    distro = DISTROS.get((platform["os_id"], platform["os_version"]))
    if distro is None:
        raise ConfigError(
            f"NVIDIA's repository is not set up for {platform['os_id']} {platform['os_version']}",
            key="hardware",
            fix="run GPU classes on Debian 12 or Ubuntu 22.04/24.04",
            host=host.name,
        )
    machine = host.get_fact(Arch)
    if machine not in ARCHITECTURES:
        raise ConfigError(
            f"no NVIDIA repository for the {machine} architecture here",
            key="hardware",
            fix="run GPU classes on x86_64 or aarch64 (sbsa) hosts",
            host=host.name,
        )
    repository_arch, deb_arch = ARCHITECTURES[machine]
    present = len(gpus(host.get_fact(NvidiaPciDevices)))
    check_gpus_on_bus(plan, present)
    check_secure_boot(plan)
    return Target(
        family=platform["os_id"],
        repository=f"{repository_base(plan.settings)}/{distro}/{repository_arch}/",
        deb_arch=deb_arch,
        kernel=host.get_fact(KernelVersion),
        gpus_present=present,
        loaded=host.get_fact(LoadedDriver),
    )


def check_gpus_on_bus(plan: Plan, present: int) -> None:
    wanted = plan.hardware.gpu_count
    if present == wanted:
        return
    problem = (
        f"class {plan.hardware.name} has {wanted} NVIDIA GPU(s) ({plan.hardware.gpu_model}), "
        f"but the PCI bus shows {present} (NVIDIA VGA/3D functions, vendor 0x10de, in "
        "/sys/bus/pci/devices)"
    )
    if not plan.settings.nvidia_require_gpus:
        host.noop(f"{problem}: installing anyway (nvidia_require_gpus = false)")
        return
    raise ConfigError(
        f"{problem}; nothing was installed",
        key="hardware",
        fix="check the host's class, and that its GPUs are seated and visible to this machine "
        "(a VM needs them passed through); to install without them (a machine image), set "
        "nvidia_require_gpus = false",
        host=host.name,
    )


def check_secure_boot(plan: Plan) -> None:
    """Secure Boot lets only signed modules load: DKMS signs with the host's own key, which
    someone must enrol at the console. Refused unless the operator says that is done."""
    found = host.get_fact(SecureBoot)
    if found["state"] != "enabled":
        host.noop(f"Secure Boot: {found['state']} ({found['source']})")
        return
    if plan.settings.nvidia_secure_boot_ok:
        host.noop("Secure Boot is on: DKMS signs the module with the host's enrolled MOK")
        return
    raise ConfigError(
        f"Secure Boot is on ({found['source']}): the nvidia module DKMS builds loads only "
        "if it is signed with a Machine Owner Key enrolled at the console, else the GPUs "
        "stay dark after the reboot; nothing was installed",
        key="nvidia_secure_boot_ok",
        fix="enrol the host's DKMS key (`mokutil --import /var/lib/dkms/mok.pub`, then "
        "confirm at the console on the next boot) and set nvidia_secure_boot_ok = true; or "
        "turn Secure Boot off in the firmware",
        host=host.name,
    )


# -- install ----------------------------------------------------------------------------------


def repository(plan: Plan, target: Target) -> list[OperationMeta]:
    """NVIDIA's repository, trusted through its checked key; pins and the blacklist before
    any package. Returns the operations that change what APT reads."""
    apt_key_tools("NVIDIA")
    key = apt_key_trusted(
        name=f"APT: NVIDIA's repository key {KEY_FINGERPRINT}, checked before it is trusted",
        url=f"{target.repository}{KEY_FILE}",
        fingerprint=KEY_FINGERPRINT,
        keyring=KEYRING,
        owner="NVIDIA",
        unreachable=KEY_UNREACHABLE,
        rotated=KEY_REFUSED,
    )
    sources = put_template(
        name="APT: NVIDIA's CUDA repository, signed by that key alone",
        path="nvidia/cuda.list.j2",
        dest=SOURCES_FILE,
        mode="0644",
        url=target.repository,
        keyring=KEYRING,
        deb_arch=target.deb_arch,
        mirror=bool(plan.settings.nvidia_apt_mirror),
    )
    put_template(
        name=f"APT: the NVIDIA driver stack pinned to {plan.release.pin}",
        path="nvidia/preferences.j2",
        dest=PREFERENCES_FILE,
        mode="0644",
        pin=plan.release.pin,
        pinned=PINNED_PACKAGES,
        unpinned=UNPINNED_PACKAGES,
    )
    put_template(
        name="unattended-upgrades: never the NVIDIA driver stack",
        path="nvidia/unattended-upgrades.conf.j2",
        dest=UNATTENDED_FILE,
        mode="0644",
        prefixes=[pattern.rstrip("*") for pattern in PINNED_PACKAGES],
    )
    return [key, sources]


def install(plan: Plan, target: Target, sources: list[OperationMeta]) -> OperationMeta:
    nouveau = put_template(
        name="nouveau blacklisted",
        path="nvidia/blacklist-nouveau.conf.j2",
        dest=NOUVEAU_FILE,
        mode="0644",
    )
    server.shell(
        name="initramfs: rebuilt without nouveau",
        commands=["update-initramfs -u -k all"],
        _if=nouveau.did_change,
    )
    packages = driver_installed(
        name=f"NVIDIA {plan.release.text}: {describe(plan)}, in one apt transaction",
        wanted=wanted_packages(plan, target),
        description=f"NVIDIA {plan.release.text} ({describe(plan)})",
    )
    if not packages.will_change:
        server.shell(
            name="APT: read the changed NVIDIA repository",
            commands=["apt-get update"],
            _if=any_changed(*sources),
        )
    return packages


def describe(plan: Plan) -> str:
    fabric = ", fabric manager" if plan.hardware.nvswitch else ""
    return f"{plan.modules} kernel modules (DKMS){fabric}"


def wanted_packages(plan: Plan, target: Target) -> Wanted:
    """The names for the host's OS and the class, and the headers DKMS builds against."""
    table = PACKAGES[target.family]
    named = [*table[plan.modules], *([FABRIC_MANAGER_PACKAGE] if plan.hardware.nvswitch else [])]
    every = {name for flavour in table.values() for name in flavour} | {FABRIC_MANAGER_PACKAGE}
    return Wanted(
        release=plan.release,
        pinned=tuple(name.format(branch=plan.release.branch) for name in named),
        unpinned=kernel_headers(target.kernel),
        owned=tuple(name_pattern(name) for name in sorted(every)),
    )


def name_pattern(template: str) -> re.Pattern[str]:
    """``cuda-drivers-{branch}`` -> a pattern for that package of any branch."""
    return re.compile(re.escape(template).replace(re.escape("{branch}"), "[0-9]+"))


def kernel_headers(kernel: str) -> tuple[str, ...]:
    """The running kernel's headers, and its flavour's (``linux-headers-amd64``,
    ``-generic``...) so that every future kernel's arrive with it and DKMS can build."""
    flavour = re.fullmatch(r"[0-9][^-]*-[0-9.]+-(.+)", kernel)
    return (f"linux-headers-{kernel}", *([f"linux-headers-{flavour[1]}"] if flavour else []))


# -- configure: the module the host runs ----------------------------------------------------


def is_control_machine() -> bool:
    return issubclass(host.connector_cls, LocalConnector)


def load(plan: Plan, target: Target) -> None:
    """A reboot when the running module is not the installed release, where allowed; else
    the deploy stops here, saying so."""
    release = plan.release.release
    if target.loaded == release:
        host.noop(f"the nvidia module running is {release}, the installed release")
        return
    if not target.gpus_present:
        host.noop("no NVIDIA GPU on the PCI bus: no module to load, so no reboot")
        return
    why = f"the nvidia module running is {target.loaded or 'none'}, the release installed {release}"
    if is_control_machine():
        stop(f"{why}, and this is the control machine, which llmhost never reboots",
             "reboot it yourself, then run the deploy again")  # fmt: skip
    elif not plan.settings.nvidia_reboot:
        stop(f"{why}; a reboot loads it, and nvidia_reboot is false",
             "reboot the host (out of your load balancer first if it serves), or set "
             "nvidia_reboot = true; then run the deploy again")  # fmt: skip
    else:
        rebooted(
            name=f"Reboot into NVIDIA {release} (running: {target.loaded or 'none'})",
            timeout_s=plan.settings.nvidia_reboot_timeout_s,
        )


def stop(problem: str, fix: str) -> None:
    """Fail the host here, after the install: the next boot runs the new driver."""
    message = f"host {host.name}: reboot needed: {problem}. Fix: {fix}"
    server.shell(
        name=f"NVIDIA: reboot needed ({problem})",
        commands=[f"echo {shlex.quote(message)} >&2; exit 1"],
    )


# -- service ----------------------------------------------------------------------------------


def service(plan: Plan, target: Target) -> None:
    """Started where GPUs are present (they need the module); enabled everywhere."""
    running = True if target.gpus_present else None
    checked.service(
        name=f"{PERSISTENCED_UNIT}: running and enabled",
        service=PERSISTENCED_UNIT,
        running=running,
        enabled=True,
    )
    if plan.hardware.nvswitch:
        checked.service(
            name=f"{FABRIC_MANAGER_UNIT}: running and enabled (NVSwitch class)",
            service=FABRIC_MANAGER_UNIT,
            running=running,
            enabled=True,
        )


def verify(plan: Plan, target: Target, packages: OperationMeta) -> None:
    """NVML reports the release, the class's CUDA version and GPU count: read as a fact on
    a host already running the release (a second run changes nothing), else checked by
    an operation once the driver is in place."""
    if not target.gpus_present:
        host.noop("no NVIDIA GPU on the PCI bus: NVML has nothing to report")
        return
    arguments = {"driver": plan.release.release, "cuda": plan.cuda,
                 "gpus": plan.hardware.gpu_count}  # fmt: skip
    running = target.loaded == plan.release.release and not packages.will_change
    if running:
        found = host.get_fact(DriverCheck, app=ONHOST_APP, **arguments)
        if found["ok"]:
            ecc = ", ".join(f"GPU {g.get('index')} ECC {g.get('ecc')}" for g in found["gpus"])
            host.noop(f"NVML reports {plan.release.release}, CUDA {plan.cuda}: {ecc}")
            return
    install_onhost_tools()
    server.shell(
        name=f"NVIDIA: NVML reports {plan.release.release}, CUDA {plan.cuda}, "
        f"{plan.hardware.gpu_count} GPU(s)",
        commands=[onhost_command("gpu-check", *(f"--{k}={v}" for k, v in arguments.items()))],
    )
