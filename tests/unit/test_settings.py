from dataclasses import dataclass

import pytest

from llmhost.errors import ConfigError
from llmhost.settings import from_data, reference_markdown, setting


@dataclass(frozen=True)
class ExampleSettings:
    example_port: int = setting(8000, "Port it listens on")
    example_hosts: list[str] = setting(["a"], "Hosts it talks to")
    example_proxy: str | None = setting(None, "Optional proxy")
    example_enabled: bool = setting(True, "Whether it runs")


def test_defaults_apply_when_keys_are_absent():
    settings = from_data(ExampleSettings, {})
    assert settings == ExampleSettings(8000, ["a"], None, True)


def test_list_defaults_are_not_shared_between_instances():
    first = from_data(ExampleSettings, {})
    first.example_hosts.append("b")
    assert from_data(ExampleSettings, {}).example_hosts == ["a"]


def test_host_data_overrides_defaults_and_tuples_become_lists():
    settings = from_data(
        ExampleSettings, {"example_port": 9000, "example_hosts": ("x", "y"), "other": 1}
    )
    assert settings.example_port == 9000
    assert settings.example_hosts == ["x", "y"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("example_port", "8000"),
        ("example_port", True),
        ("example_hosts", "a,b"),
        ("example_hosts", [1]),
        ("example_enabled", "yes"),
        ("example_proxy", 3128),
    ],
)
def test_wrong_types_name_the_key_the_host_and_the_fix(key, value):
    with pytest.raises(ConfigError) as raised:
        from_data(ExampleSettings, {key: value}, host="web1")
    message = str(raised.value)
    assert message.startswith(f"host web1: key `{key}`: expected ")
    assert "Fix: set" in message


def test_reference_lists_every_field_with_default_and_doc():
    table = reference_markdown(ExampleSettings)
    assert "| `example_port` | `int` | `8000` | Port it listens on |" in table
    assert "| `example_proxy` | `str \\| None` | unset | Optional proxy |" in table
    assert len(table.splitlines()) == 2 + 4
