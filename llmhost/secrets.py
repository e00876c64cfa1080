"""Secrets llmhost makes and keeps on the control machine, outside the repository.

``secrets_dir`` (default ``inventories/secrets``, ignored by git) holds the CA,
the registry credentials, the gateway's API keys and Grafana's admin password.
Values are generated once and then reused, so a second converge uploads
identical files. Nothing here ever goes into argv or a log: roles upload secrets
with ``files.put`` from memory, mode 0600/0640.

Every file is checked whole before anything uses it, so a hand edit gone wrong
is refused on the control machine, before any host is touched. The messages
name the file, the entry and the fix, and never a secret: not the key that is
too short, not the line of JSON that does not parse (it would hold keys), not
an identity that is not a valid name (it may be a key pasted in the wrong place).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError
from llmhost.paths import REPO_ROOT
from llmhost.pki import CertificateAuthority
from llmhost.settings import from_data, setting
from llmhost.textfiles import read_utf8

REGISTRY_USER = "llmhost"
API_KEYS_FILE = "api-keys.json"
REGISTRY_FILE = "registry.json"
GRAFANA_FILE = "grafana.json"


@dataclass(frozen=True)
class Rule:
    """A pinned value's form: matched whole (``fullmatch``), so "team-a\\n" is not "team-a"."""

    alphabet: str  # a regular-expression class body
    lengths: tuple[int, int]
    text: str  # the rule, as the fix says it
    first: str = ""  # the first character's class body, where it is narrower

    @property
    def pattern(self) -> re.Pattern[str]:
        low, high = self.lengths
        if self.first:
            return re.compile(rf"[{self.first}][{self.alphabet}]{{{low - 1},{high - 1}}}")
        return re.compile(rf"[{self.alphabet}]{{{low},{high}}}")

    def matches(self, value: str) -> bool:
        return self.pattern.fullmatch(value) is not None

    def problem(self, value: str) -> str:
        """What is wrong with ``value``, without showing it (it may be a secret)."""
        if not value:
            return f"is empty; it must be {self.text}"
        for position, character in enumerate(value, 1):
            if not re.fullmatch(f"[{self.alphabet}]", character):
                end = " (the last)" if position == len(value) > 1 else ""
                return (
                    f"has {_character(character)} at character {position}{end} of "
                    f"{len(value)}; it must be {self.text}"
                )
        if self.first and not re.fullmatch(f"[{self.first}]", value[0]):
            return f"starts with {_character(value[0])}; it must be {self.text}"
        return f"is {len(value)} characters long; it must be {self.text}"


def _character(character: str) -> str:
    """A character named by its kind, never shown: it is part of a value that may be secret."""
    if character == "\n":
        return "a newline"
    if character.isspace():
        return "white space"
    if not character.isprintable():
        return f"the control character U+{ord(character):04X}"
    if character.isupper():
        return "an upper-case letter"
    return "a character outside the allowed ones"


URL_SAFE = "A-Za-z0-9_-"  # what `secrets.token_urlsafe` makes
API_KEY = Rule(URL_SAFE, (32, 128), "32-128 characters of A-Z a-z 0-9 _ -")
IDENTITY = Rule(
    "a-z0-9._-",
    (1, 63),
    "1-63 lower-case letters, digits, . _ - (a letter or digit first)",
    "a-z0-9",
)
# The registry's fields. The username goes into htpasswd (`user:hash`), the password into
# bcrypt (at most 72 bytes), the HTTP secret into YAML unquoted: alphabets none of them misread.
REGISTRY_FIELDS = {
    "username": IDENTITY,
    "password": Rule(URL_SAFE, (16, 72), "16-72 characters of A-Z a-z 0-9 _ -"),
    "http_secret": Rule(URL_SAFE, (32, 128), "32-128 characters of A-Z a-z 0-9 _ -"),
}
GRAFANA_FIELDS = {
    "admin_password": Rule(URL_SAFE, (16, 128), "16-128 characters of A-Z a-z 0-9 _ -")
}


@dataclass(frozen=True)
class SecretsSettings:
    secrets_dir: str = setting(
        "inventories/secrets",
        "Control-machine directory (relative to the repository, or absolute) holding the CA and "
        "registry credentials; back it up, keep it out of git",
    )


@dataclass(frozen=True)
class RegistryCredentials:
    username: str
    password: str = field(repr=False)
    http_secret: str = field(repr=False)

    def auth_json(self) -> str:
        return json.dumps({"username": self.username, "password": self.password}) + "\n"


