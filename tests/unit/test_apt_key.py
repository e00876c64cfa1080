"""An APT repository's key trusted through its pinned fingerprint (roles._common.operations
``apt_key_trusted``): the real script, run here against key files made for the test, and the
keyring fact read back from what it wrote. The roles' own tests check that each passes its
URL, fingerprint, keyring and wording."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from roles._common.facts import KeyringFingerprints
from roles._common.operations import apt_key_script

OWNER = "Example"
UNREACHABLE = "Set example_apt_mirror."
ROTATED = "Check Example's announcement."
ABSENT = "0123456789ABCDEF0123456789ABCDEF01234567"  # a fingerprint no file here carries

needs_gpg = pytest.mark.skipif(
    shutil.which("gpg") is None or not Path("/usr/lib/apt/apt-helper").exists(),
    reason="gpg and APT's apt-helper are needed to run the key check (Debian: gpg, apt)",
)


def gpg(home: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--passphrase", "", *arguments],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def new_key(home: Path, name: str, *extra: str, expire: str = "never") -> str:
    gpg(
        home,
        *extra,
        "--quick-gen-key",
        f"{name} <{name}@example.invalid>",
        "ed25519",
        "sign",
        expire,
    )
    listing = gpg(home, "--with-colons", "--list-keys", f"{name}@example.invalid").stdout
    return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, Any]:
    """Two key files, each key made here (a real one cannot be: its fingerprint is pinned):

    - ``bundle``, like apt.grafana.com/gpg.key: the current key (with an encryption subkey)
      beside a revoked one and an expired one;
    - ``single``, like NVIDIA's 3bf863cc.pub: one key alone.
    """
    root = tmp_path_factory.mktemp("keys")
    home = root / "gnupg"
    home.mkdir(mode=0o700)
    current = new_key(home, "current")
    gpg(home, "--quick-add-key", current, "cv25519", "encr", "never")
    revoked = new_key(home, "revoked")
    revocation = (home / "openpgp-revocs.d" / f"{revoked}.rev").read_text()
    (root / "revoke.asc").write_text(revocation.replace(":-----BEGIN", "-----BEGIN"))
    gpg(home, "--import", str(root / "revoke.asc"))
    expired = new_key(home, "expired", "--faked-system-time", "20200101T000000", expire="1d")
    bundle = root / "gpg.key"
    bundle.write_text(gpg(home, "--armor", "--export").stdout)
    single_home = root / "single-gnupg"
    single_home.mkdir(mode=0o700)
    single = new_key(single_home, "single")
    (root / "single.pub").write_text(gpg(single_home, "--armor", "--export").stdout)
    for used in (home, single_home):
        subprocess.run(["gpgconf", "--homedir", str(used), "--kill", "gpg-agent"], check=False)
    return {"root": root, "url": bundle.as_uri(), "current": current, "revoked": revoked,
            "expired": expired, "single_url": (root / "single.pub").as_uri(),
            "single": single}  # fmt: skip


def trust(url: str, fingerprint: str, keyring: Path) -> subprocess.CompletedProcess[str]:
    script = apt_key_script(url, fingerprint, str(keyring), OWNER, UNREACHABLE, ROTATED)
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120)


def keyring_fingerprints(keyring: Path) -> list[str]:
    """The fact, read from the file as a host would: what the operation compares with."""
    listed = subprocess.run(
        ["sh", "-c", KeyringFingerprints().command(str(keyring))],
        capture_output=True,
        text=True,
        check=True,
    )
    return KeyringFingerprints().process(listed.stdout.splitlines())


def work_directories() -> set[str]:
    return {p.name for p in Path("/tmp").glob("llmhost-apt-key.*")}


@needs_gpg
def test_the_pinned_key_alone_is_trusted_of_a_file_that_carries_others(published, tmp_path):
    keyring = tmp_path / "keyrings" / "example.gpg"
    keyring.parent.mkdir()
    before = work_directories()
    done = trust(published["url"], published["current"], keyring)
    assert done.returncode == 0, done.stderr
    assert keyring_fingerprints(keyring) == [published["current"]]
    assert keyring.stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in keyring.parent.iterdir()) == ["example.gpg"], "no temporary"
    assert work_directories() == before


@needs_gpg
def test_a_file_of_that_key_alone_is_trusted(published, tmp_path):
    keyring = tmp_path / "example.gpg"
    done = trust(published["single_url"], published["single"], keyring)
    assert done.returncode == 0, done.stderr
    assert keyring_fingerprints(keyring) == [published["single"]]
    assert keyring.stat().st_mode & 0o777 == 0o644


@needs_gpg
@pytest.mark.parametrize(
    ("url", "has"), [("url", ("current", "revoked", "expired")), ("single_url", ("single",))]
)
def test_a_key_file_without_the_pinned_key_is_refused_and_nothing_stays_trusted(
    published, tmp_path, url, has
):
    keyring = tmp_path / "example.gpg"
    assert trust(published[url], published[has[0]], keyring).returncode == 0
    before = work_directories()
    refused = trust(published[url], ABSENT, keyring)
    assert refused.returncode == 1
    others = " ".join(published[name] for name in has)
    assert (
        f"{published[url]} does not contain Example's signing key {ABSENT} (it has: {others}); "
        f"nothing was trusted. {ROTATED}"
    ) in refused.stderr
    assert not keyring.exists(), "the keyring of before is gone: nothing is trusted"
    assert not Path(f"{keyring}.new").exists()
    assert work_directories() == before


@needs_gpg
@pytest.mark.parametrize(("which", "said"), [("revoked", "is revoked"), ("expired", "has expired")])
def test_a_pinned_key_that_is_revoked_or_expired_is_refused(published, tmp_path, which, said):
    keyring = tmp_path / "example.gpg"
    refused = trust(published["url"], published[which], keyring)
    assert refused.returncode == 1, refused.stderr
    assert (
        f"Example's signing key {published[which]} in {published['url']} {said}; "
        f"nothing was trusted. {ROTATED}"
    ) in refused.stderr
    assert not keyring.exists()


@needs_gpg
@pytest.mark.parametrize("where", ["absent file", "closed port"])
def test_a_key_file_that_cannot_be_downloaded_says_what_to_do(published, tmp_path, where):
    keyring = tmp_path / "example.gpg"
    keyring.write_text("a keyring of before")
    missing = {
        "absent file": (published["root"] / "absent.key").as_uri(),
        "closed port": "http://127.0.0.1:9/example.pub",
    }[where]
    before = work_directories()
    refused = trust(missing, published["current"], keyring)
    assert refused.returncode == 1
    assert (
        f"cannot download Example's key file {missing} (with APT's proxy settings); "
        f"nothing was trusted. {UNREACHABLE}"
    ) in refused.stderr
    assert not keyring.exists() and work_directories() == before


@needs_gpg
def test_words_with_quotes_reach_the_message_as_written(published, tmp_path):
    keyring = tmp_path / "example.gpg"
    url = (published["root"] / "absent.key").as_uri()
    script = apt_key_script(url, ABSENT, str(keyring), "O'Brien", "Run `x`; then $HOME.", "-")
    refused = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 1
    assert "cannot download O'Brien's key file" in refused.stderr
    assert "nothing was trusted. Run `x`; then $HOME." in refused.stderr


def test_a_fingerprint_that_is_not_one_is_refused_before_anything_runs():
    for wrong in ("b53ae77badb630a683046005963fa27710458545", "B53AE77B", "B53A E77B; rm -rf /"):
        with pytest.raises(ValueError, match="not a 40-digit upper-case OpenPGP fingerprint"):
            apt_key_script("https://example.invalid/key", wrong, "/k.gpg", OWNER, "", "")
