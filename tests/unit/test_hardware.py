from pathlib import Path

import pytest

from llmhost.errors import ConfigError
from llmhost.hardware import check_hardware, load_classes


def test_shipped_matrix_has_the_first_classes():
    classes = load_classes()
    assert {"cpu", "rtx4090", "l40s", "h100-pcie", "h100-sxm-x8"} <= set(classes)
    assert not classes["cpu"].has_gpu
    assert classes["h100-sxm-x8"].gpu_count == 8 and classes["h100-sxm-x8"].nvswitch
    assert all(c.gpu_memory_gib > 0 for c in classes.values() if c.has_gpu)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hardware.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[a]\ngpu_count = 0\n", "a.description"),
        ('[a]\ndescription = "x"\ngpu_count = -1\n', "a.gpu_count"),
        ('[a]\ndescription = "x"\ngpu_count = 1\ngpu_memory_gib = 8\n', "a.gpu_model"),
        ('[a]\ndescription = "x"\ngpu_count = 1\ngpu_model = "G"\n', "a.gpu_memory_gib"),
        ('[a]\ndescription = "x"\nnvswitch = "yes"\n', "a.nvswitch"),
        ("a = 1\n", "a"),
        ("[a\n", "hardware"),
    ],
)
def test_bad_matrix_entries_name_the_key(tmp_path, text, key):
    with pytest.raises(ConfigError) as raised:
        load_classes(write(tmp_path, text))
    assert f"key `{key}`" in str(raised.value)


def test_unknown_and_missing_classes_list_the_known_ones():
    classes = load_classes()
    with pytest.raises(ConfigError) as raised:
        check_hardware("a100", classes, "gpu-1")
    assert "host gpu-1: key `hardware`: 'a100' is not a class" in str(raised.value)
    assert "cpu, h100-pcie" in str(raised.value)
    with pytest.raises(ConfigError, match="is missing"):
        check_hardware(None, classes, "gpu-1")
    assert check_hardware("l40s", classes, "gpu-1").gpu_model == "NVIDIA L40S"


GPU_CLASS = """\
[g]
description = "one GPU"
gpu_model = "G"
gpu_count = 2
gpu_memory_gib = 24
driver_branch = "550"
cuda_version = "12.4"
runtime = "vllm"
benchmarked = "nowhere"

[g.llama_cpp]
build_flags = ["-DGGML_CUDA=ON"]
n_gpu_layers = 99
threads = 4
ctx_size = 4096
parallel = 4
batch = 512

[g.vllm]
tensor_parallel_size = 2
gpu_memory_utilization = 0.9
max_num_seqs = 8
kv_cache_dtype = "auto"
max_model_len = 4096
"""


def test_a_complete_gpu_class_parses_with_its_runtime_settings(tmp_path):
    (gpu,) = load_classes(write(tmp_path, GPU_CLASS)).values()
    assert (gpu.runtime, gpu.driver_branch, gpu.cuda_version) == ("vllm", "550", "12.4")
    assert gpu.vllm is not None and gpu.vllm.tensor_parallel_size == 2
    assert gpu.llama_cpp.parallel == 4


