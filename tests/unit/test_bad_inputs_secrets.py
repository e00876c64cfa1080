"""Every bad secrets file we know of, refused offline: one line, the file and key named, no secret.

Each case goes through the real CLI (`llmhost keys list` / `keys add`, and for the
registry's credentials `llmhost models sync`, which reads them before any registry
is contacted) and through the library call a role makes (`api_keys()` in the
gateway's preflight, `registry_credentials()` in the registry and model roles).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from llmhost.cli import main
from llmhost.errors import ConfigError
from llmhost.pki import CertificateAuthority
from llmhost.secrets import add_api_key, api_keys, certificate_authority, registry_credentials
from roles.gateway import gateway
from tests.unit import test_runtime_role as runtime_tests
from tests.unit.pyinfra_plan import plan

catalog = runtime_tests.catalog  # a catalog with a mirrored model (autouse fixture)

TRACEBACK = "Traceback (most recent call last)"
KEY_A = "Aa1-SeCrEtKeYoFtEaMa_0123456789abcdefXYZ"
KEY_B = "Bb2-SeCrEtKeYoFtEaMb_0123456789abcdefXYZ"
PASSWORD = "Pw9-RegistryPassWord_0123456789"
HTTP_SECRET = "Hs7-RegistryHttpSecret_0123456789abcdefghij"
GOOD_REGISTRY = {"username": "llmhost", "password": PASSWORD, "http_secret": HTTP_SECRET}


@dataclass(frozen=True)
class Bad:
    content: str | bytes
    named: tuple[str, ...]  # what the message must say (the file, the key, the problem)
    secrets: tuple[str, ...] = (KEY_A, KEY_B, PASSWORD, HTTP_SECRET)
    mode: int = 0o600


def registry(**changes: object) -> str:
    return json.dumps({**GOOD_REGISTRY, **changes})


def leaked(secrets: tuple[str, ...], text: str) -> list[str]:
    """Any 10 characters in a row of a secret that the text shows."""
    return [
        secret
        for secret in secrets
        if any(secret[i : i + 10] in text for i in range(max(1, len(secret) - 9)))
    ]


def write(directory: Path, name: str, content: str | bytes, mode: int = 0o600) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    os.chmod(path, mode)
    return path


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    assert TRACEBACK not in result.output
    return result.exit_code, result.output


def assert_refused(code: int, output: str, case: Bad) -> None:
    assert code == 2, output
    assert output.startswith("error: "), output
    for fragment in case.named:
        assert fragment in output, output
    assert not leaked(case.secrets, output), output
    assert TRACEBACK not in output


# api-keys.json

API_KEY_CASES = {
    "not-json-truncated": Bad(
        f'{{"team-a": "{KEY_A}",\n "team-b": "{KEY_B}"', ("api-keys.json", "line 2 column")
    ),
    "not-json-single-quotes": Bad(f"{{'team-a': '{KEY_A}'}}", ("api-keys.json", "line 1 column 2")),
    "not-json-trailing-comma": Bad(f'{{"team-a": "{KEY_A}",}}', ("api-keys.json", "not JSON")),
    "empty-file": Bad("", ("api-keys.json", "line 1 column 1")),
    "not-utf8": Bad(
        b'{"team-a": "' + KEY_A.encode() + b'\xff\xfe"}', ("api-keys.json", "not UTF-8")
    ),
    "utf16": Bad(json.dumps({"team-a": KEY_A}).encode("utf-16"), ("api-keys.json", "not UTF-8")),
    "a-list": Bad(json.dumps([KEY_A, KEY_B]), ("api-keys.json", "a list, not a JSON object")),
    "null": Bad("null", ("api-keys.json", "not a JSON object")),
    "a-bare-key": Bad(json.dumps(KEY_A), ("api-keys.json", "a string, not a JSON object")),
    "key-a-number": Bad('{"team-a": 12345}', ("api-keys.json: team-a", "a number, not a string")),
    "key-an-object": Bad(
        json.dumps({"team-a": {"key": KEY_A}}), ("api-keys.json: team-a", "an object")
    ),
    "key-null": Bad('{"team-a": null}', ("api-keys.json: team-a", "not a string")),
    "duplicate-identity": Bad(
        f'{{"team-a": "{KEY_A}", "team-a": "{KEY_B}"}}',
        ("api-keys.json: team-a", "twice", "entries 1 and 2"),
    ),
    "two-identities-one-key": Bad(
        json.dumps({"team-a": KEY_A, "team-b": KEY_A}),
        ("api-keys.json: team-b", "team-a and team-b share one key", "audit log"),
    ),
    "key-too-short": Bad(
        json.dumps({"team-a": "short-secret"}),
        ("api-keys.json: team-a", "12 characters long", "--rotate"),
        secrets=("short-secret",),
    ),
    "key-too-long": Bad(
        json.dumps({"team-a": KEY_A * 4}),
        ("api-keys.json: team-a", "160 characters long", "32-128"),
    ),
    "key-bad-character": Bad(
        json.dumps({"team-a": KEY_A[:20] + "$" + KEY_A[20:]}),
        ("api-keys.json: team-a", "character 21", "outside the allowed"),
    ),
    "key-trailing-newline": Bad(
        json.dumps({"team-a": KEY_A + "\n"}),
        ("api-keys.json: team-a", "a newline at character 41 (the last)"),
    ),
    "key-inner-space": Bad(
        json.dumps({"team-a": KEY_A[:10] + " " + KEY_A[10:]}),
        ("api-keys.json: team-a", "white space at character 11"),
    ),
    "identity-trailing-newline": Bad(
        json.dumps({"team-a\n": KEY_A}), ("api-keys.json: entry 1", "a newline at character 7")
    ),
    "identity-upper-case": Bad(
        json.dumps({"team-b": KEY_B, "Team-A": KEY_A}),
        ("api-keys.json: entry 2", "an upper-case letter at character 1"),
    ),
    "identity-empty": Bad(json.dumps({"": KEY_A}), ("api-keys.json: entry 1", "is empty")),
    "identity-too-long": Bad(
        json.dumps({"t" * 64: KEY_A}), ("api-keys.json: entry 1", "64 characters long", "1-63")
    ),
    "identity-starts-with-a-dot": Bad(
        json.dumps({".team": KEY_A}), ("api-keys.json: entry 1", "starts with")
    ),
    "identity-with-a-quote": Bad(
        json.dumps({'team"a': KEY_A}), ("api-keys.json: entry 1", "character 5")
    ),
    "identity-and-key-swapped": Bad(
        json.dumps({KEY_A: "team-a"}), ("api-keys.json: entry 1", "upper-case", "not shown")
    ),
    "readable-by-others": Bad(
        json.dumps({"team-a": KEY_A}), ("api-keys.json", "mode 0644", "chmod 600"), mode=0o644
    ),
    "readable-by-group": Bad(
        json.dumps({"team-a": KEY_A}), ("api-keys.json", "mode 0640", "chmod 600"), mode=0o640
    ),
    "number-too-long": Bad('{"team-a": ' + "1" * 5000 + "}", ("api-keys.json", "not JSON")),
    "nested-too-deep": Bad("[" * 100_000, ("api-keys.json", "not JSON")),
}


@pytest.mark.parametrize("case", API_KEY_CASES.values(), ids=API_KEY_CASES.keys())
def test_bad_api_keys_file_is_refused_by_every_reader(tmp_path, case):
    secrets = tmp_path / "secrets"
    path = write(secrets, "api-keys.json", case.content, case.mode)
    before = path.read_bytes()

    assert_refused(*cli("keys", "list", "--secrets-dir", str(secrets)), case)
    assert_refused(*cli("keys", "add", "team-new", "--secrets-dir", str(secrets)), case)
    assert path.read_bytes() == before  # nothing written over a file that was refused

    with pytest.raises(ConfigError) as raised:
        api_keys(secrets)
    message = str(raised.value)
    assert all(fragment in message for fragment in case.named), message
    assert not leaked(case.secrets, message), message

    # The gateway's preflight: the same refusal, with the host named.
    with pytest.raises(ConfigError) as planned:
        plan(gateway, runtime_tests.host_data(secrets_dir=str(secrets)))
    assert planned.value.host == "host1"
    assert planned.value.problem == raised.value.problem
    assert not leaked(case.secrets, str(planned.value))


@pytest.mark.parametrize(
    "name",
    ["team A", "Team-a", "team-a\n", "-team", "", "t" * 64, "team/../a", "teäm"],
    ids=["space", "upper", "newline", "dash-first", "empty", "too-long", "slash", "non-ascii"],
)
def test_keys_add_refuses_an_identity_outside_the_pattern(tmp_path, name):
    code, output = cli("keys", "add", "--secrets-dir", str(tmp_path), "--", name)
    assert code == 2 and "key `identity`" in output and "lower-case letters" in output, output
    assert not (tmp_path / "api-keys.json").exists()


def test_rotating_is_the_fix_for_a_bad_key_and_keeps_the_others(tmp_path):
    write(tmp_path, "api-keys.json", json.dumps({"team-a": KEY_A, "team-b": KEY_A}))
    code, output = cli("keys", "add", "team-b", "--rotate", "--secrets-dir", str(tmp_path))
    assert code == 0, output
    keys = api_keys(tmp_path)
    assert keys["team-a"] == KEY_A and keys["team-b"] != KEY_A
    assert (tmp_path / "api-keys.json").stat().st_mode & 0o777 == 0o600


def test_rotating_collapses_an_identity_listed_twice(tmp_path):
    write(tmp_path, "api-keys.json", f'{{"team-a": "{KEY_A}", "team-a": "short"}}')
    rotated = add_api_key(tmp_path, "team-a", rotate=True)
    assert api_keys(tmp_path) == {"team-a": rotated}


def test_rotating_one_identity_does_not_excuse_another(tmp_path):
    write(tmp_path, "api-keys.json", json.dumps({"team-a": "short-secret", "team-b": KEY_B}))
    code, output = cli("keys", "add", "team-b", "--rotate", "--secrets-dir", str(tmp_path))
    assert code == 2 and "api-keys.json: team-a" in output and "short-secret" not in output


def test_keys_add_refuses_an_identity_that_has_a_key(tmp_path):
    add_api_key(tmp_path, "team-a")
    code, output = cli("keys", "add", "team-a", "--secrets-dir", str(tmp_path))
    assert code == 2 and "already has a key" in output and "--rotate" in output


def test_keys_list_shows_identities_never_keys(tmp_path):
    write(tmp_path, "api-keys.json", json.dumps({"team-b": KEY_B, "team-a": KEY_A}))
    code, output = cli("keys", "list", "--secrets-dir", str(tmp_path))
    assert code == 0 and output.split() == ["team-a", "team-b"]


# The secrets directory itself


def test_keys_list_refuses_a_secrets_directory_that_does_not_exist(tmp_path):
    missing = tmp_path / "secerts"
    code, output = cli("keys", "list", "--secrets-dir", str(missing))
    assert code == 2 and "key `secrets_dir`" in output and str(missing) in output, output
    assert "does not exist" in output and TRACEBACK not in output
    # Not yet a directory is no keys yet to the library (`keys add` creates it on first use).
    assert api_keys(missing) == {}


def test_a_secrets_directory_that_is_a_file_is_refused(tmp_path):
    not_a_directory = write(tmp_path, "secrets", json.dumps({"team-a": KEY_A}))
    code, output = cli("keys", "list", "--secrets-dir", str(not_a_directory))
    assert code == 2 and "is a file" in output and TRACEBACK not in output, output
    for reader in (api_keys, registry_credentials, certificate_authority):
        with pytest.raises(ConfigError) as raised:
            reader(not_a_directory)
        assert raised.value.key == "secrets_dir" and "is a file" in str(raised.value)
    with pytest.raises(ConfigError, match="secrets_dir"):
        add_api_key(not_a_directory, "team-a")
    assert KEY_A in not_a_directory.read_text()  # left as it was


def test_a_secrets_directory_inside_a_file_is_refused(tmp_path):
    inside = write(tmp_path, "secrets", "x") / "sub"
    for args in (("keys", "list"), ("keys", "add", "team-a")):
        code, output = cli(*args, "--secrets-dir", str(inside))
        assert code == 2 and "key `secrets_dir`" in output and TRACEBACK not in output, output
    with pytest.raises(ConfigError, match="inside a file"):
        registry_credentials(inside)


def test_a_secrets_directory_from_the_inventory_that_is_a_file_is_refused_by_the_gateway(
    tmp_path,
):
    not_a_directory = write(tmp_path, "secrets", "x")
    with pytest.raises(ConfigError) as raised:
        plan(gateway, runtime_tests.host_data(secrets_dir=str(not_a_directory)))
    assert raised.value.host == "host1" and raised.value.key == "secrets_dir"


def test_api_keys_json_that_is_a_directory_is_refused(tmp_path):
    (tmp_path / "api-keys.json").mkdir()
    code, output = cli("keys", "list", "--secrets-dir", str(tmp_path))
    assert code == 2 and "api-keys.json is a directory" in output and TRACEBACK not in output


# registry.json (read by `models sync` before it contacts a registry, and by the roles)

REGISTRY_CASES = {
    "not-json": Bad(registry()[:-1], ("registry.json", "line 1 column")),
    "not-utf8": Bad(registry().encode()[:-2] + b'\xc3"}', ("registry.json", "not UTF-8")),
    "a-list": Bad(json.dumps([PASSWORD]), ("registry.json", "a list, not a JSON object")),
    "missing-http-secret": Bad(
        json.dumps({"username": "llmhost", "password": PASSWORD}),
        ("registry.json: http_secret", "has no http_secret"),
    ),
    "password-a-number": Bad(
        registry(password=123456789012345678), ("registry.json: password", "a number")
    ),
    "password-trailing-newline": Bad(
        registry(password=PASSWORD + "\n"), ("registry.json: password", "a newline")
    ),
    "password-too-short": Bad(
        registry(password="hunter2-secret"),
        ("registry.json: password", "14 characters long", "16-72"),
        secrets=("hunter2-secret",),
    ),
    "password-too-long-for-bcrypt": Bad(
        registry(password=PASSWORD * 3), ("registry.json: password", "93 characters long")
    ),
    "http-secret-breaks-yaml": Bad(
        registry(http_secret=HTTP_SECRET + " # x"), ("registry.json: http_secret", "white space")
    ),
    "username-with-colon": Bad(
        registry(username="llm:host"), ("registry.json: username", "character 4")
    ),
    "unknown-field": Bad(
        registry(token=HTTP_SECRET), ("registry.json: token", "does not know: token")
    ),
    "duplicate-password": Bad(
        registry()[:-1] + f', "password": "{PASSWORD}x"}}', ("registry.json: password", "twice")
    ),
    "readable-by-others": Bad(registry(), ("registry.json", "mode 0644", "chmod 600"), mode=0o644),
}


@pytest.mark.parametrize("case", REGISTRY_CASES.values(), ids=REGISTRY_CASES.keys())
def test_bad_registry_credentials_are_refused_by_every_reader(tmp_path, case):
    secrets = tmp_path / "secrets"
    CertificateAuthority(secrets / "ca").ensure()
    path = write(secrets, "registry.json", case.content, case.mode)
    before = path.read_bytes()

    code, output = cli(
        "models", "sync", "--from", "127.0.0.1:9", "--to", "127.0.0.1:10", "--secrets-dir",
        str(secrets),
    )  # fmt: skip
    assert_refused(code, output, case)
    with pytest.raises(ConfigError) as raised:
        registry_credentials(secrets)
    message = str(raised.value)
    assert all(fragment in message for fragment in case.named), message
    assert not leaked(case.secrets, message), message
    assert path.read_bytes() == before  # never regenerated over a file that is wrong


def test_good_registry_credentials_are_read_back(tmp_path):
    write(tmp_path, "registry.json", registry())
    credentials = registry_credentials(tmp_path)
    assert (credentials.password, credentials.http_secret) == (PASSWORD, HTTP_SECRET)


# The CA's private keys


@pytest.mark.parametrize("name", ["ca.key", "issued/registry-a.key"], ids=["ca-key", "issued"])
def test_a_ca_key_open_to_others_is_refused(tmp_path, name):
    authority = CertificateAuthority(tmp_path / "ca")
    authority.issue("registry-a", ["10.0.0.5"])
    os.chmod(authority.directory / name, 0o644)
    write(tmp_path, "registry.json", registry())
    code, output = cli(
        "models", "sync", "--from", "127.0.0.1:9", "--to", "127.0.0.1:10", "--secrets-dir",
        str(tmp_path),
    )  # fmt: skip
    assert code == 2 and f"key `ca/{name}`" in output and "chmod 600" in output, output
    assert "PRIVATE KEY" not in output and TRACEBACK not in output
