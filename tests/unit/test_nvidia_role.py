"""The nvidia role's plan for each OS and class, given the host's facts (no host is contacted).

Fresh installs, a host already converged (zero commands), a branch change in one apt
transaction, fabric manager, reboots allowed, refused and on the control machine, Secure
Boot, a host without its GPUs; and the repository key, checked by the shared script with
NVIDIA's pin and words (tests/unit/test_apt_key.py runs that script against keys it makes).
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from llmhost.errors import ConfigError
from llmhost.hardware import load_classes
from llmhost.render import render
from roles._common.operations import apt_key_script
from roles.nvidia import KEY_REFUSED, KEY_UNREACHABLE, gpu_generation, kernel_headers, nvidia
from roles.nvidia.defaults import (
    KEY_FINGERPRINT,
    KEYRING,
    NOUVEAU_FILE,
    PINNED_PACKAGES,
    PREFERENCES_FILE,
    SOURCES_FILE,
    UNATTENDED_FILE,
    UNPINNED_PACKAGES,
)
from roles.nvidia.operations import (
    REBOOT_COMMAND,
    Release,
    Wanted,
    transaction,
    wait_for_boot,
)
from tests.unit.pyinfra_plan import FRESH_DEBIAN_12, per_argument, plan

RELEASE = "550.127.08"
HOST = {"region": "gb-lon1", "nvidia_driver_version": RELEASE}
REPOSITORY = "https://developer.download.nvidia.com/compute/cuda/repos"
# (distro directory, Platform fact fields, uname -r, the release as NVIDIA packages it there)
OSES = {
    "debian12": ({"os_id": "debian", "os_version": "12", "os_codename": "bookworm"},
                 "6.1.0-26-amd64", f"{RELEASE}-1"),
    "ubuntu2204": ({"os_id": "ubuntu", "os_version": "22.04", "os_codename": "jammy"},
                   "5.15.0-122-generic", f"{RELEASE}-0ubuntu1"),
    "ubuntu2404": ({"os_id": "ubuntu", "os_version": "24.04", "os_codename": "noble"},
                   "6.8.0-45-generic", f"{RELEASE}-0ubuntu1"),
}  # fmt: skip
# What each OS family names for the open modules of branch 550, as the role must install it.
OPEN_PACKAGES = {
    "debian": ["nvidia-open", "nvidia-kernel-open-dkms", "nvidia-persistenced"],
    "ubuntu": ["nvidia-driver-550-open", "nvidia-dkms-550-open", "nvidia-compute-utils-550"],
}
GPU_CLASSES = ("rtx4090", "l40s", "h100-pcie", "h100-sxm-x8")
SHIPPED = load_classes()  # inventories/hardware.toml, before a test swaps in its own


def gpu_devices(count: int) -> list[dict[str, str]]:
    return [{"address": f"0000:{0x18 + i:02x}:00.0", "pci_class": "0x030200", "device": "0x2330"}
            for i in range(count)]  # fmt: skip


def facts_for(os: str = "debian12", hardware: str = "rtx4090", **more):
    """A fresh host of ``os`` with the class's GPUs on the bus and no driver."""
    platform, kernel, _ = OSES[os]
    return {
        "Platform": {**FRESH_DEBIAN_12["Platform"], **platform},
        "Arch": "x86_64",
        "KernelVersion": kernel,
        "NvidiaPciDevices": gpu_devices(SHIPPED[hardware].gpu_count),
        "SecureBoot": {"state": "disabled", "source": "mokutil --sb-state"},
        **more,
    }


def nvidia_plan(os="debian12", hardware="rtx4090", data=None, facts=None, **options):
    return plan(
        nvidia, {**HOST, "hardware": hardware, **(data or {})},
        {**facts_for(os, hardware), **(facts or {})}, **options,
    )  # fmt: skip


def commands(planned: dict[str, list[str]], prefix: str) -> list[str]:
    return [c for name, cmds in planned.items() if name.startswith(prefix) for c in cmds]


def install_command(planned: dict[str, list[str]]) -> str:
    """The one `apt-get install` of the driver; fails when there are several."""
    (transaction_op,) = [n for n in planned if "in one apt transaction" in n]
    installs = [c for c in planned[transaction_op] if "apt-get install" in c]
    assert len(installs) == 1, installs
    assert planned[transaction_op][0] == "apt-get update", "lists are refreshed first"
    return installs[0]


