"""The Debian 12 host image: built once with debootstrap, cached by its inputs."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

SUITE = "bookworm"
VARIANT = "minbase"
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "iproute2",
    "procps",
    "python3",
    "sudo",
    "ca-certificates",
    "netbase",
)
# Bump when the way the image is prepared changes, so caches built the old way are not reused.
RECIPE_VERSION = 2
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def image_key(mirror: str) -> str:
    inputs = {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": PACKAGES,
        "mirror": mirror,
        "recipe": RECIPE_VERSION,
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def ensure_image(images_dir: Path, mirror: str) -> Path:
    """Return the cached image for these inputs, building it (atomically) if absent."""
    key = image_key(mirror)
    image = images_dir / key
    if (image / "etc" / "os-release").exists():
        return image
    building = images_dir / f"{key}.building"
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    print(f"testbed: building Debian {SUITE} image {key} (once; about a minute)", file=sys.stderr)
    subprocess.run(
        [
            "debootstrap",
            f"--variant={VARIANT}",
            # Every package is checked against the signed Release file.
            "--force-check-gpg",
            f"--keyring={KEYRING}",
            f"--include={','.join(PACKAGES)}",
            SUITE,
            str(building),
            mirror,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _generalise(building)
    building.rename(image)
    return image


def _generalise(rootfs: Path) -> None:
    """Remove what must differ per host: SSH host keys, machine id, package cache."""
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    (rootfs / "etc" / "machine-id").write_text("")
    for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
        deb.unlink()
