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
