import urllib.error
import urllib.request
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from llmhost.testing.fakehub import FakeHub
from llmhost.testing.testmodels import sha256_file, write_tiny_gguf, write_tiny_safetensors_model

REPO = "llmhost-tests/tiny-llama"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
OTHER_COMMIT = "f" * 40


@pytest.fixture(autouse=True)
def online_hub_client(monkeypatch):
    """Let huggingface_hub make requests even where HF_HUB_OFFLINE is set.

    huggingface_hub reads its environment when imported, so the variables are
    set for child processes and the parsed constant is patched for this one.
    """
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def source(tmp_path):
    directory = tmp_path / "source"
    files = write_tiny_safetensors_model(directory)
    write_tiny_gguf(directory / "gguf" / "tiny.gguf")
    return directory, [*(str(p) for p in files), "gguf/tiny.gguf"]


@pytest.fixture
def hub(source):
    directory, _ = source
    with FakeHub({REPO: (COMMIT, directory)}) as running:
        yield running


def test_snapshot_at_the_pinned_commit_matches_the_source(tmp_path, source, hub):
    directory, files = source
    snapshot = Path(
        snapshot_download(REPO, revision=COMMIT, endpoint=hub.url, cache_dir=tmp_path / "cache")
    )
    assert snapshot.parts[-2:] == ("snapshots", COMMIT)
    downloaded = [p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*") if p.is_file()]
    assert sorted(downloaded) == sorted(files)
    for name in files:
        assert sha256_file(snapshot / name) == sha256_file(directory / name)
    # Weights are LFS-style: the client stores them under their sha256.
    gguf_sha = sha256_file(directory / "gguf" / "tiny.gguf")
    assert (tmp_path / "cache" / "models--llmhost-tests--tiny-llama" / "blobs" / gguf_sha).is_file()


def test_a_cached_snapshot_is_not_fetched_again(tmp_path, hub):
    snapshot_download(REPO, revision=COMMIT, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert any(r.startswith("GET /api/models/") for r in hub.requests)
    hub.requests.clear()
    snapshot_download(REPO, revision=COMMIT, endpoint=hub.url, cache_dir=tmp_path / "cache")
    assert hub.requests == []


def test_the_main_branch_resolves_to_the_pinned_commit(tmp_path, source, hub):
    directory, _ = source
    path = hf_hub_download(
        REPO, "tokenizer/vocab.txt", revision="main", endpoint=hub.url, cache_dir=tmp_path / "c"
    )
    assert f"snapshots/{COMMIT}/tokenizer/vocab.txt" in path
    assert sha256_file(Path(path)) == sha256_file(directory / "tokenizer" / "vocab.txt")


def test_an_unknown_revision_raises_revision_not_found(tmp_path, hub):
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision=OTHER_COMMIT, endpoint=hub.url, cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(
            REPO, "config.json", revision=OTHER_COMMIT, endpoint=hub.url, cache_dir=tmp_path
        )


def test_an_unknown_repo_raises_repository_not_found(tmp_path, hub):
    with pytest.raises(RepositoryNotFoundError):
        snapshot_download(
            "llmhost-tests/absent", revision=COMMIT, endpoint=hub.url, cache_dir=tmp_path
        )


def test_an_unknown_file_raises_entry_not_found(tmp_path, hub):
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "absent.bin", revision=COMMIT, endpoint=hub.url, cache_dir=tmp_path)


def test_byte_ranges_are_served_for_resumed_downloads(source, hub):
    directory, _ = source
    data = (directory / "config.json").read_bytes()
    url = f"{hub.url}/{REPO}/resolve/{COMMIT}/config.json"
    request = urllib.request.Request(url, headers={"Range": "bytes=10-"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206
        assert response.headers["Content-Range"] == f"bytes 10-{len(data) - 1}/{len(data)}"
        assert response.headers["X-Repo-Commit"] == COMMIT
        assert response.read() == data[10:]
    past_the_end = urllib.request.Request(url, headers={"Range": f"bytes={len(data)}-"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(past_the_end)
    assert refused.value.code == 416


def test_the_hub_listens_on_loopback_only_while_running(source):
    directory, _ = source
    hub = FakeHub({REPO: (COMMIT, directory)})
    with pytest.raises(RuntimeError):
        _ = hub.url
    with hub:
        assert hub.url.startswith("http://127.0.0.1:")
        assert hub.env["HF_ENDPOINT"] == hub.url
        url = hub.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/api/models/{REPO}", timeout=5)


def test_a_revision_must_be_a_full_commit_id(source):
    directory, _ = source
    with pytest.raises(ValueError, match="40-hex"), FakeHub({REPO: ("main", directory)}):
        pass
