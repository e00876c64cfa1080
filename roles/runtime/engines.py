"""What a colour runs: the engine's command line and environment, from the hardware matrix.

A *release* is everything that decides what a colour serves apart from its port:
the engine binary (or vLLM version), the model digest, and every argument. Its id
is a hash of those, so the same inputs on any host are the same release, and a
changed setting is a new release that is staged on the idle colour.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from llmhost.catalog import Model
from llmhost.errors import ConfigError
from llmhost.hardware import HardwareClass
from llmhost.onhost.layout import ONHOST_APP
from roles.model.defaults import model_directory
from roles.runtime.defaults import VLLM_LOGGING_CONFIG, vllm_venv

# What each engine can load, by the catalog's weight format.
ENGINE_FORMATS = {"llama.cpp": ("gguf",), "vllm": ("safetensors", "gguf")}
# Nothing a runtime does needs the internet; these keep libraries from trying.
OFFLINE_ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
}
# vLLM's log records as JSON lines, like llama-server's --log-jsonl: its dictConfig file
# names the formatter in the host-side archive (llmhost/onhost/jsonlog.py).
VLLM_JSON_LOGGING = {
    "VLLM_LOGGING_CONFIG_PATH": VLLM_LOGGING_CONFIG,
    "PYTHONPATH": ONHOST_APP,
}


@dataclass(frozen=True)
class Release:
    engine: str
    executable: str
    arguments: tuple[str, ...]  # everything but the port
    model: str
    model_digest: str
    served_model_name: str
    environment: tuple[tuple[str, str], ...]

    @property
    def id(self) -> str:
        document = {
            "engine": self.engine,
            "executable": self.executable,
            "arguments": self.arguments,
            "model_digest": self.model_digest,
            "served_model_name": self.served_model_name,
            "environment": self.environment,
        }
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    def summary(self) -> dict[str, str]:
        """What state.json records about the release."""
        return {
            "id": self.id,
            "engine": self.engine,
            "executable": self.executable,
            "model": self.model,
            "model_digest": self.model_digest,
            "served_model_name": self.served_model_name,
        }

    def command_line(self, port: int) -> list[str]:
        return [*self.arguments, "--port", str(port)]


def check_servable(engine: str, model: Model, host: str) -> None:
    """The engine can load the model's format, and the catalog lists the engine for it."""
    if model.format not in ENGINE_FORMATS[engine]:
        raise ConfigError(
            f"{engine} cannot serve model {model.name}: its weights are {model.format}",
            key="runtime_engine",
            fix=f"serve {model.format} with "
            + " or ".join(e for e, f in ENGINE_FORMATS.items() if model.format in f)
            + ", or pick a model in a format "
            + f"{engine} loads ({', '.join(ENGINE_FORMATS[engine])})",
            host=host,
        )
    if engine not in model.runtimes:
        raise ConfigError(
            f"model {model.name} lists runtimes {', '.join(model.runtimes)}, not {engine}",
            key="runtime_engine",
            fix=f"use one of {', '.join(model.runtimes)}, or add {engine} to "
            f"`runtimes` in {model.definition.name} once it is tested",
            host=host,
        )


def gguf_file(model: Model) -> str:
    """The GGUF llama.cpp opens: the first in the catalog (the first shard of a split)."""
    for pinned in model.files:
        if pinned.path.endswith(".gguf"):
            return pinned.path
    raise ConfigError(
        f"model {model.name} has no .gguf file",
        key="files",
        fix=f"list the GGUF in {model.definition.name}",
    )


def llama_cpp_release(
    model: Model, hardware: HardwareClass, binary: str, served_name: str, extra: list[str]
) -> Release:
    settings = hardware.llama_cpp
    assert model.digest
    weights = f"{model_directory(model.name, model.digest)}/{gguf_file(model)}"
    arguments = (
        "--model",
        weights,
        "--alias",
        served_name,
        "--host",
        "127.0.0.1",
        "--threads",
        str(settings.threads),
        "--ctx-size",
        str(settings.ctx_size),
        "--parallel",
        str(settings.parallel),
        "--batch-size",
        str(settings.batch),
        "--n-gpu-layers",
        str(settings.n_gpu_layers),
        "--metrics",
        "--no-webui",
        "--log-jsonl",  # one JSON object per line in the journal
        *extra,
    )
    return Release(
        engine="llama.cpp",
        executable=binary,
        arguments=arguments,
        model=model.name,
        model_digest=model.digest,
        served_model_name=served_name,
        environment=(),
    )


def vllm_release(
    model: Model, hardware: HardwareClass, version: str, served_name: str, extra: list[str]
) -> Release:
    settings = hardware.vllm
    if settings is None:
        raise ConfigError(
            f"class {hardware.name} has no [vllm] settings",
            key="runtime_engine",
            fix=f"add [{hardware.name}.vllm] to hardware.toml, or use llama.cpp",
        )
    assert model.digest
    directory = model_directory(model.name, model.digest)
    weights = f"{directory}/{gguf_file(model)}" if model.format == "gguf" else directory
    arguments = (
        "serve",
        weights,
        "--served-model-name",
        served_name,
        "--host",
        "127.0.0.1",
        "--tensor-parallel-size",
        str(settings.tensor_parallel_size),
        "--gpu-memory-utilization",
        str(settings.gpu_memory_utilization),
        "--max-num-seqs",
        str(settings.max_num_seqs),
        "--kv-cache-dtype",
        settings.kv_cache_dtype,
        "--max-model-len",
        str(settings.max_model_len),
        "--disable-log-requests",  # prompts stay out of the journal
        *extra,
    )
    return Release(
        engine="vllm",
        executable=f"{vllm_venv(version)}/bin/vllm",
        arguments=arguments,
        model=model.name,
        model_digest=model.digest,
        served_model_name=served_name,
        environment=tuple(sorted({**OFFLINE_ENVIRONMENT, **VLLM_JSON_LOGGING}.items())),
    )
