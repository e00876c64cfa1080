"""GPU tests: they run only where an NVIDIA GPU is present, and say so when they cannot."""

from __future__ import annotations

import shutil
import subprocess


def gpu_missing(what: str) -> str | None:
    """Why a GPU test cannot run here (``what``: what it would have checked), or None."""
    if shutil.which("nvidia-smi") is None:
        return f"no NVIDIA GPU here (nvidia-smi not found): {what}"
    listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    if listed.returncode != 0 or "GPU" not in listed.stdout:
        return f"nvidia-smi finds no GPU ({listed.stderr.strip()}): {what}"
    return None
