"""The model role's plan: the weights a host serves, pulled by digest (no host is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyinfra.api import Inventory
from pyinfra.context import ctx_inventory

from llmhost.errors import ConfigError
from llmhost.secrets import registry_credentials
from roles.base import base
from roles.model import model
from tests.unit.pyinfra_plan import SECRETS_DIR, plan

DIGEST = "sha256:" + "c" * 64
REGISTRIES = ["10.0.0.5:5000", "10.0.0.6:5000"]
MODEL_DIR = f"/var/lib/llmhost/models/tiny@{DIGEST}"
TINY_FILES = {"tiny.gguf": 1000, "tokenizer.json": 24}


def built(manifest: str = DIGEST, files: dict[str, int] | None = None) -> dict:
    """The MaterialisedModel fact of a directory built from ``manifest``."""
    return {"manifest": manifest, "files": TINY_FILES if files is None else files}


def model_file(name: str, *, digest: str | None, min_hardware: str = "cpu", size: int = 1000):
    oci = f'repository = "models/{name}"\n'
    if digest:
        oci += f'registry = "10.0.0.5:5000"\ndigest = "{digest}"\n'
    return f"""\
name = "{name}"
format = "gguf"
license = "apache-2.0"
min_hardware = "{min_hardware}"
runtimes = ["llama.cpp"]

[source]
kind = "local"
path = "/srv/weights/{name}"

[[files]]
path = "{name}.gguf"
size = {size}
sha256 = "{"a" * 64}"

[[files]]
path = "tokenizer.json"
size = 24
sha256 = "{"b" * 64}"

[oci]
{oci}"""


@pytest.fixture(autouse=True)
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog with a mirrored model (tiny), an unmirrored one and one needing an L40S."""
    (tmp_path / "tiny.toml").write_text(model_file("tiny", digest=DIGEST))
    (tmp_path / "unmirrored.toml").write_text(model_file("unmirrored", digest=None))
    (tmp_path / "big.toml").write_text(model_file("big", digest=DIGEST, min_hardware="l40s"))
    monkeypatch.setenv("LLMHOST_MODELS_DIR", str(tmp_path))
    return tmp_path


def host_data(**overrides):
    return {
        "region": "gb-lon1",
        "hardware": "cpu",
        "model_name": "tiny",
        "model_registries": REGISTRIES,
        **overrides,
    }


def commands(planned, prefix):
    return [c for name, cmds in planned.items() if name.startswith(prefix) for c in cmds]


def pull_command(planned) -> str:
    (command,) = commands(planned, "Model tiny (1024 bytes) by digest")
    return command


def test_fresh_host_gets_the_host_side_tools_root_owned():
    planned = plan(model, host_data())
    assert "mkdir -p /usr/local/lib/llmhost" in commands(planned, "llmhost helpers directory")
    tools = commands(planned, "Host-side tools /usr/local/lib/llmhost/onhost.pyz")
    assert any(c.endswith(", /usr/local/lib/llmhost/onhost.pyz)") for c in tools)
    assert "chmod 644 /usr/local/lib/llmhost/onhost.pyz" in tools
    assert "chown root:root /usr/local/lib/llmhost/onhost.pyz" in tools


def test_fresh_host_gets_the_auth_file_readable_only_by_the_service_user():
    auth = commands(plan(model, host_data()), "Registry credentials for pulls")
    assert any(c.endswith(", /etc/llmhost/registry-auth.json)") for c in auth)
    assert "chown llmhost:llmhost /etc/llmhost/registry-auth.json" in auth
    assert "chmod 600 /etc/llmhost/registry-auth.json" in auth


def test_fresh_host_gets_store_and_models_directories_for_the_service_user():
    planned = plan(model, host_data())
    for path in ("/var/lib/llmhost/blobs", "/var/lib/llmhost/models"):
        assert commands(planned, f"{path}: owned by the service user") == [
            f"mkdir -p {path}",
            f"chmod 750 {path}",
            f"chown llmhost:llmhost {path}",
        ]


def test_pull_runs_as_the_service_user_by_digest_from_every_registry_in_order():
    command = pull_command(plan(model, host_data()))
    assert command.startswith(
        "runuser -u llmhost -- python3 /usr/local/lib/llmhost/onhost.pyz pull "
    )
    assert (
        "--registry https://10.0.0.5:5000 --registry https://10.0.0.6:5000 "
        "--repository models/tiny "
        f"--digest {DIGEST} "
        "--store /var/lib/llmhost/blobs "
        f"--dest {MODEL_DIR} "
        "--auth-file /etc/llmhost/registry-auth.json "
        "--ca-file /usr/local/share/ca-certificates/llmhost-ca.crt --jobs 4 --no-progress"
    ) in command


def test_registry_order_is_kept():
    command = pull_command(plan(model, host_data(model_registries=list(reversed(REGISTRIES)))))
    assert command.index("https://10.0.0.6:5000") < command.index("https://10.0.0.5:5000")


def test_pull_jobs_follow_the_setting():
    assert "--jobs 8 " in pull_command(plan(model, host_data(model_pull_jobs=8)))


def test_the_registry_password_is_in_no_command():
    planned = plan(model, host_data())
    password = registry_credentials(Path(SECRETS_DIR)).password
    assert password
    every = [c for cmds in planned.values() for c in cmds]
    assert every
    assert not [c for c in every if password in c]


