"""The runtime role's plan: what is staged, where, and what is refused (no host is contacted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmhost.catalog import ModelFile
from llmhost.errors import ConfigError
from llmhost.hardware import load_classes
from llmhost.onhost.layout import ONHOST_APP
from llmhost.render import render
from llmhost.runtimes import (
    LlamaCppBuild,
    VllmWheels,
    load_sources,
    record_build,
    record_vllm_wheels,
    sha256_file,
)
from roles.runtime import runtime
from roles.runtime.defaults import env_file, llama_cpp_binary
from roles.runtime.engines import llama_cpp_release, vllm_release
from roles.runtime.operations import vllm_install_script
from tests.unit.pyinfra_plan import plan
from tests.unit.test_model_role import DIGEST, host_data, model_file

BUILD_DIGEST = "sha256:" + "e" * 64
SERVER_SHA = "1" * 64


@pytest.fixture(autouse=True)
def catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny.toml").write_text(model_file("tiny", digest=DIGEST))
    (models / "st.toml").write_text(
        model_file("st", digest=DIGEST)
        .replace('format = "gguf"', 'format = "safetensors"')
        .replace('runtimes = ["llama.cpp"]', 'runtimes = ["vllm"]')
        .replace('path = "st.gguf"', 'path = "model.safetensors"')
    )
    monkeypatch.setenv("LLMHOST_MODELS_DIR", str(models))
    builds = tmp_path / "runtime-builds.toml"
    monkeypatch.setenv("LLMHOST_RUNTIME_BUILDS", str(builds))
    monkeypatch.setenv("LLMHOST_VLLM_WHEELS", str(tmp_path / "vllm-wheels.toml"))
    files = (
        ModelFile("llama-server", 100, SERVER_SHA),
        ModelFile("llama-bench", 50, "2" * 64),
        ModelFile("build.json", 10, "3" * 64),
    )
    record_build(LlamaCppBuild("cpu", BUILD_DIGEST, files), builds)
    return models


def active_state(colour="blue", release_id="x"):
    return {"active": colour, "colours": {colour: {"id": release_id}}, "history": []}


def the_release(**data):
    classes = load_classes()
    from llmhost.catalog import find

    return llama_cpp_release(
        find("tiny"), classes["cpu"], llama_cpp_binary(BUILD_DIGEST), "tiny", data.get("extra", [])
    )


def test_a_first_release_is_staged_on_blue_checked_started_made_ready_and_recorded():
    planned = plan(runtime, host_data())
    names = list(planned)
    staged = [n for n in names if n.startswith("blue:")]
    assert staged == [
        f"blue: release {the_release().id}",
        "blue: no stop pending from an earlier rollback window",
        f"blue: start release {the_release().id} on port 8001",
        "blue: ready (/health 200 and a one-token completion)",
        f"blue: record release {the_release().id} in /var/lib/llmhost/state.json",
    ]
    check = planned["Model tiny is materialised for blue"][0]
    assert f"check-model --dir /var/lib/llmhost/models/tiny@{DIGEST} --digest {DIGEST}" in check
    assert names.index("Model tiny is materialised for blue") < names.index(staged[0])
    assert "--activate" not in planned[staged[4]][0], "only a cutover makes a colour serve"
    assert not any(n.startswith("green") for n in names)


def test_the_binary_is_pulled_by_digest_and_copied_out_root_owned_with_its_hash_checked():
    planned = plan(runtime, host_data())
    pull = planned["llama.cpp build for cpu by digest"][0]
    assert f"--digest {BUILD_DIGEST}" in pull
    assert "--repository llmhost/runtimes/llama-cpp" in pull
    assert f"--dest /var/lib/llmhost/runtimes/llama.cpp@{BUILD_DIGEST}" in pull
    (install,) = [
        c for n, cmds in planned.items() if n.startswith("llama-server installed") for c in cmds
    ]
    assert "install -o root -g root -m 0755" in install
    assert f"echo '{SERVER_SHA}  {llama_cpp_binary(BUILD_DIGEST)}.new' | sha256sum" in install


def test_an_installed_binary_with_the_right_hash_is_left_alone():
    planned = plan(runtime, host_data(), facts={"Sha256File": SERVER_SHA})
    server = [cmds for n, cmds in planned.items() if n.startswith("llama-server installed")]
    assert server == [[]]


def test_a_release_already_active_stages_nothing():
    planned = plan(
        runtime, host_data(), facts={"HostState": active_state("blue", the_release().id)}
    )
    assert not any(n.startswith(("blue:", "green:", "Model tiny")) for n in planned)


def test_a_new_release_goes_to_the_idle_colour_and_never_touches_the_active_one():
    planned = plan(runtime, host_data(), facts={"HostState": active_state("blue", "old")})
    assert f"green: start release {the_release().id} on port 8002" in planned
    assert not any(n.startswith("blue") for n in planned)
    record = planned[f"green: record release {the_release().id} in /var/lib/llmhost/state.json"]
    assert "--colour green" in record[0]


def test_a_release_staged_on_a_running_idle_colour_waits_for_cutover():
    state = {
        "active": "blue",
        "colours": {"blue": {"id": "old"}, "green": {"id": the_release().id}},
    }
    planned = plan(runtime, host_data(), facts={"HostState": state, "UnitActive": True})
    assert not any(n.startswith("green:") for n in planned)
    stopped = plan(runtime, host_data(), facts={"HostState": state, "UnitActive": False})
    assert any(n.startswith("green: start") for n in stopped)


def test_llama_server_arguments_come_from_the_hardware_class():
    release = the_release(extra=["--temp", "0"])
    cpu = load_classes()["cpu"].llama_cpp
    line = release.command_line(8002)
    pairs = dict(zip(line[::2], line[1::2], strict=False))
    assert pairs["--threads"] == str(cpu.threads)
    assert pairs["--ctx-size"] == str(cpu.ctx_size)
    assert pairs["--parallel"] == str(cpu.parallel)
    assert pairs["--host"] == "127.0.0.1"
    assert line[-4:] == ["--temp", "0", "--port", "8002"]
    assert "--metrics" in line
    assert "--log-jsonl" in line, "JSON lines in the journal"
    assert release.id != the_release().id, "a changed argument is a new release"


def test_the_env_file_carries_the_release_and_the_port_of_its_colour():
    text = render("runtime/runtime.env.j2", colour="green", release=the_release(), port=8002)
    assert f"LLMHOST_RELEASE={the_release().id}\n" in text
    assert "LLMHOST_RUNTIME_PORT=8002\n" in text
    assert f"LLMHOST_RUNTIME_EXEC={llama_cpp_binary(BUILD_DIGEST)}\n" in text
    assert "--port 8002\n" in text


@pytest.mark.parametrize(("gpu", "jit"), [(False, False), (True, True)])
def test_the_unit_is_hardened_and_drains_before_it_stops(gpu, jit):
    text = render("runtime/llmhost-runtime@.service.j2", runtime_user="llmhost-runtime",
                  model_group="llmhost", runtimectl=f"{ONHOST_APP} runtimectl",
                  env_file=env_file("%i"), drain_timeout=30, gpu=gpu, jit=jit)  # fmt: skip
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "User=llmhost-runtime",
                 "Restart=on-failure", "IPAddressDeny=any", "CapabilityBoundingSet="):  # fmt: skip
        assert f"\n{line}\n" in text
    assert "ExecStop=/usr/bin/python3 /usr/local/lib/llmhost/onhost.pyz runtimectl drain" in text
    assert "\nEnvironmentFile=/etc/llmhost/runtime-%i.env\n" in text
    assert "TimeoutStopSec=60" in text
    assert ("PrivateDevices=yes" in text) is not gpu
    assert ("DeviceAllow=char-nvidia-frontend rw" in text) is gpu
    assert ("MemoryDenyWriteExecute=yes" in text) is not jit
    assert "ReadWritePaths" not in text, "the engine writes only its CacheDirectory"
    assert "\nSyslogIdentifier=llmhost-runtime-%i\nLogExtraFields=LLMHOST_COLOUR=%i\n" in text


def test_vllm_installs_from_the_hashed_lock_and_serves_with_the_class_settings(catalog):
    host = host_data(hardware="l40s", model_name="st")
    planned = plan(runtime, host)
    pin = load_sources().vllm
    install = planned[f"vLLM {pin.version} in /opt/llmhost/vllm/{pin.version} from the index"][0]
    assert "--require-hashes" in install and "--no-deps" in install
    assert "--no-index" not in install, "no wheels published: the index, through the proxy"
    assert f"-r /opt/llmhost/vllm/{pin.version}.lock.txt" in install
    assert install.index("import vllm") < install.index(".llmhost-lock-sha256")
    assert f"vLLM {pin.version} lock (every distribution hashed)" in planned
    from llmhost.catalog import find

    l40s = load_classes()["l40s"]
    release = vllm_release(find("st"), l40s, pin.version, "st", [])
    line = release.command_line(8001)
    assert line[:2] == ["serve", f"/var/lib/llmhost/models/st@{DIGEST}"]
    assert line[line.index("--tensor-parallel-size") + 1] == str(l40s.vllm.tensor_parallel_size)
    assert line[line.index("--max-model-len") + 1] == str(l40s.vllm.max_model_len)
    assert release.executable == f"/opt/llmhost/vllm/{pin.version}/bin/vllm"
    assert ("HF_HUB_OFFLINE", "1") in release.environment
    # Its log records as JSON lines: the config file, and the formatter from the archive.
    assert ("VLLM_LOGGING_CONFIG_PATH", "/opt/llmhost/vllm/logging.json") in release.environment
    assert ("PYTHONPATH", ONHOST_APP) in release.environment
    assert "vLLM: its log records as JSON lines (logging config)" in planned


def published_wheels(tmp_path: Path, lock_sha256: str | None = None) -> VllmWheels:
    pin = load_sources().vllm
    wheels = VllmWheels(
        pin.version,
        lock_sha256 or sha256_file(pin.lock),
        "sha256:" + "c" * 64,
        (ModelFile("vllm-1-py3-none-any.whl", 7, "4" * 64),),
    )
    record_vllm_wheels(wheels, tmp_path / "vllm-wheels.toml")
    return wheels


def test_published_wheels_are_pulled_by_digest_and_installed_with_no_index(catalog, tmp_path):
    wheels = published_wheels(tmp_path)
    planned = plan(runtime, host_data(hardware="l40s", model_name="st"))
    pin = load_sources().vllm
    pulled_to = f"/var/lib/llmhost/runtimes/vllm-wheels@{wheels.digest}"
    pull = planned[f"vLLM {pin.version} wheels by digest"]
    assert any(wheels.digest in c and pin.repository in c for c in pull), pull
    name = f"vLLM {pin.version} in /opt/llmhost/vllm/{pin.version} from the registry's wheels"
    install = planned[name][0]
    assert f"--no-index --find-links {pulled_to} --require-hashes" in install
    names = list(planned)
    assert names.index(f"vLLM {pin.version} wheels by digest") < names.index(name)


def test_wheels_of_another_lock_are_refused_before_anything_is_planned(catalog, tmp_path):
    published_wheels(tmp_path, lock_sha256="0" * 64)
    with pytest.raises(ConfigError) as raised:
        plan(runtime, host_data(hardware="l40s", model_name="st"))
    assert raised.value.key == "vllm.lock" and "publish-vllm" in raised.value.fix


def test_every_shipped_gpu_class_plans_a_vllm_unit(catalog):
    for name, hardware in load_classes().items():
        if hardware.vllm is None:
            continue
        data = host_data(hardware=name, model_name="st", runtime_engine="vllm")
        planned = plan(runtime, data)
        assert any(n.startswith("blue: start release") for n in planned), name


def test_vllm_install_is_one_chain_that_reads_the_hosts_proxy():
    script = vllm_install_script("/opt/llmhost/vllm/1.0", "/opt/l.txt", "ab" * 32, "/etc/e.env")
    assert script.startswith("rm -rf /opt/llmhost/vllm/1.0 && python3 -m venv")
    assert ". /etc/e.env" in script
    assert script.endswith("> /opt/llmhost/vllm/1.0/.llmhost-lock-sha256")


@pytest.mark.parametrize(
    ("data", "key", "problem"),
    [
        ({"hardware": "tpu"}, "hardware", "'tpu' is not a class"),
        ({"model_name": "st"}, "runtime_engine", "llama.cpp cannot serve model st"),
        ({"runtime_engine": "tgi"}, "runtime_engine", "'tgi' is not a runtime"),
        ({"runtime_engine": "vllm"}, "runtime_engine", "lists runtimes llama.cpp, not vllm"),
        (
            {"runtime_engine": "vllm", "model_name": "st"},
            "runtime_engine",
            "class cpu has no [vllm] settings",
        ),
        (
            {"runtime_ports": {"blue": 8001, "green": 8001}},
            "runtime_ports.blue",
            "8001 is also `runtime_ports.green`'s port",
        ),
        ({"runtime_ports": {"blue": 22, "green": 8002}}, "runtime_ports.blue", "base_ssh_port"),
        ({"runtime_ports": {"blue": 8001}}, "runtime_ports", "names ['blue']"),
        ({"runtime_ports": {"blue": 0, "green": 8002}}, "runtime_ports.blue", "not a TCP port"),
        ({"runtime_ready_timeout_s": 0}, "runtime_ready_timeout_s", "is below 1"),
        ({"model_name": None}, "model_name", "is unset"),
        ({"model_name": "ghost"}, "model_name", "ghost"),
    ],
)
def test_bad_inputs_are_refused_before_anything_is_planned(data, key, problem):
    values = host_data(**data)
    values = {k: v for k, v in values.items() if v is not None}
    with pytest.raises(ConfigError) as raised:
        plan(runtime, values)
    assert raised.value.key == key
    assert problem in str(raised.value)
    assert raised.value.host == "host1"


def test_a_class_without_a_recorded_build_says_how_to_build_one(monkeypatch, tmp_path):
    monkeypatch.setenv("LLMHOST_RUNTIME_BUILDS", str(tmp_path / "none.toml"))
    with pytest.raises(ConfigError, match="llmhost runtimes build --class cpu"):
        plan(runtime, host_data())


def test_an_unreadable_state_file_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match="move it away"):
        plan(runtime, host_data(), facts={"HostState": {"unreadable": "not JSON"}})


def test_a_registry_host_cannot_give_a_colour_the_registry_port():
    with pytest.raises(ConfigError, match="registry_port"):
        plan(
            runtime,
            host_data(runtime_ports={"blue": 8001, "green": 5000}, gateway_port=8000),
            facts={},
            groups=["registry"],
        )


def test_a_restart_schedule_installs_a_timer_per_colour_and_no_schedule_removes_them():
    planned = plan(runtime, host_data(runtime_restart_schedule="Mon *-*-* 04:00:00"))
    timer = [n for n in planned if n.startswith("Scheduled restart: llmhost-runtime-restart@")]
    assert timer == [
        "Scheduled restart: llmhost-runtime-restart@.service",
        "Scheduled restart: llmhost-runtime-restart@.timer",
        "Scheduled restart: llmhost-runtime-restart@blue.timer on (Mon *-*-* 04:00:00)",
        "Scheduled restart: llmhost-runtime-restart@green.timer on (Mon *-*-* 04:00:00)",
    ]
    text = render("runtime/restart.timer.j2", schedule="Mon *-*-* 04:00:00")
    assert "OnCalendar=Mon *-*-* 04:00:00\n" in text
    assert "try-restart" in render("runtime/restart.service.j2")
    without = plan(runtime, host_data())
    assert "No scheduled restart: no llmhost-runtime-restart@.timer" in without