def secrets_directory(data: Any, host: str | None = None) -> Path:
    configured = Path(from_data(SecretsSettings, data, host).secrets_dir).expanduser()
    return configured if configured.is_absolute() else REPO_ROOT / configured


# The directory and its files


def existing_directory(directory: Path) -> Path:
    """``directory`` when it is one; refused when missing or not a directory (a typo, mostly)."""
    if not _is_directory(directory):
        raise ConfigError(
            f"the secrets directory {directory} does not exist",
            key="secrets_dir",
            fix="point --secrets-dir (or the inventory's secrets_dir) at the directory that "
            "holds api-keys.json, registry.json and ca/",
        )
    return directory


def _is_directory(directory: Path) -> bool:
    """Whether ``directory`` exists; a file (or other non-directory) in its place is refused."""
    try:
        mode = directory.stat().st_mode
    except FileNotFoundError:
        return False
    except NotADirectoryError:
        raise ConfigError(
            f"the secrets directory {directory} is inside a file, not a directory",
            key="secrets_dir",
            fix="point secrets_dir (or --secrets-dir) at a directory",
        ) from None
    except OSError as error:
        raise ConfigError(
            f"the secrets directory {directory} cannot be read ({error.strerror})",
            key="secrets_dir",
            fix="run as the user who owns it, or fix its owner and mode (chmod 700)",
        ) from None
    if not stat.S_ISDIR(mode):
        raise ConfigError(
            f"the secrets directory {directory} is a file, not a directory",
            key="secrets_dir",
            fix="point secrets_dir (or --secrets-dir) at the directory that holds "
            "api-keys.json, registry.json and ca/, or move that file out of the way",
        )
    return True


def _make_directory(directory: Path) -> None:
    """Create the secrets directory on first use, private (0700)."""
    if _is_directory(directory):
        return
    try:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as error:
        raise ConfigError(
            f"cannot create the secrets directory {directory} ({error.strerror})",
            key="secrets_dir",
            fix="point secrets_dir (or --secrets-dir) at a directory this user may create",
        ) from None


