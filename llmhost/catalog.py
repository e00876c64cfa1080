"""The model catalog: one ``models/<name>.toml`` per model, every byte pinned.

A model file names where the weights come from (a Hugging Face repository at a
40-hex commit, or a local path), every file with its size and SHA256, the
OCI repository it is mirrored to and, once mirrored, the manifest digest that
hosts pull. Nothing unpinned can reach a host: the mirror refuses files whose
hash differs, and hosts pull only by digest.

Validation names the file, the key (``files[2].sha256``) and the fix.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from llmhost.errors import ConfigError
from llmhost.hardware import load_classes
from llmhost.paths import MODELS, REPO_ROOT

FORMATS = ("gguf", "safetensors")
RUNTIMES = ("llama.cpp", "vllm")
# Which runtimes can serve which weight format.
SERVABLE = {"gguf": {"llama.cpp", "vllm"}, "safetensors": {"vllm"}}
NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
REVISION = re.compile(r"^[0-9a-f]{40}$")
HF_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Limits a model file's [gates] may set (for every class, or in [gates.<class>]).
GATE_LIMITS = (
    "ttft_p95_ms",
    "e2e_p99_ms",
    "error_rate_max",
    "min_tokens_per_s",
    "eval_tolerance",
    "eval_min_score",
)
OCI_REPOSITORY = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")


@dataclass(frozen=True)
class ModelFile:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Source:
    kind: str  # "huggingface" or "local"
    repo: str | None = None
    revision: str | None = None
    path: str | None = None

    def local_directory(self) -> Path:
        assert self.path is not None
        candidate = Path(self.path).expanduser()
        return candidate if candidate.is_absolute() else REPO_ROOT / candidate


@dataclass(frozen=True)
class Model:
    name: str
    format: str
    license: str
    min_hardware: str
    runtimes: tuple[str, ...]
    eval_set: str | None
    source: Source
    files: tuple[ModelFile, ...]
    repository: str
    registry: str | None
    digest: str | None
    definition: Path
    # Gate limits: "" for every hardware class, else the class's own (which win).
    gates: dict[str, dict[str, float]] = field(default_factory=dict, hash=False, compare=False)

    def gate_limits(self, hardware_class: str) -> dict[str, float]:
        return {**self.gates.get("", {}), **self.gates.get(hardware_class, {})}

    def eval_set_path(self) -> Path | None:
        """The eval set's file: relative to the directory holding the model file."""
        return self.definition.parent / self.eval_set if self.eval_set else None

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)


def catalog_directory() -> Path:
    return Path(os.environ.get("LLMHOST_MODELS_DIR", MODELS))