# -- classes without GPUs ---------------------------------------------------------------------


def test_a_cpu_class_is_a_noop_that_says_why(caplog):
    caplog.set_level(logging.DEBUG, logger="pyinfra")
    assert plan(nvidia, {"region": "gb-lon1", "hardware": "cpu"}) == {}
    assert "class cpu has no GPUs: no NVIDIA driver is installed" in caplog.text


# -- fresh installs, per OS and class --------------------------------------------------------


@pytest.mark.parametrize("hardware", GPU_CLASSES)
@pytest.mark.parametrize("os", sorted(OSES))
def test_a_fresh_host_gets_the_repository_pins_and_driver_in_that_order(os, hardware):
    planned = nvidia_plan(os, hardware)
    names = list(planned)
    order = [
        "gpg (checks NVIDIA's repository key)",
        f"APT: NVIDIA's repository key {KEY_FINGERPRINT}, checked before it is trusted",
        "APT: NVIDIA's CUDA repository, signed by that key alone",
        f"APT: the NVIDIA driver stack pinned to {RELEASE}-*",
        "unattended-upgrades: never the NVIDIA driver stack",
        "nouveau blacklisted",
        "initramfs: rebuilt without nouveau",
    ]
    (install,) = [n for n in names if "in one apt transaction" in n]
    assert [names.index(n) for n in order] == sorted(names.index(n) for n in order)
    assert names.index(order[-1]) < names.index(install), "pins and blacklist come first"
    (key,) = commands(planned, "APT: NVIDIA's repository key")
    assert f"url={REPOSITORY}/{os}/x86_64/3bf863cc.pub" in key
    assert f"fpr={KEY_FINGERPRINT}" in key and f"keyring={KEYRING}" in key
    assert planned["initramfs: rebuilt without nouveau"] == ["update-initramfs -u -k all"]
    assert "APT: read the changed NVIDIA repository" not in planned, "the install refreshes"


@pytest.mark.parametrize("os", sorted(OSES))
def test_one_transaction_names_every_package_at_the_release_and_the_headers(os):
    command = install_command(nvidia_plan(os, "l40s"))
    family = OSES[os][0]["os_id"]
    for name in OPEN_PACKAGES[family]:
        assert f"'{name}={RELEASE}-*'" in command
    kernel = OSES[os][1]
    assert f" linux-headers-{kernel} " in command
    assert command.endswith(f" linux-headers-{kernel.rsplit('-', 1)[1]}")
    assert "--allow-downgrades" not in command and "--no-install-recommends" in command
    assert "fabricmanager" not in command


def test_the_pins_file_blocks_every_other_version(tmp_path):
    text = render(
        "nvidia/preferences.j2", pin=f"{RELEASE}-*", pinned=PINNED_PACKAGES,
        unpinned=UNPINNED_PACKAGES,
    )  # fmt: skip
    records = [block for block in text.strip().split("\n\n") if "Pin-Priority" in block]
    pinned = "Package: nvidia-* libnvidia-* cuda-drivers* nvidia-fabricmanager*"
    assert records[1].endswith(f"{pinned}\nPin: version {RELEASE}-*\nPin-Priority: 1001")
    assert records[2].endswith(f"{pinned}\nPin: version *\nPin-Priority: -1")
    assert "nvidia-container-*" in records[0], "the container toolkit is versioned on its own"


PACKAGES_FILE = """\
Package: nvidia-open
Version: 550.127.08-1

Package: nvidia-open
Version: 550.144.03-1

Package: libnvidia-compute-550
Version: 550.127.08-0ubuntu1

Package: libnvidia-compute-550
Version: 550.144.03-0ubuntu1

Package: nvidia-container-toolkit
Version: 1.17.3-1
"""


