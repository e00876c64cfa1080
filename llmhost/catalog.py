"""The model catalog: one ``models/<name>.toml`` per model, every byte pinned.

A model file names where the weights come from (a Hugging Face repository at a
40-hex commit, or a local path), every file with its size and SHA256, the
OCI repository it is mirrored to and, once mirrored, the manifest digest that
hosts pull. Nothing unpinned can reach a host: the mirror refuses files whose
hash differs, and hosts pull only by digest.

Validation names the file, the key (``files[2].sha256``) and the fix.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmhost.errors import ConfigError
from llmhost.hardware import ONE_LINE, load_classes
from llmhost.onhost.layout import MANIFEST_FILE
from llmhost.paths import MODELS, REPO_ROOT
from llmhost.textfiles import did_you_mean, first_unknown_key, read_toml

FORMATS = ("gguf", "safetensors")
RUNTIMES = ("llama.cpp", "vllm")
# Which runtimes can serve which weight format.
SERVABLE = {"gguf": {"llama.cpp", "vllm"}, "safetensors": {"vllm"}}
# Pinned values, each matched whole (``fullmatch``; never ``^...$`` with ``match``, whose
# ``$`` lets a trailing newline through).
NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
SHA256 = re.compile(r"[0-9a-f]{64}")
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
REVISION = re.compile(r"[0-9a-f]{40}")
HF_REPO = re.compile(r"(?!.*\.\.)[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*")
OCI_REPOSITORY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
REGISTRY = re.compile(rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{{1,5}})?")

# The keys each table of a model file takes: any other is refused, with the nearest named.
MODEL_KEYS = (
    "name",
    "format",
    "license",
    "min_hardware",
    "runtimes",
    "eval_set",
    "source",
    "files",
    "oci",
    "gates",
)
SOURCE_KEYS = {"huggingface": ("kind", "repo", "revision"), "local": ("kind", "path")}
FILE_KEYS = ("path", "size", "sha256")
OCI_KEYS = ("repository", "registry", "digest")


@dataclass(frozen=True)
class LimitRange:
    """The values a gate limit can take and still mean something: ``low < x`` (or
    ``low <= x``), and below ``high`` (or up to it) when there is one."""

    low: float
    high: float | None = None
    low_included: bool = False
    high_included: bool = False
    why: str = ""  # what a value outside the range would do

    def __contains__(self, value: float) -> bool:
        above = value >= self.low if self.low_included else value > self.low
        if self.high is None:
            return above
        return above and (value <= self.high if self.high_included else value < self.high)

    def __str__(self) -> str:
        if self.high is None:
            return f"x {'>=' if self.low_included else '>'} {self.low:g}"
        low = f"{self.low:g} {'<=' if self.low_included else '<'} x"
        return f"{low} {'<=' if self.high_included else '<'} {self.high:g}"


# The limits a model file's [gates] may set (for every class, or in [gates.<class>]) and a
# host's `gate_limits`, each with its meaningful range. Outside it a limit either cannot
# fail (every release would pass, unseen) or cannot pass; both are refused, as are inf/nan.
#   ttft_p95_ms       fail when the soak's p95 time to first token is above it (ms)   x > 0
#   e2e_p99_ms        fail when the soak's p99 request latency is above it (ms)      x > 0
#   error_rate_max    fail when the 95 % upper bound of the error rate is above it   0 < x < 1
#   min_tokens_per_s  fail when the soak's output tokens per second are below it     x > 0
#   eval_tolerance    fail when the eval score is more than this below the baseline  0 <= x < 1
#   eval_min_score    fail when the eval score (share of checks passed) is below it  0 < x <= 1
GATE_LIMIT_RANGES = {
    "ttft_p95_ms": LimitRange(0, why="0 fails every release"),
    "e2e_p99_ms": LimitRange(0, why="0 fails every release"),
    "error_rate_max": LimitRange(
        0, 1, why="no number of requests can show a rate of 0, and 1 lets every request fail"
    ),
    "min_tokens_per_s": LimitRange(0, why="a rate of 0 or less cannot fail"),
    "eval_tolerance": LimitRange(
        0, 1, low_included=True, why="scores lie in 0..1, so a tolerance of 1 cannot fail"
    ),
    "eval_min_score": LimitRange(
        0, 1, high_included=True, why="a score of 0 cannot fail, and one above 1 cannot pass"
    ),
}
GATE_LIMITS = tuple(GATE_LIMIT_RANGES)


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
        pattern = pattern or ONE_LINE
        if not isinstance(value, str) or not value or not pattern.fullmatch(value):
            problem = "is missing" if value is None else f"{value!r} is not valid"
            raise self.fail(key, problem, fix)
        return value

    def known_keys(
        self, table: dict[str, Any], known: tuple[str, ...], prefix: str, label: str = ""
    ) -> None:
        label = label or (f"[{prefix}]" if prefix else "the top level")
        found = first_unknown_key(table, known, label)
        if found:
            name, problem, fix = found
            raise self.fail(f"{prefix}.{name}" if prefix else name, problem, fix)


def unsafe_path_reason(value: object) -> str | None:
    """Why ``value`` is not a relative path inside the model directory, or None if it is.

    The very rule the host-side puller applies to the titles it writes, so a model file
    cannot list a path that would be mirrored and then refused (or worse) on every host.
    """
    # Imported here: the puller's package loads its HTTP stack, which `llmhost --help` needs not.
    from llmhost.onhost.pull.manifest import unsafe_title_reason

    return unsafe_title_reason(value)


def safe_relative_path(value: str) -> bool:
    """A file path inside the model directory (see `unsafe_path_reason`)."""
    return unsafe_path_reason(value) is None


def _files(reader: _Reader, document: dict[str, Any]) -> tuple[ModelFile, ...]:
    entries = document.get("files")
    if not isinstance(entries, list) or not entries:
        raise reader.fail("files", "is missing or empty", "list every file as [[files]] tables")
    files: list[ModelFile] = []
    for index, entry in enumerate(entries):
        key = f"files[{index}]"
        if not isinstance(entry, dict):
            raise reader.fail(key, "is not a table", "use [[files]] with path, size, sha256")
        reader.known_keys(entry, FILE_KEYS, key)
        path = entry.get("path")
        reason = unsafe_path_reason(path)
        if reason or not isinstance(path, str):
            raise reader.fail(
                f"{key}.path",
                f"{path!r} is not a relative path inside the model: {reason}",
                "use a relative path like 'tokenizer/vocab.json': no `..` or `.` segments, "
                "no leading `/`, no backslashes or control characters, not "
                f"{MANIFEST_FILE!r}",
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
    directories = {"/".join(p.split("/")[:n]) for p in paths for n in range(1, p.count("/") + 1)}
    clash = sorted(directories.intersection(paths))
    if clash:
        raise reader.fail(
            "files",
            f"uses {clash[0]!r} both as a file and as a directory",
            "a path cannot be both: rename one of them",
        )
    return tuple(files)


def _source(reader: _Reader, document: dict[str, Any]) -> Source:
    table = document.get("source")
    if table is None:
        raise reader.fail("source", "is missing", "add [source] with kind = huggingface | local")
    if not isinstance(table, dict):
        raise reader.fail(
            "source", "is not a table", "add [source] with kind = huggingface | local"
        )
    kind = table.get("kind")
    if kind in SOURCE_KEYS:
        reader.known_keys(table, SOURCE_KEYS[kind], "source", f"a {kind} [source]")
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
    kinds = tuple(SOURCE_KEYS)
    raise reader.fail(
        "source.kind",
        f"{kind!r} is not a source kind{_suggest(kind, kinds)}",
        "use huggingface or local",
    )


def _suggest(value: object, known: tuple[str, ...]) -> str:
    return did_you_mean(value, known) if isinstance(value, str) else ""


def load_model(path: Path) -> Model:
    """Parse and validate one model file."""
    reader = _Reader(path)
    try:
        document = read_toml(path, "(file)")
    except ConfigError as error:
        raise reader.fail("(file)", error.problem, error.fix) from error
    reader.known_keys(document, MODEL_KEYS, "")
    name = reader.text(document, "name", "name", NAME, "lower-case letters, digits, . _ -")
    if name != path.stem:
        raise reader.fail("name", f"{name!r} differs from the file name", f"name it {path.stem!r}")
    fmt = document.get("format")
    if fmt not in FORMATS:
        raise reader.fail(
            "format",
            f"{fmt!r} is not a format{_suggest(fmt, FORMATS)}",
            f"use one of {', '.join(FORMATS)}",
        )
    license_ = reader.text(document, "license", "license", None, "name the weights' licence")
    hardware = document.get("min_hardware")
    classes = load_classes()
    if not isinstance(hardware, str) or hardware not in classes:
        raise reader.fail(
            "min_hardware",
            f"{hardware!r} is not a hardware class{_suggest(hardware, tuple(classes))}",
            f"use one of {', '.join(sorted(classes))}",
        )
    runtimes = document.get("runtimes")
    if not isinstance(runtimes, list) or not runtimes or any(r not in RUNTIMES for r in runtimes):
        wrong = next((r for r in runtimes if r not in RUNTIMES), None) if runtimes else None
        raise reader.fail(
            "runtimes",
            f"{runtimes!r} is not a list of runtimes{_suggest(wrong, RUNTIMES)}",
            f"list some of {', '.join(RUNTIMES)}",
        )
    if len(set(runtimes)) != len(runtimes):
        raise reader.fail("runtimes", f"{runtimes!r} lists a runtime twice", "list each once")
    unservable = sorted(set(runtimes) - SERVABLE[fmt])
    if unservable:
        raise reader.fail(
            "runtimes",
            f"{unservable[0]} cannot serve {fmt} weights",
            "remove it, or mirror a format it serves",
        )
    eval_set = document.get("eval_set")
    reason = None if eval_set is None else unsafe_path_reason(eval_set)
    if reason:
        raise reader.fail(
            "eval_set",
            f"{eval_set!r} is not a path inside the models directory: {reason}",
            "give a relative path with no `..`, e.g. 'evals/general.jsonl'",
        )
    oci = document.get("oci")
    if oci is None:
        raise reader.fail("oci", "is missing", "add [oci] with repository = 'models/<name>'")
    if not isinstance(oci, dict):
        raise reader.fail("oci", "is not a table", "add [oci] with repository = 'models/<name>'")
    reader.known_keys(oci, OCI_KEYS, "oci")
    repository = reader.text(
        oci,
        "oci.repository",
        "repository",
        OCI_REPOSITORY,
        "use a lower-case OCI repository name, e.g. 'models/<name>'",
    )
    registry = reader.text(
        oci, "oci.registry", "registry", REGISTRY, "give the registry as host:port", required=False
    )
    digest = reader.text(
        oci,
        "oci.digest",
        "digest",
        DIGEST,
        "leave it out until `llmhost models mirror` writes it",
        required=False,
    )
    assert name and license_ and repository
    assert eval_set is None or isinstance(eval_set, str)
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


def gate_limit_problem(name: str, value: object) -> tuple[str, str] | None:
    """Why ``name = value`` is not a gate limit, as (problem, fix); None when it is one.

    The same words fit a model file's [gates] and a host's `gate_limits`.
    """
    if name not in GATE_LIMIT_RANGES:
        return f"is not a gate limit{did_you_mean(name, GATE_LIMITS)}", (
            f"use one of {', '.join(GATE_LIMITS)}"
        )
    limits = GATE_LIMIT_RANGES[name]
    fix = f"give {name} a number with {limits}"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{value!r} is not a gate limit: {name} is a number", fix
    if not math.isfinite(value):
        return (
            f"{value!r} is not a gate limit: {name} needs a finite number (inf or nan cannot fail)",
            fix,
        )
    if value not in limits:
        return f"{value!r} is not a gate limit: {name} needs {limits} ({limits.why})", fix
    return None


def gate_limit_values(table: dict[str, Any], key: str) -> tuple[dict[str, float], str | None]:
    """The limits in ``table`` (tables in it are left to the caller), or the first bad one's
    key: a name that is not a limit, or a value outside its range (`gate_limit_problem`)."""
    limits: dict[str, float] = {}
    for name, value in table.items():
        if isinstance(value, dict):
            continue
        if gate_limit_problem(name, value):
            return limits, f"{key}.{name}"
        limits[name] = float(value)
    return limits, None


def _limits(reader: _Reader, table: dict[str, Any], prefix: str) -> dict[str, float]:
    """The limits of one [gates] or [gates.<class>] table, every entry checked."""
    for name, value in table.items():
        problem = gate_limit_problem(name, value)
        if problem:
            raise reader.fail(f"{prefix}.{name}", *problem)
    return gate_limit_values(table, prefix)[0]


def _gates(
    reader: _Reader, document: dict[str, Any], classes: dict[str, Any]
) -> dict[str, dict[str, float]]:
    table = document.get("gates", {})
    if not isinstance(table, dict):
        raise reader.fail("gates", "is not a table", "use [gates] with limits, e.g. ttft_p95_ms")
    per_class = {name: value for name, value in table.items() if isinstance(value, dict)}
    common = {name: value for name, value in table.items() if name not in per_class}
    gates = {"": _limits(reader, common, "gates")}
    for name, limits in per_class.items():
        if name not in classes:
            raise reader.fail(
                f"gates.{name}",
                f"{name!r} is not a hardware class{did_you_mean(name, list(classes))}",
                f"use one of {', '.join(sorted(classes))}",
            )
        gates[name] = _limits(reader, limits, f"gates.{name}")
    return {name: limits for name, limits in gates.items() if limits}


def load_catalog(directory: Path | None = None) -> dict[str, Model]:
    directory = directory or catalog_directory()
    return {path.stem: load_model(path) for path in sorted(directory.glob("*.toml"))}


def find(name: str, directory: Path | None = None) -> Model:
    directory = directory or catalog_directory()
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a model name",
            key="model",
            fix="model names are lower-case letters, digits, . _ - (the file name, less .toml)",
        )
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
