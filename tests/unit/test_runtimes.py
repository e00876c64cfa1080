"""Runtime pins: the sources file, recorded builds, verified downloads and the vLLM lock."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmhost.catalog import ModelFile
from llmhost.errors import ConfigError
from llmhost.hardware import load_classes
from llmhost.runtimes import (
    BASE_FLAGS,
    LlamaCppBuild,
    VllmPin,
    VllmWheels,
    build_flags,
    current_vllm_wheels,
    download_verified,
    load_builds,
    load_sources,
    load_vllm_wheels,
    lock_from_report,
    record_build,
    record_vllm_wheels,
    vllm_download_command,
    vllm_resolve_command,
    wheel_files,
)


def test_the_shipped_sources_pin_an_archive_and_a_lock_that_exists():
    sources = load_sources()
    assert len(sources.llama_cpp.sha256) == 64
    assert sources.llama_cpp.url.startswith("https://")
    assert sources.vllm.lock.exists()
    lock = sources.vllm.lock.read_text()
    assert f"vllm=={sources.vllm.version} \\\n    --hash=sha256:" in lock
    requirements = [line for line in lock.splitlines() if "==" in line]
    hashes = [line for line in lock.splitlines() if "--hash=sha256:" in line]
    assert len(requirements) == len(hashes) > 50, "every distribution carries its hash"


def test_a_bad_source_pin_names_the_key(tmp_path: Path):
    text = (
        (load_sources().definition).read_text().replace('source_sha256 = "', 'source_sha256 = "x')
    )
    (tmp_path / "runtimes.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"key `llama_cpp\.source_sha256`"):
        load_sources(tmp_path / "runtimes.toml")


def test_builds_round_trip_and_recording_one_class_keeps_the_others(tmp_path: Path):
    path = tmp_path / "builds.toml"
    files = (ModelFile("llama-server", 10, "a" * 64), ModelFile("build.json", 2, "b" * 64))
    record_build(LlamaCppBuild("cpu", "sha256:" + "1" * 64, files), path)
    record_build(LlamaCppBuild("l40s", "sha256:" + "2" * 64, files), path)
    record_build(LlamaCppBuild("cpu", "sha256:" + "3" * 64, files), path)
    builds = load_builds(path)
    assert builds["cpu"].digest == "sha256:" + "3" * 64
    assert builds["l40s"].files == files
    assert load_builds(tmp_path / "absent.toml") == {}


def test_every_build_is_static_and_offline_and_adds_the_class_flags():
    classes = load_classes()
    cpu = build_flags(classes["cpu"])
    assert cpu[: len(BASE_FLAGS)] == list(BASE_FLAGS)
    assert "-DLLAMA_CURL=OFF" in cpu and "-DGGML_CUDA=ON" not in cpu
    assert "-DGGML_CUDA=ON" in build_flags(classes["l40s"])


@pytest.fixture
def files_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "served"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def test_a_download_is_kept_only_when_its_hash_matches(files_server, tmp_path: Path):
    url, root = files_server
    (root / "src.tar.gz").write_bytes(b"source bytes")
    good = hashlib.sha256(b"source bytes").hexdigest()
    dest = tmp_path / "cache" / "src.tar.gz"
    with pytest.raises(ConfigError, match="not the pinned"):
        download_verified(f"{url}/src.tar.gz", "0" * 64, dest)
    assert not dest.exists() and not dest.with_name("src.tar.gz.partial").exists()
    assert download_verified(f"{url}/src.tar.gz", good, dest).read_bytes() == b"source bytes"


def test_the_lock_pins_every_distribution_pip_chose_with_its_hash():
    report = {
        "install": [
            {"metadata": {"name": "vllm", "version": "1.0"},
             "download_info": {"archive_info": {"hashes": {"sha256": "a" * 64}}}},
            {"metadata": {"name": "Torch", "version": "2.0"},
             "download_info": {"archive_info": {"hashes": {"sha256": "b" * 64}}}},
        ]
    }  # fmt: skip
    lock = lock_from_report(report, "1.0")
    assert f"torch==2.0 \\\n    --hash=sha256:{'b' * 64}" in lock
    assert f"vllm==1.0 \\\n    --hash=sha256:{'a' * 64}" in lock
    del report["install"][1]["download_info"]["archive_info"]
    with pytest.raises(ConfigError, match="no sha256 for Torch"):
        lock_from_report(report, "1.0")


def test_the_resolver_runs_for_the_hosts_python_and_platform(tmp_path: Path):
    command = vllm_resolve_command("1.0", tmp_path / "r.json", "https://pypi.org/simple")
    assert command[-1] == "vllm==1.0"
    assert "--only-binary=:all:" in command and "--dry-run" in command
    assert command[command.index("--python-version") + 1] == "3.11"
    assert "manylinux_2_28_x86_64" in command


def test_the_wheels_are_downloaded_by_their_hashes_for_the_hosts_python_and_platform(
    tmp_path: Path,
):
    command = vllm_download_command(tmp_path / "lock.txt", tmp_path / "w", "https://i/simple")
    assert command[3:5] == ["download", "--no-deps"]
    assert "--require-hashes" in command and "--only-binary=:all:" in command
    assert command[command.index("-r") + 1] == str(tmp_path / "lock.txt")
    assert command[command.index("--python-version") + 1] == "3.11"
    assert command[command.index("--index-url") + 1] == "https://i/simple"
    assert "manylinux_2_28_x86_64" in command


def test_published_wheels_round_trip_and_a_broken_record_names_the_key(tmp_path: Path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "b-1-py3-none-any.whl").write_bytes(b"bb")
    (tmp_path / "w" / "a-1-py3-none-any.whl").write_bytes(b"a")
    files = wheel_files(tmp_path / "w")
    assert [(f.path, f.size) for f in files] == [
        ("a-1-py3-none-any.whl", 1),
        ("b-1-py3-none-any.whl", 2),
    ]
    wheels = VllmWheels("1.0", "d" * 64, "sha256:" + "e" * 64, files)
    path = tmp_path / "vllm-wheels.toml"
    record_vllm_wheels(wheels, path)
    assert load_vllm_wheels(path) == wheels
    assert load_vllm_wheels(tmp_path / "absent.toml") is None
    path.write_text(path.read_text().replace('digest = "sha256:', 'digest = "md5:'))
    with pytest.raises(ConfigError, match=r"key `vllm-wheels\.digest`"):
        load_vllm_wheels(path)


def test_wheels_count_only_for_the_lock_they_were_made_from(tmp_path, monkeypatch):
    lock = tmp_path / "vllm-1.0.txt"
    lock.write_text("vllm==1.0 \\\n    --hash=sha256:" + "f" * 64 + "\n")
    pin = VllmPin("1.0", lock, "llmhost/runtimes/vllm")
    monkeypatch.setenv("LLMHOST_VLLM_WHEELS", str(tmp_path / "vllm-wheels.toml"))
    assert current_vllm_wheels(pin) is None, "none published: hosts use the index"
    files = (ModelFile("vllm-1.0-py3-none-any.whl", 1, "a" * 64),)
    made = VllmWheels(
        "1.0", hashlib.sha256(lock.read_bytes()).hexdigest(), "sha256:" + "e" * 64, files
    )
    record_vllm_wheels(made)
    assert current_vllm_wheels(pin) == made
    lock.write_text(lock.read_text() + "# locked again\n")
    with pytest.raises(ConfigError, match="publish the pinned lock's wheels"):
        current_vllm_wheels(pin)


# Stricter checks: every key known, pins matched whole, paths kept inside.

SHIPPED = (Path(__file__).resolve().parents[2] / "inventories" / "runtimes.toml").read_text()


def sources_error(tmp_path: Path, old: str, new: str) -> ConfigError:
    assert old in SHIPPED, old
    path = tmp_path / "runtimes.toml"
    path.write_text(SHIPPED.replace(old, new, 1))
    with pytest.raises(ConfigError) as raised:
        load_sources(path)
    return raised.value


@pytest.mark.parametrize(
    ("old", "new", "key", "suggestion"),
    [
        ("source_sha256 =", "source_sha265 =", "llama_cpp.source_sha265", "source_sha256"),
        ("lock =", "lokc =", "vllm.lokc", "lock"),
        ("\n[vllm]\n", "\n[vlm]\n", "vlm", "vllm"),
        ("\n[llama_cpp]\n", "\n[llama_cpp]\nbuild_flags = []\n", "llama_cpp.build_flags", None),
    ],
    ids=["llama_cpp", "vllm", "top-level", "no-near-match"],
)
def test_an_unknown_key_in_the_sources_is_refused_with_the_nearest_one(
    tmp_path, old, new, key, suggestion
):
    error = sources_error(tmp_path, old, new)
    assert error.key == key and "is not a key of" in str(error)
    assert str(tmp_path / "runtimes.toml") in str(error)
    if suggestion:
        assert f"did you mean `{suggestion}`?" in str(error)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ('a2e"', 'a2e\\n"', "llama_cpp.source_sha256"),
        ('.tar.gz"', '.tar.gz\\n"', "llama_cpp.source_url"),
        ('url = "https://', 'url = "http://', "llama_cpp.source_url"),
        ('/vendor/llama.cpp"', '/vendor/llama.cpp\\n"', "llama_cpp.source_subdir"),
        ('subdir = "', 'subdir = "../', "llama_cpp.source_subdir"),
        ('subdir = "', 'subdir = "/', "llama_cpp.source_subdir"),
        ('llama-cpp"', 'llama-cpp\\n"', "llama_cpp.repository"),
        ('version = "0.10.1.1"', 'version = "0.10.1.1\\n"', "vllm.version"),
        ('version = "0.10.1.1"', 'version = "latest"', "vllm.version"),
        ('lock = "inventories', 'lock = "/etc/inventories', "vllm.lock"),
        ('lock = "inventories', 'lock = "../inventories', "vllm.lock"),
        ('.1.1.txt"', '.1.1.txt\\n"', "vllm.lock"),
        ('.1.1.txt"', '.1.1.tar"', "vllm.lock"),
    ],
    ids=["sha256-newline", "url-newline", "url-http", "subdir-newline", "subdir-dotdot",
         "subdir-absolute", "repository-newline", "version-newline", "version-word",
         "lock-absolute", "lock-dotdot", "lock-newline", "lock-not-txt"],
)  # fmt: skip
def test_a_source_pin_is_matched_whole_and_stays_inside(tmp_path, old, new, key):
    assert sources_error(tmp_path, old, new).key == key


def test_a_recorded_build_that_is_broken_is_refused_naming_the_key(tmp_path: Path):
    path = tmp_path / "builds.toml"
    entry = f'{{ path = "llama-server", size = 1, sha256 = "{"a" * 64}" }}'
    good = f'[cpu]\ndigest = "sha256:{"1" * 64}"\nfiles = [{entry}]\n'
    assert load_builds(path.parent / "none.toml") == {}
    for old, new, key in [
        ("size = 1", 'size = "1"', "cpu.files[0].size"),
        ("path = ", "paht = ", "cpu.files[0].paht"),
        ('"llama-server"', '"../llama-server"', "cpu.files[0].path"),
        (f'{"a" * 64}"', f'{"a" * 64}\\n"', "cpu.files[0].sha256"),
        ("digest =", "digets =", "cpu.digets"),
    ]:
        path.write_text(good.replace(old, new))
        with pytest.raises(ConfigError) as raised:
            load_builds(path)
        assert raised.value.key == key, (old, new)
    path.write_text(good)
    assert load_builds(path)["cpu"].files[0].path == "llama-server"


def test_a_sources_table_that_is_missing_or_not_a_table_is_refused(tmp_path: Path):
    path = tmp_path / "runtimes.toml"
    without_vllm = SHIPPED[: SHIPPED.index("\n[vllm]\n")]
    for text, problem in [
        (without_vllm, "is missing"),
        ("vllm = 1\n" + without_vllm, "not a table"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError) as raised:
            load_sources(path)
        assert raised.value.key == "vllm" and problem in str(raised.value)