def test_apt_itself_picks_only_the_pinned_release(tmp_path):
    """A throwaway flat repository with two releases: apt's own policy, read with our pins."""
    if shutil.which("apt-get") is None:
        pytest.skip("no apt here: the pins are not read by apt")
    repo, prefs = tmp_path / "repo", tmp_path / "prefs"
    for directory in (repo, prefs, tmp_path / "lists/partial", tmp_path / "cache/archives/partial"):
        directory.mkdir(parents=True)
    fields = "Architecture: amd64\nFilename: x.deb\nSize: 1\nDescription: x\n"
    (repo / "Packages").write_text(PACKAGES_FILE.replace("\n\n", f"\n{fields}\n") + fields)
    (tmp_path / "sources.list").write_text(f"deb [trusted=yes] file:{repo} ./\n")
    (prefs / "llmhost-nvidia").write_text(render(
        "nvidia/preferences.j2", pin=f"{RELEASE}-*", pinned=PINNED_PACKAGES,
        unpinned=UNPINNED_PACKAGES,
    ))  # fmt: skip
    options = []
    for key, value in {
        "Dir::Etc::SourceList": tmp_path / "sources.list", "Dir::Etc::SourceParts": "-",
        "Dir::State::Lists": tmp_path / "lists", "Dir::Cache": tmp_path / "cache",
        "Dir::Etc::PreferencesParts": prefs, "Dir::Etc::Preferences": "/dev/null",
        "Dir::State::Status": "/dev/null", "Debug::NoLocking": 1, "APT::Architecture": "amd64",
    }.items():  # fmt: skip
        options += ["-o", f"{key}={value}"]
    updated = subprocess.run(["apt-get", *options, "update"], capture_output=True, text=True)
    assert updated.returncode == 0, updated.stderr
    policy = subprocess.run(
        ["apt-cache", *options, "policy", "nvidia-open", "libnvidia-compute-550",
         "nvidia-container-toolkit"], capture_output=True, text=True,
    )  # fmt: skip
    assert not re.search(r"^[EW]:", policy.stderr, re.M), policy.stderr
    candidates = re.findall(r"Candidate: (\S+)", policy.stdout)
    assert candidates == [f"{RELEASE}-1", f"{RELEASE}-0ubuntu1", "1.17.3-1"], policy.stdout
    assert re.search(r"550\.144\.03-1 -1\n", policy.stdout), "the newer release is blocked"


def test_unattended_upgrades_blacklist_every_driver_package():
    text = render("nvidia/unattended-upgrades.conf.j2", prefixes=["nvidia-", "libnvidia-"])
    assert 'Unattended-Upgrade::Package-Blacklist {\n    "nvidia-";\n    "libnvidia-";\n};' in text


def test_the_sources_entry_trusts_the_checked_key_alone_and_a_mirror_replaces_the_base():
    mirror = "http://mirror.internal/nvidia-cuda/"
    planned = nvidia_plan("ubuntu2404", data={"nvidia_apt_mirror": mirror})
    (key,) = commands(planned, "APT: NVIDIA's repository key")
    assert "url=http://mirror.internal/nvidia-cuda/ubuntu2404/x86_64/3bf863cc.pub" in key
    text = render(
        "nvidia/cuda.list.j2", url="http://mirror.internal/nvidia-cuda/ubuntu2404/x86_64/",
        keyring=KEYRING, deb_arch="amd64", mirror=True,
    )  # fmt: skip
    url = "http://mirror.internal/nvidia-cuda/ubuntu2404/x86_64/"
    assert f"deb [arch=amd64 signed-by={KEYRING}] {url} /" in text.splitlines()


def test_an_arm64_host_gets_the_sbsa_repository():
    planned = nvidia_plan("ubuntu2204", facts={"Arch": "aarch64"})
    (key,) = commands(planned, "APT: NVIDIA's repository key")
    assert f"{REPOSITORY}/ubuntu2204/sbsa/3bf863cc.pub" in key


def test_an_architecture_without_a_repository_is_refused():
    with pytest.raises(ConfigError, match="no NVIDIA repository for the ppc64le architecture"):
        nvidia_plan(facts={"Arch": "ppc64le"})


# -- converged: nothing to do -------------------------------------------------------------------


