"""Public settings of the runtime role: which engine serves the model, on which ports."""

from __future__ import annotations

from dataclasses import dataclass

from llmhost.onhost.layout import CONFIG_DIR, RUNTIME_UNIT, STATE_DIR
from llmhost.settings import setting

RUNTIME_USER = "llmhost-runtime"
UNIT_TEMPLATE = "llmhost-runtime@.service"
UNIT_PATH = f"/etc/systemd/system/{UNIT_TEMPLATE}"
RESTART_SERVICE = "llmhost-runtime-restart@.service"
RESTART_TIMER = "llmhost-runtime-restart@.timer"
LLAMA_CPP_DIR = "/opt/llmhost/llama.cpp"
VLLM_DIR = "/opt/llmhost/vllm"
VLLM_LOGGING_CONFIG = f"{VLLM_DIR}/logging.json"  # vLLM's log records as JSON lines
RUNTIME_ARTIFACTS = f"{STATE_DIR}/runtimes"


@dataclass(frozen=True)
class RuntimeSettings:
    runtime_engine: str | None = setting(
        None, "`llama.cpp` or `vllm`; unset means the hardware class's default runtime"
    )
    runtime_ports: dict[str, int] = setting(
        {"blue": 8001, "green": 8002}, "Loopback port of each colour (`blue`, `green`)"
    )
    runtime_served_model_name: str | None = setting(
        None, "Model name clients send in requests; unset means the catalog name"
    )
    runtime_extra_args: list[str] = setting(
        [], "Extra command-line arguments for the engine, after the hardware class's"
    )
    runtime_ready_timeout_s: int = setting(
        300, "Seconds a staged colour has to answer /health and a one-token completion"
    )
    runtime_drain_timeout_s: int = setting(
        30, "Seconds a stopping colour waits for in-flight requests before it is stopped"
    )
    runtime_restart_schedule: str | None = setting(
        None,
        "systemd OnCalendar of a scheduled (drained) restart of each running colour; "
        "unset: no scheduled restart",
    )


def env_file(colour: str) -> str:
    return f"{CONFIG_DIR}/runtime-{colour}.env"


def unit_name(colour: str) -> str:
    return RUNTIME_UNIT.format(colour)


def llama_cpp_binary(digest: str) -> str:
    """Where a llama.cpp build is installed: root-owned, one directory per artifact digest."""
    return f"{LLAMA_CPP_DIR}/{digest.split(':', 1)[1][:16]}/llama-server"


def vllm_venv(version: str) -> str:
    return f"{VLLM_DIR}/{version}"