def _check_private(path: Path, key: str) -> None:
    """Refuse a secrets file that group or others may open, as ssh does with a private key."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"{path} is open to group or others (mode {mode:04o}), and it holds secrets",
            key=key,
            fix=f"chmod 600 {path} (and rotate what it holds if others may have read it)",
        )


def _write_private(path: Path, text: str, key: str) -> None:
    """Write ``path`` atomically, mode 0600 from the first byte."""
    temporary = path.with_name(path.name + ".tmp")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # a temporary file left over from before may be wider
        with os.fdopen(descriptor, "w", encoding="utf-8") as output:
            output.write(text)
        os.replace(temporary, path)
    except OSError as error:
        raise ConfigError(
            f"cannot write {path} ({error.strerror})",
            key=key,
            fix="check the owner and mode of the secrets directory (this user must own it)",
        ) from None


class _JsonObject(list[tuple[str, Any]]):
    """A JSON object as the pairs it was written with: duplicates survive to be refused."""


def _json_type(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return "true, false or null"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an object" if isinstance(value, _JsonObject) else "a list"


class _Absent:
    """No such file (a file holding JSON `null` is not absent: it is wrong)."""


ABSENT = _Absent()


def _read_json(path: Path, key: str) -> Any:
    """The parsed file (objects as `_JsonObject`), or ``ABSENT`` when there is none."""
    text = read_utf8(path, key, fix="save it as UTF-8 JSON")
    if text is None:
        return ABSENT
    try:
        return json.loads(text, object_pairs_hook=_JsonObject)
    except json.JSONDecodeError as error:
        # Only where: the text around the error holds secrets.
        raise ConfigError(
            f"{path} is not JSON: {error.msg} at line {error.lineno} column {error.colno}",
            key=key,
            fix="correct the JSON there (a JSON object of strings)",
        ) from None
    except (ValueError, RecursionError):  # a number too long to convert, nesting too deep
        raise ConfigError(
            f"{path} is not JSON that llmhost can read (a number too long or nesting too deep)",
            key=key,
            fix="it should be one JSON object of strings",
        ) from None


# API keys


def api_keys(directory: Path) -> dict[str, str]:
    """Identity -> API key, from ``api-keys.json``; every entry checked (a bad one is refused).

    No directory or no file is no keys yet (``llmhost keys add`` makes both);
    anything else that is not a private JSON object of valid identities, each with
    its own valid key, is refused.
    """
    return _load_api_keys(directory)


def _load_api_keys(directory: Path, replacing: str | None = None) -> dict[str, str]:
    """The keys; those of ``replacing`` are not checked (they are about to be replaced)."""
    path = directory / API_KEYS_FILE
    if not _is_directory(directory):
        return {}
    document = _read_json(path, API_KEYS_FILE)
    if document is ABSENT:
        return {}
    if not isinstance(document, _JsonObject):
        raise ConfigError(
            f"{path} holds {_json_type(document)}, not a JSON object",
            key=API_KEYS_FILE,
            fix='map identities to keys: {"team-a": "<key>"}, or create it with '
            f"llmhost keys add <identity> --secrets-dir {directory}",
        )
    keys = _checked_api_keys(path, document, replacing)
    _check_private(path, API_KEYS_FILE)
    return keys


def _checked_api_keys(
    path: Path, entries: list[tuple[str, Any]], replacing: str | None
) -> dict[str, str]:
    directory = path.parent
    keys: dict[str, str] = {}
    entry_of: dict[str, int] = {}
    owner_of: dict[str, str] = {}  # key -> identity: no two identities may share one
    for number, (identity, key) in enumerate(entries, 1):
        if not IDENTITY.matches(identity):
            raise ConfigError(
                f"in {path}, the identity of entry {number} {IDENTITY.problem(identity)}",
                key=f"{API_KEYS_FILE}: entry {number}",
                fix="rename it in the file (it is not shown here: it may be a key in the "
                "wrong place)",
            )
        rotate = f"llmhost keys add {identity} --rotate --secrets-dir {directory}"
        if identity in entry_of and identity != replacing:
            raise ConfigError(
                f"{identity} is in {path} twice (entries {entry_of[identity]} and {number}): "
                "the gateway would silently admit only one of the keys",
                key=f"{API_KEYS_FILE}: {identity}",
                fix=f"delete one of the two entries, or give it one new key: {rotate}",
            )
        entry_of[identity] = number
        if identity == replacing:
            continue
        if not isinstance(key, str):
            raise ConfigError(
                f"the key of {identity} in {path} is {_json_type(key)}, not a string",
                key=f"{API_KEYS_FILE}: {identity}",
                fix=rotate,
            )
        if not API_KEY.matches(key):
            # The key itself is never echoed: it is a secret even when malformed.
            raise ConfigError(
                f"the key of {identity} in {path} {API_KEY.problem(key)}",
                key=f"{API_KEYS_FILE}: {identity}",
                fix=rotate,
            )
        if key in owner_of:
            raise ConfigError(
                f"{owner_of[key]} and {identity} share one key in {path}: the audit log "
                "could not tell which of them sent a request",
                key=f"{API_KEYS_FILE}: {identity}",
                fix=f"give {identity} its own key: {rotate}",
            )
        owner_of[key] = identity
        keys[identity] = key
    return keys


def add_api_key(directory: Path, identity: str, rotate: bool = False) -> str:
    """Create (or with ``rotate`` replace) an identity's key; returns it, to show once.

    Rotating is also the fix for a bad key of that identity (malformed, shared,
    listed twice), so the identity's own entries are not checked then; every
    other entry still is.
    """
    if not IDENTITY.matches(identity):
        raise ConfigError(
            f"the identity given {IDENTITY.problem(identity)}",
            key="identity",
            fix=f"name it with {IDENTITY.text}",
        )
    keys = _load_api_keys(directory, replacing=identity if rotate else None)
    if identity in keys and not rotate:
        raise ConfigError(
            f"{identity} already has a key", key="identity", fix="pass --rotate to replace it"
        )
    keys.pop(identity, None)
    new = secrets.token_urlsafe(32)
    while new in keys.values():  # never in practice; an identity must own its key alone
        new = secrets.token_urlsafe(32)
    keys[identity] = new
    _make_directory(directory)
    text = json.dumps(keys, indent=2, sort_keys=True) + "\n"
    _write_private(directory / API_KEYS_FILE, text, API_KEYS_FILE)
    return new


# The registry's credentials and the CA


def certificate_authority(directory: Path) -> CertificateAuthority:
    """The CA under ``ca/``; its private keys, where they exist, must be private."""
    authority = CertificateAuthority(directory / "ca")
    if _is_directory(directory) and _is_directory(authority.directory):
        for path in [authority.key_path, *sorted(authority.directory.glob("issued/*.key"))]:
            if path.exists():
                _check_private(path, f"ca/{path.relative_to(authority.directory)}")
    return authority


def registry_credentials(directory: Path) -> RegistryCredentials:
    """The registry's credentials, generated on first use, checked on every use."""
    path = directory / REGISTRY_FILE
    document = _read_json(path, REGISTRY_FILE) if _is_directory(directory) else ABSENT
    if document is ABSENT:
        _make_directory(directory)
        values = {
            "username": REGISTRY_USER,
            "password": secrets.token_urlsafe(24),
            "http_secret": secrets.token_urlsafe(32),
        }
        _write_private(path, json.dumps(values, indent=2) + "\n", REGISTRY_FILE)
        return RegistryCredentials(**values)
    credentials = _checked_registry(path, document)
    _check_private(path, REGISTRY_FILE)
    return credentials