def converged_facts(os: str, hardware: str) -> dict:
    """Facts of a host this role already converged: files, key, packages, module, services."""
    platform, kernel, packaged = OSES[os]
    family, distro = platform["os_id"], os
    classes = load_classes()
    names = list(OPEN_PACKAGES[family])
    if classes[hardware].nvswitch:
        names.append("nvidia-fabricmanager-550")
    installed = {name: [packaged] for name in names}
    installed |= {"gpg": ["2.2.40-1.1"], f"linux-headers-{kernel}": ["1"]}
    installed[f"linux-headers-{kernel.rsplit('-', 1)[1]}"] = ["1"]
    url = f"{REPOSITORY}/{distro}/x86_64/"
    contents = {
        SOURCES_FILE: render("nvidia/cuda.list.j2", url=url, keyring=KEYRING, deb_arch="amd64",
                             mirror=False),
        PREFERENCES_FILE: render("nvidia/preferences.j2", pin=f"{RELEASE}-*",
                                 pinned=PINNED_PACKAGES, unpinned=UNPINNED_PACKAGES),
        UNATTENDED_FILE: render("nvidia/unattended-upgrades.conf.j2",
                                prefixes=[p.rstrip("*") for p in PINNED_PACKAGES]),
        NOUVEAU_FILE: render("nvidia/blacklist-nouveau.conf.j2"),
    }  # fmt: skip
    units = ["nvidia-persistenced.service"]
    units += ["nvidia-fabricmanager.service"] if classes[hardware].nvswitch else []
    return {
        "DebPackages": installed,
        "KeyringFingerprints": [KEY_FINGERPRINT],
        "Directory": per_argument({"path=/etc/apt/keyrings": {"mode": 755}}),
        "File": per_argument({
            f"path={path}": {"mode": 644, "user": "root", "group": "root"} for path in contents
        }),
        "Sha1File": per_argument({
            f"path={path}": hashlib.sha1(text.encode()).hexdigest()
            for path, text in contents.items()
        }),
        "LoadedDriver": RELEASE,
        "SystemdStatus": dict.fromkeys(units, True),
        "SystemdEnabled": dict.fromkeys(units, True),
        "DriverCheck": {"ran": True, "ok": True, "failures": [],
                        "gpus": [{"index": 0, "name": "x", "ecc": "enabled"}]},
    }  # fmt: skip


@pytest.mark.parametrize("hardware", GPU_CLASSES)
@pytest.mark.parametrize("os", sorted(OSES))
def test_a_converged_host_runs_zero_commands(os, hardware, caplog):
    caplog.set_level(logging.DEBUG, logger="pyinfra")
    planned = nvidia_plan(os, hardware, facts=converged_facts(os, hardware))
    # Conditional operations list their commands in a plan; they run only if these did.
    conditions = {
        "initramfs: rebuilt without nouveau": ["nouveau blacklisted"],
        "APT: read the changed NVIDIA repository": [
            f"APT: NVIDIA's repository key {KEY_FINGERPRINT}, checked before it is trusted",
            "APT: NVIDIA's CUDA repository, signed by that key alone",
        ],
    }
    for name, changes in conditions.items():
        assert name in planned and all(planned[change] == [] for change in changes)
    assert {n: cmds for n, cmds in planned.items() if cmds and n not in conditions} == {}
    assert f"NVML reports {RELEASE}, CUDA 12.4: GPU 0 ECC enabled" in caplog.text
    assert "Secure Boot: disabled (mokutil --sb-state)" in caplog.text


def test_a_converged_host_whose_check_fails_is_checked_again_by_an_operation():
    facts = converged_facts("debian12", "l40s")
    facts["DriverCheck"] = {"ran": True, "ok": False, "failures": ["x"], "gpus": []}
    planned = nvidia_plan("debian12", "l40s", facts=facts)
    (check,) = commands(planned, "NVIDIA: NVML reports")
    assert check.endswith(f"gpu-check --driver={RELEASE} --cuda=12.4 --gpus=1")


def test_a_changed_mirror_only_refreshes_the_package_lists():
    facts = converged_facts("debian12", "l40s")
    planned = nvidia_plan("debian12", "l40s", data={"nvidia_apt_mirror": "http://m.internal/c"},
                          facts=facts)  # fmt: skip
    assert planned["APT: read the changed NVIDIA repository"] == ["apt-get update"]
    assert commands(planned, "NVIDIA 550.127.08: open kernel modules") == []


# -- a release or branch change ---------------------------------------------------------------