@pytest.mark.parametrize(
    ("old", "new", "key", "problem"),
    [
        (
            "tensor_parallel_size = 2",
            "tensor_parallel_size = 4",
            "g.vllm.tensor_parallel_size",
            "4 is more than the class's 2 GPU(s)",
        ),
        (
            "gpu_memory_utilization = 0.9",
            "gpu_memory_utilization = 1.5",
            "g.vllm.gpu_memory_utilization",
            "is not in (0, 1]",
        ),
        ('kv_cache_dtype = "auto"', 'kv_cache_dtype = "int3"', "g.vllm.kv_cache_dtype", "int3"),
        ("ctx_size = 4096", "ctx_size = 2", "g.llama_cpp.ctx_size", "no context for each of 4"),
        ('runtime = "vllm"', 'runtime = "tgi"', "g.runtime", "is not one of llama.cpp, vllm"),
        ('driver_branch = "550"\n', "", "g.driver_branch", "is missing"),
        ('cuda_version = "12.4"\n', "", "g.cuda_version", "is missing"),
        ("gpu_count = 2", "gpu_count = 1\nnvswitch = true", "g.nvswitch", "fewer than 2 GPUs"),
        ("threads = 4", "threads = 0", "g.llama_cpp.threads", "is not an integer >= 1"),
        ('["-DGGML_CUDA=ON"]', "[]", "g.llama_cpp.build_flags", "builds without CUDA"),
        ('["-DGGML_CUDA=ON"]', '["GGML_CUDA"]', "g.llama_cpp.build_flags", "not a list of CMake"),
    ],
)
def test_impossible_gpu_settings_are_refused_naming_the_key(tmp_path, old, new, key, problem):
    assert old in GPU_CLASS
    with pytest.raises(ConfigError) as raised:
        load_classes(write(tmp_path, GPU_CLASS.replace(old, new)))
    assert f"key `{key}`" in str(raised.value)
    assert problem in str(raised.value)


def test_vllm_and_offload_are_refused_on_a_class_without_gpus(tmp_path):
    cpu = GPU_CLASS.replace("gpu_count = 2", "gpu_count = 0").replace(
        'runtime = "vllm"', 'runtime = "llama.cpp"'
    )
    for gpu_only in ('gpu_model = "G"\n', "gpu_memory_gib = 24\n", 'driver_branch = "550"\n',
                     'cuda_version = "12.4"\n'):  # fmt: skip
        with pytest.raises(ConfigError, match="is set on a class without GPUs"):
            load_classes(write(tmp_path, cpu))
        cpu = cpu.replace(gpu_only, "")
    with pytest.raises(ConfigError, match="vLLM settings on a class without GPUs"):
        load_classes(write(tmp_path, cpu))
    without_vllm = cpu[: cpu.index("[g.vllm]")]
    with pytest.raises(ConfigError, match=r"key `g\.llama_cpp\.n_gpu_layers`"):
        load_classes(write(tmp_path, without_vllm))
    no_offload = without_vllm.replace("n_gpu_layers = 99", "n_gpu_layers = 0")
    with pytest.raises(ConfigError, match="builds for CUDA on a class without GPUs"):
        load_classes(write(tmp_path, no_offload))


def test_vllm_runtime_needs_vllm_settings(tmp_path):
    with pytest.raises(ConfigError, match="is vllm but the class has no"):
        load_classes(write(tmp_path, GPU_CLASS[: GPU_CLASS.index("[g.vllm]")]))


def test_shipped_classes_pick_runtimes_their_hardware_can_run():
    classes = load_classes()
    assert classes["cpu"].runtime == "llama.cpp" and classes["cpu"].vllm is None
    assert classes["h100-sxm-x8"].vllm and classes["h100-sxm-x8"].vllm.tensor_parallel_size == 8
    assert all(c.driver_branch and c.cuda_version for c in classes.values() if c.has_gpu)


# Stricter checks: every key known, pins matched whole, the file and line named.


