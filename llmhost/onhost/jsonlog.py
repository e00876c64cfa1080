"""One JSON object per log record, for engines that log with Python's ``logging`` (vLLM).

llama-server writes JSON lines itself (``--log-jsonl``); vLLM reads a ``dictConfig`` file
(``VLLM_LOGGING_CONFIG_PATH``) whose formatter is this class, imported from the host-side
archive on its ``PYTHONPATH``. Both engines' journal lines then parse the same way:
``journalctl -u 'llmhost-runtime@*' -o cat | jq``. Standard library only.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# The dictConfig vLLM is given: its own loggers, to the journal (stdout), as JSON lines.
VLLM_LOGGING: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "llmhost.onhost.jsonlog.JsonFormatter"}},
    "handlers": {
        "journal": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stdout",
        }
    },
    "loggers": {"vllm": {"handlers": ["journal"], "level": "INFO", "propagate": False}},
}


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` (+ ``exception``), UTC, one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def vllm_logging_config() -> str:
    """The file's content: sorted keys, so the same bytes on every host and every run."""
    return json.dumps(VLLM_LOGGING, indent=2, sort_keys=True) + "\n"