@pytest.fixture
def branch_570(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped classes, with l40s and h100-sxm-x8 moved to branch 570 (CUDA 12.8)."""
    text = Path("inventories/hardware.toml").read_text()
    for name in ("[l40s]", "[h100-sxm-x8]"):
        head, rest = text.split(f"\n{name}\n", 1)
        body, tail = rest.split("\n[", 1)
        body = body.replace('driver_branch = "550"', 'driver_branch = "570"')
        body = body.replace('cuda_version = "12.4"', 'cuda_version = "12.8"')
        text = f"{head}\n{name}\n{body}\n[{tail}"
    (tmp_path / "hardware.toml").write_text(text)
    monkeypatch.setenv("LLMHOST_HARDWARE_FILE", str(tmp_path / "hardware.toml"))


@pytest.mark.parametrize("os", sorted(OSES))
def test_a_branch_change_rewrites_the_pins_then_replaces_everything_in_one_transaction(
    os, branch_570
):
    facts = converged_facts(os, "h100-sxm-x8")  # 550 installed and running
    data = {"nvidia_driver_version": "570.86.15", "nvidia_reboot": True}
    planned = nvidia_plan(os, "h100-sxm-x8", data=data, facts=facts)
    names = list(planned)
    pins = "APT: the NVIDIA driver stack pinned to 570.86.15-*"
    (install_op,) = [n for n in names if "in one apt transaction" in n]
    assert commands(planned, pins) and names.index(pins) < names.index(install_op)
    command = install_command(planned)
    if OSES[os][0]["os_id"] == "ubuntu":
        for name in ("nvidia-driver-570-open", "nvidia-dkms-570-open", "nvidia-fabricmanager-570"):
            assert f"'{name}=570.86.15-*'" in command
        for old in ("nvidia-driver-550-open", "nvidia-dkms-550-open", "nvidia-fabricmanager-550"):
            assert f" {old}-" in command, "the old branch's packages go in the same transaction"
    else:
        for name in ("nvidia-open", "nvidia-kernel-open-dkms", "nvidia-fabricmanager-570"):
            assert f"'{name}=570.86.15-*'" in command
        assert " nvidia-fabricmanager-550-" in command
    assert "--allow-downgrades" not in command, "an upgrade needs none"
    assert any(REBOOT_COMMAND in c for c in commands(planned, "Reboot into NVIDIA 570.86.15"))
    (check,) = commands(planned, "NVIDIA: NVML reports 570.86.15")
    assert "--cuda=12.8 --gpus=8" in check


def test_going_back_to_an_earlier_release_allows_the_downgrade():
    facts = converged_facts("debian12", "l40s")
    facts["DebPackages"] = {**facts["DebPackages"], "nvidia-open": ["550.144.03-1"]}
    command = install_command(nvidia_plan("debian12", "l40s", facts=facts))
    assert "--allow-downgrades" in command
    assert f"'nvidia-open={RELEASE}-*'" in command


def test_the_transaction_replaces_the_other_flavour_and_another_branch():
    release = Release.parse("570.86.15")
    assert release is not None
    from roles.nvidia import name_pattern

    wanted = Wanted(
        release, ("nvidia-driver-570-open", "nvidia-dkms-570-open"), ("linux-headers-generic",),
        tuple(name_pattern(n) for n in ("nvidia-driver-{branch}-open", "nvidia-dkms-{branch}",
                                        "nvidia-dkms-{branch}-open")),
    )  # fmt: skip
    installed = {"nvidia-driver-550-open": ["550.127.08-0ubuntu1"],
                 "nvidia-dkms-550": ["550.127.08-0ubuntu1"], "linux-headers-generic": ["1"],
                 "nvidia-settings": ["550.127.08-0ubuntu1"]}  # fmt: skip
    change = transaction(installed, wanted)
    assert change is not None
    assert change.remove == ("nvidia-dkms-550", "nvidia-driver-550-open")
    assert not change.downgrade, "570 is newer than what it replaces"
    done = {
        "nvidia-driver-570-open": ["570.86.15-0ubuntu1"],
        "nvidia-dkms-570-open": ["570.86.15-0ubuntu1"],
        "linux-headers-generic": ["1"],
    }
    assert transaction(done, wanted) is None
    exact = Release.parse("570.86.15-1")
    assert exact is not None and exact.pin == "570.86.15-1"
    assert not exact.matches("570.86.15-0ubuntu1") and exact.matches("570.86.15-1")


# -- fabric manager ------------------------------------------------------------------------


def test_an_nvswitch_class_gets_fabric_manager_at_the_release_and_running():
    planned = nvidia_plan("debian12", "h100-sxm-x8", data={"nvidia_reboot": True})
    assert f"'nvidia-fabricmanager-550={RELEASE}-*'" in install_command(planned)
    started = commands(planned, "nvidia-fabricmanager.service: running and enabled")
    assert started == [
        "systemctl start nvidia-fabricmanager.service",
        "systemctl enable nvidia-fabricmanager.service",
    ]
    assert commands(planned, "nvidia-persistenced.service: running and enabled")
    single = nvidia_plan("debian12", "h100-pcie")
    assert not any("fabricmanager" in name for name in single)


# -- reboots -------------------------------------------------------------------------------------


def test_a_reboot_is_planned_when_allowed_and_proven_by_a_new_boot_id():
    planned = nvidia_plan(data={"nvidia_reboot": True, "nvidia_reboot_timeout_s": 600})
    reboot = commands(planned, f"Reboot into NVIDIA {RELEASE} (running: none)")
    assert REBOOT_COMMAND in reboot
    assert any("remember_boot" in c for c in reboot) and "wait_for_new_boot" in reboot[-1]
    assert not any(n.startswith("NVIDIA: reboot needed") for n in planned)
    names = list(planned)
    (install_op,) = [n for n in names if "in one apt transaction" in n]
    reboot_op = f"Reboot into NVIDIA {RELEASE} (running: none)"
    persistence = "nvidia-persistenced.service: running and enabled"
    assert names.index(install_op) < names.index(reboot_op) < names.index(persistence)


def test_without_nvidia_reboot_the_deploy_installs_then_stops_saying_so():
    planned = nvidia_plan(facts={"LoadedDriver": "535.183.01"})
    assert not any(n.startswith("Reboot into") for n in planned)
    (stop,) = commands(planned, "NVIDIA: reboot needed")
    assert "the nvidia module running is 535.183.01, the release installed 550.127.08" in stop
    assert "nvidia_reboot is false" in stop and "Fix: reboot the host" in stop
    assert stop.endswith(">&2; exit 1")


def test_the_control_machine_is_never_rebooted(caplog):
    planned = nvidia_plan(data={"nvidia_reboot": True}, name="@local")
    assert not any(n.startswith("Reboot into") for n in planned)
    (stop,) = commands(planned, "NVIDIA: reboot needed")
    assert "this is the control machine, which llmhost never reboots" in stop
    assert "host @local: reboot needed" in stop


def test_a_host_running_the_release_is_not_rebooted():
    planned = nvidia_plan(data={"nvidia_reboot": True}, facts={"LoadedDriver": RELEASE})
    assert not any(n.startswith(("Reboot into", "NVIDIA: reboot needed")) for n in planned)


class FakeHost:
    """What wait_for_boot uses of a pyinfra Host: each reconnect answers with the next of
    ``boots`` (None: unreachable), the last one for ever after."""

    print_prefix = "[fake] "

    def __init__(self, boots: list[str | None]) -> None:
        self.boots, self.connected, self.connects = boots, False, 0
        self.connector_data: dict[str, str | None] = {}

    def answer(self) -> str | None:
        return self.boots.pop(0) if len(self.boots) > 1 else self.boots[0]

    def connect(self, show_errors: bool = True) -> None:
        self.connects += 1
        self.boot = self.answer()
        self.connected = self.boot is not None

    def disconnect(self) -> None:
        self.connected = False

    def get_fact(self, cls, **kwargs):
        return self.boot


def test_waiting_for_the_reboot_ends_at_a_new_boot_id_and_fails_after_the_timeout(caplog):
    back = FakeHost([None, "old", None, "new"])
    assert wait_for_boot(back, "old", timeout_s=5, interval_s=0) is True
    assert back.connects == 4, "unreachable, then the old boot, unreachable, then the new one"
    never = FakeHost(["old"])
    assert wait_for_boot(never, "old", timeout_s=0.05, interval_s=0) is False
    assert "did not come back with a new boot id within 0.05 s" in caplog.text


# -- preflight: refused before anything is installed --------------------------------------------


def test_secure_boot_on_is_refused_unless_the_operator_says_the_key_is_enrolled():
    on = {"SecureBoot": {"state": "enabled", "source": "mokutil --sb-state"}}
    with pytest.raises(ConfigError) as raised:
        nvidia_plan(facts=on)
    assert raised.value.key == "nvidia_secure_boot_ok"
    assert "Machine Owner Key" in str(raised.value) and "mokutil --import" in str(raised.value)
    allowed = nvidia_plan(data={"nvidia_secure_boot_ok": True}, facts=on)
    assert any("in one apt transaction" in name for name in allowed)


def test_a_gpu_class_without_its_gpus_on_the_bus_is_refused():
    with pytest.raises(ConfigError) as raised:
        nvidia_plan("debian12", "h100-sxm-x8", facts={"NvidiaPciDevices": gpu_devices(7)})
    assert raised.value.key == "hardware"
    assert "class h100-sxm-x8 has 8 NVIDIA GPU(s)" in str(raised.value)
    assert "the PCI bus shows 7" in str(raised.value) and "nothing was installed" in str(
        raised.value
    )


def test_without_required_gpus_the_stack_is_installed_but_nothing_is_started_or_checked():
    planned = nvidia_plan(data={"nvidia_require_gpus": False, "nvidia_reboot": True},
                          facts={"NvidiaPciDevices": []})  # fmt: skip
    assert f"'nvidia-open={RELEASE}-*'" in install_command(planned)
    assert not any(n.startswith(("Reboot into", "NVIDIA: reboot needed")) for n in planned)
    assert not any(n.startswith("NVIDIA: NVML reports") for n in planned)
    persistence = commands(planned, "nvidia-persistenced.service")
    assert persistence == ["systemctl enable nvidia-persistenced.service"]


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"nvidia_driver_version": None}, "nvidia_driver_version", "a branch alone installs"),
        ({"nvidia_driver_version": "550"}, "nvidia_driver_version", "is not a driver version"),
        ({"nvidia_driver_version": "570.86.15"}, "nvidia_driver_version", "driver branch 550"),
        ({"nvidia_kernel_modules": "closed"}, "nvidia_kernel_modules", "not a kernel-module"),
        ({"nvidia_reboot_timeout_s": 10}, "nvidia_reboot_timeout_s", "below 60"),
        ({"nvidia_apt_mirror": "mirror.internal"}, "nvidia_apt_mirror", "not usable"),
        ({"nvidia_reboot": "yes"}, "nvidia_reboot", "expected bool"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(data, key, words):
    host_data = {**HOST, "hardware": "l40s", **data}
    host_data = {k: v for k, v in host_data.items() if v is not None}
    with pytest.raises(ConfigError) as raised:
        plan(nvidia, host_data, facts_for("debian12", "l40s"))
    assert raised.value.key == key
    assert words in str(raised.value)


# -- kernel-module flavour by GPU generation -----------------------------------------------


@pytest.mark.parametrize(
    ("model", "generation"),
    [
        ("NVIDIA GeForce RTX 4090", "ada"),
        ("NVIDIA L40S", "ada"),
        ("NVIDIA L4", "ada"),
        ("NVIDIA RTX 6000 Ada Generation", "ada"),
        ("NVIDIA H100 PCIe", "hopper"),
        ("NVIDIA H100 80GB HBM3", "hopper"),
        ("NVIDIA H200", "hopper"),
        ("NVIDIA GH200 480GB", "hopper"),
        ("NVIDIA A100-SXM4-80GB", "ampere"),
        ("NVIDIA A10G", "ampere"),
        ("NVIDIA RTX A6000", "ampere"),
        ("Tesla T4", "turing"),
        ("Quadro RTX 8000", "turing"),
        ("NVIDIA B200", "blackwell"),
        ("NVIDIA GeForce RTX 5090", "blackwell"),
        ("Tesla V100-SXM2-32GB", "volta"),
        ("Tesla P40", "pascal"),
        ("NVIDIA GeForce GTX 1080 Ti", "pascal"),
        ("Tesla K80", None),
    ],
)
def test_the_generation_table(model, generation):
    assert gpu_generation(model) == generation


def custom_class(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    (tmp_path / "hardware.toml").write_text(
        f'[odd]\ndescription = "d"\ngpu_model = "{model}"\ngpu_count = 1\ngpu_memory_gib = 16\n'
        'driver_branch = "550"\ncuda_version = "12.4"\nruntime = "llama.cpp"\nbenchmarked = "no"\n'
        '[odd.llama_cpp]\nbuild_flags = ["-DGGML_CUDA=ON"]\nn_gpu_layers = 1\nthreads = 1\n'
        "ctx_size = 8\nparallel = 1\nbatch = 8\n"
    )
    monkeypatch.setenv("LLMHOST_HARDWARE_FILE", str(tmp_path / "hardware.toml"))


def test_an_unknown_gpu_model_needs_the_flavour_set(tmp_path, monkeypatch):
    custom_class(tmp_path, monkeypatch, "Tesla K80")
    data = {**HOST, "hardware": "odd"}
    facts = facts_for("debian12", "rtx4090")
    with pytest.raises(ConfigError) as raised:
        plan(nvidia, data, facts)
    assert raised.value.key == "nvidia_kernel_modules"
    assert "'Tesla K80' is not in the GPU generation table" in str(raised.value)
    assert 'nvidia_kernel_modules = "open"' in str(raised.value)
    chosen = plan(nvidia, {**data, "nvidia_kernel_modules": "proprietary"}, facts)
    command = install_command(chosen)
    assert f"'cuda-drivers={RELEASE}-*'" in command
    assert f"'nvidia-kernel-dkms={RELEASE}-*'" in command


def test_older_gpus_get_proprietary_modules_and_open_ones_are_refused_for_them(
    tmp_path, monkeypatch
):
    custom_class(tmp_path, monkeypatch, "Tesla V100-SXM2-32GB")
    facts = facts_for("ubuntu2204", "rtx4090")
    command = install_command(plan(nvidia, {**HOST, "hardware": "odd"}, facts))
    assert f"'cuda-drivers-550={RELEASE}-*'" in command
    assert f"'nvidia-dkms-550={RELEASE}-*'" in command
    with pytest.raises(ConfigError, match="open kernel modules do not run"):
        plan(nvidia, {**HOST, "hardware": "odd", "nvidia_kernel_modules": "open"}, facts)


def test_headers_follow_the_kernel_flavour():
    assert kernel_headers("6.1.0-26-cloud-amd64") == (
        "linux-headers-6.1.0-26-cloud-amd64", "linux-headers-cloud-amd64"
    )  # fmt: skip
    assert kernel_headers("6.8.0-1015-aws")[1] == "linux-headers-aws"
    assert kernel_headers("6.9.1") == ("linux-headers-6.9.1",)


# -- the repository key: roles._common's check (tests/unit/test_apt_key.py), in NVIDIA's words --


@pytest.mark.parametrize("os", sorted(OSES))
def test_the_key_is_checked_by_the_shared_script_with_nvidias_pin_and_words(os):
    (script,) = commands(nvidia_plan(os), "APT: NVIDIA's repository key")
    url = f"{REPOSITORY}/{os}/x86_64/3bf863cc.pub"
    assert script == apt_key_script(
        url, KEY_FINGERPRINT, KEYRING, "NVIDIA", KEY_UNREACHABLE, KEY_REFUSED
    )
    # What the error says after what failed and that nothing was trusted: the fix.
    assert "the egress proxy must allow it" in KEY_UNREACHABLE
    assert "set nvidia_apt_mirror" in KEY_UNREACHABLE
    assert "serve NVIDIA's key unchanged; never trust another key" in KEY_REFUSED


def test_a_keyring_holding_another_key_is_replaced_by_the_checked_one():
    other = {"KeyringFingerprints": ["0123456789ABCDEF0123456789ABCDEF01234567"]}
    planned = nvidia_plan(facts=other)
    (script,) = commands(planned, "APT: NVIDIA's repository key")
    assert f"keyring={KEYRING}" in script and 'mv -f "$keyring.new" "$keyring"' in script
    same = nvidia_plan(facts={"KeyringFingerprints": [KEY_FINGERPRINT]})
    assert commands(same, "APT: NVIDIA's repository key") == []