class _Reader:
    """Typed access to one model file's table, failing with the file and key named."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str, fix: str) -> ConfigError:
        return ConfigError(f"{problem} (in {self.path})", key=key, fix=fix)

    def text(
        self,
        table: dict[str, Any],
        key: str,
        name: str,
        pattern: re.Pattern[str] | None,
        fix: str,
        required: bool = True,
    ) -> str | None:
        value = table.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            problem = "is missing" if value is None else f"{value!r} is not valid"
            raise self.fail(key, problem, fix)
        return value


def safe_relative_path(value: str) -> bool:
    """A file path inside the model directory: relative, no `..`, no empty parts, no `\\`."""
    if not value or "\\" in value or value.startswith("/"):
        return False
    parts = value.split("/")
    return (
        all(part not in ("", ".", "..") for part in parts)
        and not PurePosixPath(value).is_absolute()
    )


def _files(reader: _Reader, document: dict[str, Any]) -> tuple[ModelFile, ...]:
    entries = document.get("files")
    if not isinstance(entries, list) or not entries:
        raise reader.fail("files", "is missing or empty", "list every file as [[files]] tables")
    files: list[ModelFile] = []
    for index, entry in enumerate(entries):
        key = f"files[{index}]"
        if not isinstance(entry, dict):
            raise reader.fail(key, "is not a table", "use [[files]] with path, size, sha256")
        path = entry.get("path")
        if not isinstance(path, str) or not safe_relative_path(path):
            raise reader.fail(
                f"{key}.path",
                f"{path!r} is not a relative path inside the model",
                "use a relative path with no `..`, no leading `/` and no backslashes",
            )
        size = entry.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise reader.fail(f"{key}.size", f"{size!r} is not a size", "give bytes, an int > 0")
        digest = reader.text(
            entry,
            f"{key}.sha256",
            "sha256",
            SHA256,
            "give the file's SHA256 as 64 lower-case hex digits",
        )
        assert digest is not None
        files.append(ModelFile(path=path, size=size, sha256=digest))
    paths = [f.path for f in files]
    duplicates = sorted({p for p in paths if paths.count(p) > 1})
    if duplicates:
        raise reader.fail("files", f"lists {duplicates[0]!r} twice", "list each file once")
    return tuple(files)


def _source(reader: _Reader, document: dict[str, Any]) -> Source:
    table = document.get("source")
    if not isinstance(table, dict):
        raise reader.fail("source", "is missing", "add [source] with kind = huggingface | local")
    kind = table.get("kind")
    if kind == "huggingface":
        repo = reader.text(table, "source.repo", "repo", HF_REPO, "use 'owner/name'")
        revision = reader.text(
            table,
            "source.revision",
            "revision",
            REVISION,
            "pin the full 40-hex commit id, never a branch or tag",
        )
        return Source(kind="huggingface", repo=repo, revision=revision)
    if kind == "local":
        path = reader.text(table, "source.path", "path", None, "give the directory holding it")
        return Source(kind="local", path=path)
    raise reader.fail("source.kind", f"{kind!r} is not a source kind", "use huggingface or local")


def load_model(path: Path) -> Model:
    """Parse and validate one model file."""
    reader = _Reader(path)
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise reader.fail("(file)", f"is not valid TOML: {error}", "correct the syntax") from error
    name = reader.text(document, "name", "name", NAME, "lower-case letters, digits, . _ -")
    if name != path.stem:
        raise reader.fail("name", f"{name!r} differs from the file name", f"name it {path.stem!r}")
    fmt = document.get("format")
    if fmt not in FORMATS:
        raise reader.fail("format", f"{fmt!r} is not a format", f"use one of {', '.join(FORMATS)}")
    license_ = reader.text(document, "license", "license", None, "name the weights' licence")
    hardware = document.get("min_hardware")
    classes = load_classes()
    if not isinstance(hardware, str) or hardware not in classes:
        raise reader.fail(
            "min_hardware",
            f"{hardware!r} is not a hardware class",
            f"use one of {', '.join(sorted(classes))}",
        )
    runtimes = document.get("runtimes")
    if not isinstance(runtimes, list) or not runtimes or any(r not in RUNTIMES for r in runtimes):
        raise reader.fail(
            "runtimes",
            f"{runtimes!r} is not a list of runtimes",
            f"list some of {', '.join(RUNTIMES)}",
        )
    unservable = sorted(set(runtimes) - SERVABLE[fmt])
    if unservable:
        raise reader.fail(
            "runtimes",
            f"{unservable[0]} cannot serve {fmt} weights",
            "remove it, or mirror a format it serves",
        )
    eval_set = reader.text(document, "eval_set", "eval_set", None, "path", required=False)
    if eval_set is not None and not safe_relative_path(eval_set):
        raise reader.fail(
            "eval_set",
            f"{eval_set!r} is not a path inside the models directory",
            "give a relative path with no `..`, e.g. 'evals/general.jsonl'",
        )
    oci = document.get("oci")
    if not isinstance(oci, dict):
        raise reader.fail("oci", "is missing", "add [oci] with repository = 'models/<name>'")
    repository = reader.text(
        oci,
        "oci.repository",
        "repository",
        OCI_REPOSITORY,
        "use a lower-case OCI repository name, e.g. 'models/<name>'",
    )
    registry = reader.text(oci, "oci.registry", "registry", None, "host:port", required=False)
    digest = reader.text(
        oci,
        "oci.digest",
        "digest",
        DIGEST,
        "leave it out until `llmhost models mirror` writes it",
        required=False,
    )
    assert name and license_ and repository
    return Model(
        name=name,
        format=fmt,
        license=license_,
        min_hardware=hardware,
        runtimes=tuple(runtimes),
        eval_set=eval_set,
        source=_source(reader, document),
        files=_files(reader, document),
        repository=repository,
        registry=registry,
        digest=digest,
        definition=path,
        gates=_gates(reader, document, classes),
    )


def gate_limit_values(table: dict[str, Any], key: str) -> tuple[dict[str, float], str | None]:
    """The numeric limits in ``table`` (other entries ignored), or the first bad one's name."""
    limits: dict[str, float] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            continue
        if name not in GATE_LIMITS:
            return limits, f"{key}.{name}"
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            return limits, f"{key}.{name}"
        limits[name] = float(value)
    return limits, None


