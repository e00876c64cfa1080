"""The driver check the nvidia role runs on a host: against a fake NVML, and the ECC binding
against the C stand-in for libnvidia-ml that the exporter's tests build."""

from __future__ import annotations

import ctypes
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmhost.onhost import app, gpucheck, nvml
from llmhost.onhost.nvml import EccMode, NvmlError
from roles._common import onhost
from tests.unit.test_gpuexporter import STUB_SOURCE

# The stand-in's two GPUs: ECC on the first (an H100), none on the second (a GeForce).
ECC_STUB = r"""
int nvmlDeviceGetEccMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    if (d->index) return 3;
    *current = 1; *pending = 0; return 0;
}
"""


class FakeNvml:
    def __init__(self, driver="550.127.08", cuda="12.4", gpus=None, init_error=None):
        self.driver, self.cuda, self.init_error = driver, cuda, init_error
        self.gpus = gpus if gpus is not None else [("NVIDIA H100 80GB HBM3", EccMode(True, True))]
        self.shut = False

    def init(self):
        if self.init_error:
            raise self.init_error

    def shutdown(self):
        self.shut = True

    def driver_version(self):
        return self.driver

    def cuda_driver_version(self):
        return self.cuda

    def device_count(self):
        return len(self.gpus)

    def device_handle(self, index):
        return index

    def name(self, device):
        return self.gpus[device][0]

    def ecc_mode(self, device):
        return self.gpus[device][1]


def run(api, *arguments, capsys):
    code = gpucheck.main(list(arguments), api=api)
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def test_the_pinned_driver_cuda_and_gpu_count_pass_and_ecc_is_reported(capsys):
    api = FakeNvml(gpus=[("NVIDIA H100", EccMode(True, True)), ("NVIDIA H100", None)])
    code, verdict, err = run(api, "--driver", "550.127.08", "--cuda", "12.4", "--gpus", "2",
                             capsys=capsys)  # fmt: skip
    assert code == 0 and verdict["ok"] and err == ""
    assert [g["ecc"] for g in verdict["gpus"]] == ["enabled", "not supported"]
    assert api.shut, "NVML is shut down again"


@pytest.mark.parametrize(
    ("api", "arguments", "words"),
    [
        (FakeNvml(driver="535.183.01"), ("550.127.08", "12.4", "1"), "driver 535.183.01 is"),
        (FakeNvml(cuda="12.2"), ("550.127.08", "12.4", "1"), "provides CUDA 12.2, the class pins"),
        (FakeNvml(cuda=None), ("550.127.08", "12.4", "1"), "provides CUDA unknown"),
        (FakeNvml(), ("550.127.08", "12.4", "8"), "sees 1 GPU(s), the class has 8"),
    ],
)
def test_what_does_not_match_is_a_failure_on_stdout_and_stderr(api, arguments, words, capsys):
    driver, cuda, gpus = arguments
    code, verdict, err = run(api, "--driver", driver, "--cuda", cuda, "--gpus", gpus,
                             capsys=capsys)  # fmt: skip
    assert code == 1 and not verdict["ok"]
    assert any(words in failure for failure in verdict["failures"]), verdict
    assert words in err


def test_a_cuda_patch_level_in_the_class_compares_by_major_minor(capsys):
    code, _, _ = run(FakeNvml(), "--driver", "550.127.08", "--cuda", "12.4.1", "--gpus", "1",
                     capsys=capsys)  # fmt: skip
    assert code == 0


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (nvml.DriverNotLoaded(nvml.DRIVER_NOT_LOADED, "nvmlInit_v2"), "module is not loaded"),
        (NvmlError(nvml.LIB_RM_VERSION_MISMATCH, "nvmlInit_v2"), "driver/library version mismatch"),
        (NvmlError(nvml.GPU_IS_LOST, "nvmlInit_v2"), "NVML does not start"),
    ],
)
def test_nvml_that_does_not_start_says_why(error, words, capsys):
    code, verdict, err = run(FakeNvml(init_error=error), "--driver", "550.127.08", "--cuda",
                             "12.4", "--gpus", "1", capsys=capsys)  # fmt: skip
    assert code == 1 and words in verdict["failures"][0] and words in err
    assert "docs/runbooks/nvidia.md" in verdict["failures"][0]


def test_without_a_driver_it_cannot_check(capsys):
    missing = nvml.NvmlLibraryNotFound(nvml.LIBRARY_NOT_FOUND, "nvmlInit_v2")
    code, verdict, err = run(FakeNvml(init_error=missing), "--driver", "550.127.08", "--cuda",
                             "12.4", "--gpus", "1", capsys=capsys)  # fmt: skip
    assert code == 2 and "no NVIDIA driver is installed" in verdict["failures"][0]
    assert "gpu-check: no NVIDIA driver is installed" in err


def test_an_ecc_change_waiting_for_a_reset_is_said():
    assert gpucheck.ecc_text(EccMode(current=False, pending=True)) == (
        "disabled (enabled after the next GPU reset)"
    )


def test_the_tool_is_in_the_archive():
    assert app.TOOLS["gpu-check"] == "llmhost.onhost.gpucheck"


@pytest.fixture(scope="module")
def stub_with_ecc(tmp_path_factory) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler here: the ECC binding is not run against a stand-in")
    directory = tmp_path_factory.mktemp("stubnvml")
    (directory / "stub.c").write_text(STUB_SOURCE + ECC_STUB)
    library = directory / "libnvidia-ml.so.1"
    built = subprocess.run(
        [compiler, "-shared", "-fPIC", "-O1", "-o", str(library), str(directory / "stub.c")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return library


def test_the_binding_reads_ecc_mode_and_none_where_the_board_has_none(stub_with_ecc):
    binding = nvml.Nvml(str(stub_with_ecc))
    binding.init()
    try:
        assert binding.ecc_mode(binding.device_handle(0)) == EccMode(current=True, pending=False)
        assert binding.ecc_mode(binding.device_handle(1)) is None
    finally:
        binding.shutdown()
    assert ctypes.CDLL(str(stub_with_ecc)).stub_inits() == 0


def test_from_the_archive_against_the_stand_in(stub_with_ecc, tmp_path):
    shipped = tmp_path / "onhost.pyz"
    shipped.write_bytes(onhost.build_app())
    env = {"LD_LIBRARY_PATH": str(stub_with_ecc.parent), "PATH": "/usr/bin:/bin"}
    arguments = ["--driver=550.54.15", "--cuda=12.4", "--gpus=2"]
    done = subprocess.run([sys.executable, "-I", "-S", str(shipped), "gpu-check", *arguments],
                          capture_output=True, text=True, env=env)  # fmt: skip
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["driver"] == "550.54.15" and verdict["cuda"] == "12.4"
    assert [g["ecc"] for g in verdict["gpus"]] == [
        "enabled (disabled after the next GPU reset)",
        "not supported",
    ]
