"""Hardware classes: what a host is, declared once in inventories/hardware.toml.

Each host names its class in its ``hardware`` key. As the GPU and runtime
roles arrive, the class decides whether the NVIDIA stack is installed, the
driver branch and the runtime settings. Keeping the matrix in one checked-in
file means a rebuilt host gets exactly the settings its class was benchmarked
with.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError
from llmhost.paths import HARDWARE_CATALOG


@dataclass(frozen=True)
class HardwareClass:
    name: str
    description: str
    gpu_model: str | None
    gpu_count: int
    gpu_memory_gib: int
    nvswitch: bool

    @property
    def has_gpu(self) -> bool:
        return self.gpu_count > 0


def _parse_class(name: str, table: dict[str, Any], source: Path) -> HardwareClass:
    def fail(key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{problem} in {source}", key=f"{name}.{key}", fix=fix)

    description = table.get("description")
    if not isinstance(description, str) or not description:
        raise fail("description", "is missing", "describe the class in one line")
    gpu_count = table.get("gpu_count", 0)
    if not isinstance(gpu_count, int) or isinstance(gpu_count, bool) or gpu_count < 0:
        raise fail("gpu_count", f"{gpu_count!r} is not a count", "use an integer >= 0")
    gpu_model = table.get("gpu_model")
    memory = table.get("gpu_memory_gib", 0)
    if gpu_count and (not isinstance(gpu_model, str) or not gpu_model):
        raise fail("gpu_model", "is missing for a GPU class", "name the GPU, e.g. 'NVIDIA L40S'")
    if gpu_count and (not isinstance(memory, int) or memory <= 0):
        raise fail("gpu_memory_gib", f"{memory!r} is not a size", "give GiB per GPU, e.g. 48")
    nvswitch = table.get("nvswitch", False)
    if not isinstance(nvswitch, bool):
        raise fail("nvswitch", f"{nvswitch!r} is not true/false", "use true or false")
    return HardwareClass(
        name=name,
        description=description,
        gpu_model=gpu_model if gpu_count else None,
        gpu_count=gpu_count,
        gpu_memory_gib=memory if gpu_count else 0,
        nvswitch=nvswitch,
    )


def load_classes(path: Path = HARDWARE_CATALOG) -> dict[str, HardwareClass]:
    """Parse and validate the hardware matrix; every problem names its key."""
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError as error:
        raise ConfigError(
            f"{path} does not exist", key="hardware", fix="restore inventories/hardware.toml"
        ) from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(
            f"{path} is not valid TOML ({error})", key="hardware", fix="correct the syntax"
        ) from error
    classes = {}
    for name, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(
                f"top-level {name!r} in {path} is not a table",
                key=name,
                fix=f"declare classes as [{name}] tables",
            )
        classes[name] = _parse_class(name, table, path)
    return classes


def check_hardware(value: Any, classes: dict[str, HardwareClass], host: str) -> HardwareClass:
    """Return the host's hardware class, or raise naming the key and the fix."""
    known = ", ".join(sorted(classes))
    if value is None:
        raise ConfigError(
            "is missing: every host must name its hardware class",
            key="hardware",
            fix=f'add "hardware": "<class>" to the host\'s data; classes: {known}',
            host=host,
        )
    if not isinstance(value, str) or value not in classes:
        raise ConfigError(
            f"{value!r} is not a class in {HARDWARE_CATALOG.name}",
            key="hardware",
            fix=f"use one of: {known}; or add the class to inventories/hardware.toml",
            host=host,
        )
    return classes[value]