def _gates(
    reader: _Reader, document: dict[str, Any], classes: dict[str, Any]
) -> dict[str, dict[str, float]]:
    table = document.get("gates", {})
    if not isinstance(table, dict):
        raise reader.fail("gates", "is not a table", "use [gates] with limits, e.g. ttft_p95_ms")
    fix = f"use numbers >= 0 for any of {', '.join(GATE_LIMITS)}"
    gates, bad = {}, None
    gates[""], bad = gate_limit_values(table, "gates")
    for name, value in table.items():
        if bad:
            break
        if isinstance(value, dict):
            if name not in classes:
                raise reader.fail(
                    f"gates.{name}",
                    f"{name!r} is not a hardware class",
                    f"use one of {', '.join(sorted(classes))}",
                )
            gates[name], bad = gate_limit_values(value, f"gates.{name}")
    if bad:
        raise reader.fail(bad, "is not a gate limit", fix)
    return {name: limits for name, limits in gates.items() if limits}


def load_catalog(directory: Path | None = None) -> dict[str, Model]:
    directory = directory or catalog_directory()
    return {path.stem: load_model(path) for path in sorted(directory.glob("*.toml"))}


def find(name: str, directory: Path | None = None) -> Model:
    directory = directory or catalog_directory()
    path = directory / f"{name}.toml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.toml"))) or "none"
        raise ConfigError(
            f"no model {name!r} in {directory} (models: {known})",
            key="model",
            fix=f"add {path.name} to the catalog or use a listed name",
        )
    return load_model(path)


def record_mirror(model: Model, registry: str, digest: str) -> None:
    """Write the mirrored manifest digest (and registry) into the model file, keeping the rest."""
    text = model.definition.read_text()
    section = re.search(r"(?ms)^\[oci\][ \t]*(?:#[^\n]*)?$(.*?)(?=^[ \t]*\[|\Z)", text)
    if section is None:
        raise ConfigError(f"{model.definition} has no [oci] table", key="oci", fix="add one")
    body = section.group(1)
    for key, value in (("digest", digest), ("registry", registry)):
        line = f'{key} = "{value}"'
        pattern = re.compile(rf"(?m)^{key}\s*=.*$")
        body = (
            pattern.sub(line, body) if pattern.search(body) else body.rstrip("\n") + f"\n{line}\n"
        )
    if not body.endswith("\n\n") and section.end() < len(text):
        body = body.rstrip("\n") + "\n\n"
    model.definition.write_text(text[: section.start(1)] + body + text[section.end(1) :])


def model_toml(name: str, fmt: str, source: dict[str, str], files: list[tuple[str, Path]]) -> str:
    """A model file for ``files`` (relative path, local copy), hashed now: for new entries.

    The pins come from the local copies, so check those copies came from ``source``.
    """
    from hashlib import sha256

    runtimes = ", ".join(f'"{r}"' for r in sorted(SERVABLE[fmt]))
    lines = [
        f'name = "{name}"',
        f'format = "{fmt}"',
        'license = "apache-2.0"',
        'min_hardware = "cpu"',
        f"runtimes = [{runtimes}]",
        "",
        "[source]",
    ]
    lines += [f'{key} = "{value}"' for key, value in source.items()]
    for relative, path in files:
        digest = sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        lines += [
            "",
            "[[files]]",
            f'path = "{relative}"',
            f"size = {path.stat().st_size}",
            f'sha256 = "{digest.hexdigest()}"',
        ]
    lines += ["", "[oci]", f'repository = "models/{name}"', ""]
    return "\n".join(lines)