def test_materialised_model_is_not_pulled_again():
    planned = plan(model, host_data(), {"MaterialisedModel": built()})
    assert commands(planned, "Model tiny (1024 bytes) by digest") == []
    assert "Model tiny (1024 bytes) by digest" in planned


def test_directory_built_from_another_manifest_is_pulled():
    other = "sha256:" + "d" * 64
    planned = plan(model, host_data(), {"MaterialisedModel": built(other)})
    assert f"--digest {DIGEST}" in pull_command(planned)


@pytest.mark.parametrize(
    "files",
    [{"tiny.gguf": 1000}, {"tiny.gguf": 999, "tokenizer.json": 24}],
    ids=["file-deleted", "file-truncated"],
)
def test_a_damaged_model_directory_is_pulled_again(files):
    planned = plan(model, host_data(), {"MaterialisedModel": built(files=files)})
    assert f"--digest {DIGEST}" in pull_command(planned)


def test_materialised_manifest_is_asked_of_the_digest_directory():
    asked = []

    def materialised(directory):
        asked.append(directory)
        return built(manifest=None, files={})

    plan(model, host_data(), {"MaterialisedModel": materialised})
    assert set(asked) == {MODEL_DIR}


def test_unmirrored_model_tells_how_to_mirror_it():
    with pytest.raises(ConfigError, match="host host1: key `model_name`") as raised:
        plan(model, host_data(model_name="unmirrored"))
    assert "has no OCI digest yet" in str(raised.value)
    assert "llmhost models mirror unmirrored" in str(raised.value)


def test_unknown_model_lists_the_catalog():
    with pytest.raises(
        ConfigError, match="host host1: key `model_name`: no model 'huge'"
    ) as raised:
        plan(model, host_data(model_name="huge"))
    assert "(models: big, tiny, unmirrored)" in str(raised.value)


def test_model_bigger_than_the_host_class_is_refused():
    with pytest.raises(ConfigError, match="host host1: key `model_name`") as raised:
        plan(model, host_data(model_name="big"))
    assert "model big needs at least a l40s (1 x 48 GiB); this host is a cpu" in str(raised.value)


def test_model_fits_a_big_enough_host():
    planned = plan(model, host_data(model_name="big", hardware="h100-pcie"))
    assert commands(planned, "Model big (1024 bytes) by digest")


def test_model_larger_than_the_free_space_is_refused():
    with pytest.raises(ConfigError, match="host host1: key `model_name`") as raised:
        plan(model, host_data(), {"FreeBytes": 1023})
    assert "model tiny needs 1024 more bytes; /var/lib/llmhost has 1023 free" in str(raised.value)
    assert "free space" in str(raised.value)


def test_model_that_fits_the_free_space_is_pulled():
    assert pull_command(plan(model, host_data(), {"FreeBytes": 1024}))


def test_materialised_model_needs_no_free_space():
    stored = {"a" * 64, "b" * 64}
    planned = plan(
        model,
        host_data(),
        {"FreeBytes": 0, "StoredBlobs": stored, "MaterialisedModel": built()},
    )
    assert commands(planned, "Model tiny (1024 bytes) by digest") == []


def test_only_blobs_missing_from_the_store_need_free_space():
    planned = plan(model, host_data(), {"FreeBytes": 24, "StoredBlobs": {"a" * 64}})
    assert f"--digest {DIGEST}" in pull_command(planned)


def in_inventory(inventory: Inventory):
    """The model deploy with ``pyinfra.inventory`` set (plan() sets only state and host)."""

    def deploy():
        with ctx_inventory.use(inventory):
            model()

    return deploy


def test_no_registries_and_no_registry_group_is_refused():
    without_group = Inventory((["host1"], {}))
    with pytest.raises(ConfigError, match="host host1: key `model_registries`") as raised:
        plan(in_inventory(without_group), host_data(model_registries=[]))
    assert "no `registry` group" in str(raised.value)


def test_without_registries_the_registry_group_is_used_in_order():
    registries = [
        ("reg1", {"ssh_hostname": "10.0.0.5"}),
        ("reg2", {"registry_address": "reg2.internal", "registry_port": 5443}),
    ]
    with_group = Inventory((["host1", *registries], {}), registry=(["reg1", "reg2"], {}))
    command = pull_command(plan(in_inventory(with_group), host_data(model_registries=[])))
    assert "--registry https://10.0.0.5:5000 --registry https://reg2.internal:5443 " in command


def test_unset_model_name_is_refused():
    data = host_data()
    del data["model_name"]
    with pytest.raises(ConfigError, match="key `model_name`: is unset"):
        plan(model, data)


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"model_registries": "10.0.0.5:5000"}, "model_registries"),
        ({"model_pull_jobs": "4"}, "model_pull_jobs"),
        ({"model_name": 7}, "model_name"),
    ],
)
def test_bad_types_name_the_key(data, key):
    with pytest.raises(ConfigError, match=f"key `{key}`: expected"):
        plan(model, host_data(**data))


def test_zero_downloads_in_parallel_is_refused():
    with pytest.raises(ConfigError, match="key `model_pull_jobs`: 0 is below 1"):
        plan(model, host_data(model_pull_jobs=0))


def test_auth_file_never_hands_the_config_dir_to_the_service_user():
    def site():
        base()
        model()

    planned = plan(site, host_data())
    assert "chown llmhost:llmhost /etc/llmhost" not in commands(
        planned, "Registry credentials for pulls"
    )
