"""Hardware classes: what a host is, declared once in inventories/hardware.toml.

Each host names its class in its ``hardware`` key. As the GPU and runtime
roles arrive, the class decides whether the NVIDIA stack is installed, the
driver branch and the runtime settings. Keeping the matrix in one checked-in
file means a rebuilt host gets exactly the settings its class was benchmarked
with.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError
from llmhost.paths import HARDWARE_CATALOG
from llmhost.textfiles import first_unknown_key, read_toml

RUNTIMES = ("llama.cpp", "vllm")
KV_CACHE_DTYPES = ("auto", "fp8", "fp8_e4m3", "fp8_e5m2")
# Every pattern here is matched whole (``fullmatch``): ``$`` alone would let a trailing
# newline through.
CLASS_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
DRIVER_BRANCH = re.compile(r"[0-9]{3,4}")
CUDA_VERSION = re.compile(r"[0-9]+\.[0-9]+(?:\.[0-9]+)?")
CMAKE_OPTION = re.compile(r"-D[A-Za-z_][A-Za-z0-9_]*(?::[A-Z]+)?=\S*")
ONE_LINE = re.compile(r"[^\x00-\x1f\x7f]+")  # text of one line: no newline, tab, NUL...
CLASS_KEYS = (
    "description",
    "gpu_model",
    "gpu_count",
    "gpu_memory_gib",
    "nvswitch",
    "driver_branch",
    "cuda_version",
    "runtime",
    "benchmarked",
    "llama_cpp",
    "vllm",
)
GPU_ONLY_KEYS = ("gpu_model", "gpu_memory_gib", "driver_branch", "cuda_version")
LLAMA_CPP_KEYS = ("n_gpu_layers", "threads", "ctx_size", "parallel", "batch", "build_flags")
VLLM_KEYS = (
    "tensor_parallel_size",
    "gpu_memory_utilization",
    "max_num_seqs",
    "kv_cache_dtype",
    "max_model_len",
)


@dataclass(frozen=True)
class VllmSettings:
    tensor_parallel_size: int
    gpu_memory_utilization: float
    max_num_seqs: int
    kv_cache_dtype: str
    max_model_len: int


@dataclass(frozen=True)
class LlamaCppSettings:
    n_gpu_layers: int
    threads: int
    ctx_size: int
    parallel: int
    batch: int
    build_flags: tuple[str, ...]  # CMake options llama-server is built with for this class


@dataclass(frozen=True)
class HardwareClass:
    name: str
    description: str
    gpu_model: str | None
    gpu_count: int
    gpu_memory_gib: int
    nvswitch: bool
    driver_branch: str | None
    cuda_version: str | None
    runtime: str
    benchmarked: str
    llama_cpp: LlamaCppSettings
    vllm: VllmSettings | None

    @property
    def has_gpu(self) -> bool:
        return self.gpu_count > 0


class _Table:
    """Typed reads from one TOML table, failing with the file and the dotted key."""

    def __init__(self, table: dict[str, Any], prefix: str, source: Path) -> None:
        self.table, self.prefix, self.source = table, prefix, source

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{problem} in {self.source}", key=f"{self.prefix}.{key}", fix=fix)

    def known_keys(self, known: Collection[str]) -> None:
        found = first_unknown_key(self.table, known, f"[{self.prefix}]")
        if found:
            raise self.fail(*found)

    def integer(self, key: str, minimum: int, default: int | None = None) -> int:
        value = self.table.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise self.fail(
                key, f"{value!r} is not an integer >= {minimum}", f"use an integer >= {minimum}"
            )
        return value

    def fraction(self, key: str) -> float:
        value = self.table.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 < value <= 1:
            raise self.fail(key, f"{value!r} is not in (0, 1]", "use a fraction, e.g. 0.90")
        return float(value)

    def choice(self, key: str, options: tuple[str, ...], default: str | None = None) -> str:
        value = self.table.get(key, default)
        if value not in options:
            raise self.fail(
                key,
                f"{value!r} is not one of {', '.join(options)}",
                f"use one of {', '.join(options)}",
            )
        return str(value)

    def text(self, key: str, fix: str, pattern: re.Pattern[str] = ONE_LINE) -> str:
        value = self.table.get(key)
        if value is None or value == "":
            raise self.fail(key, "is missing", fix)
        if not isinstance(value, str) or not pattern.fullmatch(value):
            raise self.fail(key, f"{value!r} is not valid", fix)
        return value

    def flags(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key)
        if not isinstance(value, list) or not all(
            isinstance(flag, str) and CMAKE_OPTION.fullmatch(flag) for flag in value
        ):
            raise self.fail(
                key,
                f"{value!r} is not a list of CMake options",
                'list options like "-DGGML_NATIVE=OFF"',
            )
        return tuple(value)

    def subtable(self, key: str) -> _Table | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise self.fail(key, "is not a table", f"declare it as [{self.prefix}.{key}]")
        return _Table(value, f"{self.prefix}.{key}", self.source)


def _llama_cpp(table: _Table | None, parent: _Table, gpu_count: int) -> LlamaCppSettings:
    if table is None:
        raise parent.fail("llama_cpp", "is missing", "add a [<class>.llama_cpp] table")
    table.known_keys(LLAMA_CPP_KEYS)
    settings = LlamaCppSettings(
        n_gpu_layers=table.integer("n_gpu_layers", 0),
        threads=table.integer("threads", 1),
        ctx_size=table.integer("ctx_size", 1),
        parallel=table.integer("parallel", 1),
        batch=table.integer("batch", 1),
        build_flags=table.flags("build_flags"),
    )
    if not gpu_count and settings.n_gpu_layers:
        raise table.fail("n_gpu_layers", "offloads layers on a class without GPUs", "set it to 0")
    if settings.ctx_size < settings.parallel:
        raise table.fail(
            "ctx_size",
            f"{settings.ctx_size} leaves no context for each of {settings.parallel} parallel slots",
            "llama-server divides ctx_size among the slots: raise it",
        )
    cuda = "-DGGML_CUDA=ON" in settings.build_flags
    if gpu_count and not cuda:
        raise table.fail(
            "build_flags", "builds without CUDA on a GPU class", 'add "-DGGML_CUDA=ON"'
        )
    if not gpu_count and cuda:
        raise table.fail("build_flags", "builds for CUDA on a class without GPUs", "remove it")
    return settings


def _vllm(table: _Table | None, gpu_count: int) -> VllmSettings | None:
    if table is None:
        return None
    table.known_keys(VLLM_KEYS)
    if not gpu_count:
        raise table.fail(
            "tensor_parallel_size",
            "vLLM settings on a class without GPUs",
            "remove the vllm table, or give the class its GPUs",
        )
    settings = VllmSettings(
        tensor_parallel_size=table.integer("tensor_parallel_size", 1),
        gpu_memory_utilization=table.fraction("gpu_memory_utilization"),
        max_num_seqs=table.integer("max_num_seqs", 1),
        kv_cache_dtype=table.choice("kv_cache_dtype", KV_CACHE_DTYPES, "auto"),
        max_model_len=table.integer("max_model_len", 1),
    )
    if settings.tensor_parallel_size > gpu_count:
        raise table.fail(
            "tensor_parallel_size",
            f"{settings.tensor_parallel_size} is more than the class's {gpu_count} GPU(s)",
            f"use at most {gpu_count}",
        )
    return settings


def _parse_class(name: str, raw: dict[str, Any], source: Path) -> HardwareClass:
    table = _Table(raw, name, source)
    if not CLASS_NAME.fullmatch(name):
        raise ConfigError(
            f"class name {name!r} in {source} is not valid",
            key=name,
            fix="name classes with lower-case letters, digits, . _ - (e.g. 'l40s')",
        )
    table.known_keys(CLASS_KEYS)
    description = table.text("description", "describe the class in one line")
    gpu_count = table.integer("gpu_count", 0, default=0)
    if not gpu_count:
        for key in GPU_ONLY_KEYS:
            if key in raw:
                raise table.fail(
                    key,
                    "is set on a class without GPUs (gpu_count = 0)",
                    "remove it, or give the class its gpu_count",
                )
    gpu_model = raw.get("gpu_model")
    memory = raw.get("gpu_memory_gib", 0)
    if gpu_count:
        gpu_model = table.text("gpu_model", "name the GPU, e.g. 'NVIDIA L40S'")
    if gpu_count and (not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0):
        raise table.fail("gpu_memory_gib", f"{memory!r} is not a size", "give GiB per GPU, e.g. 48")
    nvswitch = raw.get("nvswitch", False)
    if not isinstance(nvswitch, bool):
        raise table.fail("nvswitch", f"{nvswitch!r} is not true/false", "use true or false")
    if nvswitch and gpu_count < 2:
        raise table.fail(
            "nvswitch",
            "NVSwitch on a class with fewer than 2 GPUs",
            "set nvswitch = false, or the real GPU count",
        )
    driver = (
        table.text("driver_branch", "pin the NVIDIA driver branch, e.g. '550'", DRIVER_BRANCH)
        if gpu_count
        else None
    )
    cuda = (
        table.text("cuda_version", "pin the CUDA version, e.g. '12.4'", CUDA_VERSION)
        if gpu_count
        else None
    )
    runtime = table.choice("runtime", RUNTIMES)
    vllm = _vllm(table.subtable("vllm"), gpu_count)
    if runtime == "vllm" and vllm is None:
        raise table.fail(
            "runtime",
            "is vllm but the class has no [vllm] settings",
            f"add [{name}.vllm], or use llama.cpp",
        )
    return HardwareClass(
        name=name,
        description=description,
        gpu_model=gpu_model if gpu_count else None,
        gpu_count=gpu_count,
        gpu_memory_gib=memory if gpu_count else 0,
        nvswitch=nvswitch,
        driver_branch=driver,
        cuda_version=cuda,
        runtime=runtime,
        benchmarked=table.text("benchmarked", "say where the numbers come from"),
        llama_cpp=_llama_cpp(table.subtable("llama_cpp"), table, gpu_count),
        vllm=vllm,
    )


def hardware_file() -> Path:
    """The hardware matrix: inventories/hardware.toml, or LLMHOST_HARDWARE_FILE (for tests)."""
    return Path(os.environ.get("LLMHOST_HARDWARE_FILE", HARDWARE_CATALOG))


def load_classes(path: Path | None = None) -> dict[str, HardwareClass]:
    """Parse and validate the hardware matrix; every problem names its key."""
    path = path or hardware_file()
    document = read_toml(path, "hardware")
    if not document:
        raise ConfigError(
            f"{path} declares no hardware class",
            key="hardware",
            fix="declare each class as a [<class>] table (see inventories/hardware.toml)",
        )
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