@pytest.mark.parametrize(
    ("old", "new", "key", "suggestion"),
    [
        ('description = "one GPU"', 'descripton = "one GPU"', "g.descripton", "description"),
        ("gpu_count = 2", "gpu_count = 2\ngpus = 2", "g.gpus", None),
        ("threads = 4", "thread = 4", "g.llama_cpp.thread", "threads"),
        ("batch = 512", "batch = 512\nn_gpu_layer = 1", "g.llama_cpp.n_gpu_layer", "n_gpu_layers"),
        ("max_num_seqs = 8", "max_num_seq = 8", "g.vllm.max_num_seq", "max_num_seqs"),
        ('kv_cache_dtype = "auto"', 'kv_cache_type = "fp8"', "g.vllm.kv_cache_type",
         "kv_cache_dtype"),
    ],
    ids=["class", "class-no-match", "llama_cpp", "llama_cpp-added", "vllm", "vllm-default"],
)  # fmt: skip
def test_an_unknown_key_in_any_table_is_refused_with_the_nearest_one(
    tmp_path, old, new, key, suggestion
):
    assert old in GPU_CLASS
    with pytest.raises(ConfigError) as raised:
        load_classes(write(tmp_path, GPU_CLASS.replace(old, new)))
    assert raised.value.key == key
    assert str(tmp_path / "hardware.toml") in str(raised.value)
    table = "[" + key.rsplit(".", 1)[0] + "]"
    assert f"is not a key of {table}" in str(raised.value)
    if suggestion:
        assert f"did you mean `{suggestion}`?" in str(raised.value)
    else:
        assert "did you mean" not in str(raised.value)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('driver_branch = "550"', 'driver_branch = "550\\n"', "g.driver_branch"),
        ('driver_branch = "550"', 'driver_branch = "latest"', "g.driver_branch"),
        ('cuda_version = "12.4"', 'cuda_version = "12.4\\n"', "g.cuda_version"),
        ('cuda_version = "12.4"', 'cuda_version = "12"', "g.cuda_version"),
        ('gpu_model = "G"', 'gpu_model = "G\\n"', "g.gpu_model"),
        ('description = "one GPU"', 'description = "one\\nGPU"', "g.description"),
        ('["-DGGML_CUDA=ON"]', '["-DGGML_CUDA=ON\\n"]', "g.llama_cpp.build_flags"),
        ('["-DGGML_CUDA=ON"]', '["-DGGML_CUDA=ON -DX=1"]', "g.llama_cpp.build_flags"),
        ("gpu_memory_gib = 24", "gpu_memory_gib = true", "g.gpu_memory_gib"),
    ],
    ids=["driver-newline", "driver-word", "cuda-newline", "cuda-major-only", "gpu-model-newline",
         "description-newline", "flag-newline", "two-flags-in-one", "memory-bool"],
)  # fmt: skip
def test_a_pin_is_matched_whole(tmp_path, old, new, key):
    assert old in GPU_CLASS
    with pytest.raises(ConfigError) as raised:
        load_classes(write(tmp_path, GPU_CLASS.replace(old, new)))
    assert raised.value.key == key


@pytest.mark.parametrize("name", ["G", '"g h"', '"g\\n"', '"../g"'])
def test_a_class_name_is_lower_case_letters_digits_and_dots(tmp_path, name):
    text = GPU_CLASS.replace("[g]", f"[{name}]").replace("[g.", f"[{name}.")
    with pytest.raises(ConfigError, match=r"class name .* is not valid"):
        load_classes(write(tmp_path, text))


def test_bad_toml_names_the_line_and_column(tmp_path):
    path = write(tmp_path, GPU_CLASS.replace("threads = 4", "threads = = 4"))
    line = GPU_CLASS.splitlines().index("threads = 4") + 1
    with pytest.raises(ConfigError) as raised:
        load_classes(path)
    assert raised.value.key == "hardware"
    assert f"{path}:{line}:11: is not valid TOML" in str(raised.value)


def test_a_matrix_that_is_not_utf8_or_empty_is_refused(tmp_path):
    path = tmp_path / "hardware.toml"
    path.write_bytes(GPU_CLASS.replace("one GPU", "one GPU \xe9").encode("latin-1"))
    with pytest.raises(ConfigError, match=rf"{path}:2: is not UTF-8"):
        load_classes(path)
    with pytest.raises(ConfigError, match="declares no hardware class"):
        load_classes(write(tmp_path, "# nothing\n"))
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_classes(write(tmp_path, "a = " + "[" * 5000 + "]" * 5000))


def test_the_matrix_file_can_be_named_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMHOST_HARDWARE_FILE", str(write(tmp_path, GPU_CLASS)))
    assert list(load_classes()) == ["g"]