def _checked_registry(path: Path, document: Any) -> RegistryCredentials:
    regenerate = (
        f"correct it, or delete {path} so that the next deploy makes new credentials "
        "(and converges them to the registries and every host that pulls)"
    )
    return RegistryCredentials(
        **_checked_fields(path, document, REGISTRY_FILE, REGISTRY_FIELDS, regenerate)
    )


def _checked_fields(
    path: Path, document: Any, file_key: str, fields: dict[str, Rule], regenerate: str
) -> dict[str, str]:
    """A JSON object of exactly ``fields``, each a string its rule admits, each once."""
    if not isinstance(document, _JsonObject):
        raise ConfigError(
            f"{path} holds {_json_type(document)}, not a JSON object",
            key=file_key,
            fix=f"it should be one object of {', '.join(fields)}: {regenerate}",
        )
    values: dict[str, str] = {}
    for name, value in document:
        if name not in fields:
            shown = name if IDENTITY.matches(name) and len(name) < 32 else "(not shown)"
            raise ConfigError(
                f"{path} has a field llmhost does not know: {shown}",
                key=f"{file_key}: {shown}",
                fix=f"keep only {', '.join(fields)}: {regenerate}",
            )
        if name in values:
            raise ConfigError(
                f"{name} is in {path} twice", key=f"{file_key}: {name}", fix=regenerate
            )
        rule = fields[name]
        if not isinstance(value, str):
            problem = f"is {_json_type(value)}, not a string"
        elif not rule.matches(value):
            problem = rule.problem(value)
        else:
            values[name] = value
            continue
        raise ConfigError(f"{name} in {path} {problem}", key=f"{file_key}: {name}", fix=regenerate)
    missing = [name for name in fields if name not in values]
    if missing:
        raise ConfigError(
            f"{path} has no {', '.join(missing)}",
            key=f"{file_key}: {missing[0]}",
            fix=regenerate,
        )
    return values


# Grafana's admin password


def grafana_admin_password(directory: Path) -> str:
    """The password of Grafana's `admin` on the monitoring hosts, generated on first use.

    Kept here like the registry's credentials, so every monitoring host (and a rebuilt
    one) gets the same password, and it never has to be typed into an inventory.
    """
    path = directory / GRAFANA_FILE
    document = _read_json(path, GRAFANA_FILE) if _is_directory(directory) else ABSENT
    if document is ABSENT:
        _make_directory(directory)
        values = {"admin_password": secrets.token_urlsafe(24)}
        _write_private(path, json.dumps(values, indent=2) + "\n", GRAFANA_FILE)
        return values["admin_password"]
    regenerate = (
        f"correct it, or delete {path} so that the next deploy makes a new password "
        "(and sets it on every monitoring host's Grafana)"
    )
    values = _checked_fields(path, document, GRAFANA_FILE, GRAFANA_FIELDS, regenerate)
    _check_private(path, GRAFANA_FILE)
    return values["admin_password"]


def hosted_api_key(directory: Path, name: str) -> str:
    """The key of a hosted API the edge falls back to: one line in ``directory/name``.

    The operator puts it there (the provider issues it); it must be private like every
    file here, and it is never printed.
    """
    path = directory / name
    if Path(name).name != name or name.startswith("."):
        raise ConfigError(
            f"{name!r} is not a file name in the secrets directory",
            key="edge_hosted_fallback.key_file",
            fix="give the name of a file in secrets_dir, e.g. hosted-api-key",
        )
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist: the hosted API's key goes there",
            key="edge_hosted_fallback.key_file",
            fix=f"(umask 077; printf '%s\\n' \"$KEY\" > {path})",
        )
    _check_private(path, "edge_hosted_fallback.key_file")
    key = path.read_text().strip()
    if not key or any(c.isspace() or ord(c) < 33 for c in key):
        raise ConfigError(
            f"{path} holds no key on its one line (or one with spaces or control characters)",
            key="edge_hosted_fallback.key_file",
            fix=f"write the key alone on one line into {path}",
        )
    return key
