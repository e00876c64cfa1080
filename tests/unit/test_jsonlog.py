"""vLLM's logging config and formatter: JSON lines, loaded from the host-side archive."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from llmhost.onhost.jsonlog import JsonFormatter, vllm_logging_config
from roles._common.onhost import build_app


def test_a_record_is_one_json_line_with_time_level_logger_and_message():
    record = logging.LogRecord("vllm.engine", logging.WARNING, "x.py", 1, "%d slots", (4,), None)
    record.created = 1741083330.5
    line = JsonFormatter().format(record)
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2025-03-04T10:15:30.500+00:00",
        "level": "warning",
        "logger": "vllm.engine",
        "message": "4 slots",
    }


def test_an_exception_keeps_its_traceback_in_one_field():
    try:
        raise RuntimeError("CUDA out of memory")
    except RuntimeError:
        record = logging.LogRecord("vllm", logging.ERROR, "x.py", 1, "failed", (), sys.exc_info())
    entry = json.loads(JsonFormatter().format(record))
    assert "RuntimeError: CUDA out of memory" in entry["exception"]


def test_the_config_is_stable_bytes():
    assert vllm_logging_config() == vllm_logging_config()
    assert json.loads(vllm_logging_config())["formatters"]["json"]["()"] == (
        "llmhost.onhost.jsonlog.JsonFormatter"
    )


def test_the_config_works_as_vllm_applies_it_with_the_archive_on_pythonpath(tmp_path):
    """What vLLM does with VLLM_LOGGING_CONFIG_PATH: json.load, then dictConfig. Run in a
    bare interpreter whose only path to llmhost is the archive the hosts get."""
    archive = tmp_path / "onhost.pyz"
    archive.write_bytes(build_app())
    config = tmp_path / "logging.json"
    config.write_text(vllm_logging_config())
    program = (
        "import json, logging.config, sys\n"
        "logging.config.dictConfig(json.load(open(sys.argv[1])))\n"
        "logging.getLogger('vllm.entrypoints').info('serving on %s', 8001)\n"
        "logging.getLogger('vllm.entrypoints').debug('hidden')\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(archive)!r})\n" + program,
            str(config),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    (line,) = done.stdout.splitlines()
    entry = json.loads(line)
    assert (entry["level"], entry["logger"], entry["message"]) == (
        "info",
        "vllm.entrypoints",
        "serving on 8001",
    )
