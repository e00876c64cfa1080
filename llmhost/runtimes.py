"""Runtime sources and builds: llama-server built once per hardware class, vLLM pinned by lock.

``inventories/runtimes.toml`` pins the sources: the llama.cpp source archive by
sha256, and the vLLM version with a lock file of hashed distributions.
``llmhost runtimes build --class C`` downloads the archive (verified before it is
unpacked), builds ``llama-server`` and ``llama-bench`` with the class's CMake
options, pushes them to every registry as one OCI artifact, reads each back
verified, and records the manifest digest in ``inventories/runtime-builds.toml``.
Hosts pull that digest with the same puller as weights, so a rebuilt host runs
the very binary its class was benchmarked with, and never needs a compiler.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmhost.catalog import DIGEST, OCI_REPOSITORY, SHA256, ModelFile
from llmhost.errors import ConfigError
from llmhost.hardware import HardwareClass
from llmhost.paths import INVENTORIES, REPO_ROOT
from llmhost.textfiles import first_unknown_key, read_toml

LLAMA_CPP_BINARIES = ("llama-server", "llama-bench")
BUILD_INFO = "build.json"
CONFIG_MEDIA_TYPE = "application/vnd.llmhost.runtime.config.v1+json"
# Every build: a static, release build of just the server and the benchmark, with no
# network code (hosts never download models themselves) and ggml's own thread pool
# (no OpenMP runtime needed on hosts).
BASE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DGGML_OPENMP=OFF",
)
# Pins are matched whole (``fullmatch``): a trailing newline is refused like any other junk.
_VERSION = re.compile(
    r"[0-9]+(?:\.[0-9]+)*(?:(?:a|b|rc|\.post|\.dev)[0-9]+)*(?:\+[a-z0-9]+(?:\.[a-z0-9]+)*)?"
)
_URL = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]+)?/[^\s\x00-\x1f\x7f]*")
# A path of plain segments (letters, digits, _ . + -); `.` and `..` segments refused apart.
_RELATIVE_PATH = re.compile(r"[A-Za-z0-9_.+-]+(?:/[A-Za-z0-9_.+-]+)*")
# The keys runtimes.toml takes, table by table; any other is refused with the nearest named.
SOURCES_KEYS = {
    "llama_cpp": ("source_url", "source_sha256", "source_subdir", "repository"),
    "vllm": ("version", "lock", "repository"),
}
BUILD_KEYS = ("digest", "files")
BUILD_FILE_KEYS = ("path", "size", "sha256")


@dataclass(frozen=True)
class LlamaCppSource:
    url: str
    sha256: str
    subdir: str
    repository: str


@dataclass(frozen=True)
class VllmPin:
    version: str
    lock: Path
    repository: str  # where `llmhost runtimes publish-vllm` pushes the lock's wheels


@dataclass(frozen=True)
class RuntimeSources:
    llama_cpp: LlamaCppSource
    vllm: VllmPin
    definition: Path


@dataclass(frozen=True)
class LlamaCppBuild:
    hardware_class: str
    digest: str
    files: tuple[ModelFile, ...]

    def file(self, name: str) -> ModelFile:
        return next(f for f in self.files if f.path == name)


def sources_file() -> Path:
    return Path(os.environ.get("LLMHOST_RUNTIMES_FILE", INVENTORIES / "runtimes.toml"))


def builds_file() -> Path:
    return Path(os.environ.get("LLMHOST_RUNTIME_BUILDS", INVENTORIES / "runtime-builds.toml"))


def _text(
    table: dict[str, Any],
    key: str,
    prefix: str,
    path: Path,
    pattern: re.Pattern[str],
    fix: str = "see the file's header",
) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        problem = "is missing" if value is None else f"{value!r} is not valid"
        raise ConfigError(f"{problem} in {path}", key=f"{prefix}.{key}", fix=fix)
    return value


def _relative_path(
    table: dict[str, Any], key: str, prefix: str, path: Path, fix: str, suffix: str = ""
) -> str:
    """A relative path of plain segments, with no `.` or `..` segment, ending in ``suffix``."""
    value = _text(table, key, prefix, path, _RELATIVE_PATH, fix)
    if any(part in (".", "..") for part in value.split("/")) or not value.endswith(suffix):
        raise ConfigError(f"{value!r} is not valid in {path}", key=f"{prefix}.{key}", fix=fix)
    return value


def _known_keys(table: dict[str, Any], known: tuple[str, ...], prefix: str, path: Path) -> None:
    found = first_unknown_key(table, known, f"[{prefix}]" if prefix else "the top level")
    if found:
        name, problem, fix = found
        key = f"{prefix}.{name}" if prefix else name
        raise ConfigError(f"{problem} in {path}", key=key, fix=fix)


def _table(document: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = document.get(key)
    if not isinstance(value, dict):
        problem = "is missing" if value is None else "is not a table"
        raise ConfigError(f"{problem} in {path}", key=key, fix=f"declare [{key}] (see the header)")
    _known_keys(value, SOURCES_KEYS[key], key, path)
    return value


def load_sources(path: Path | None = None) -> RuntimeSources:
    path = path or sources_file()
    document = read_toml(path, "runtimes")
    _known_keys(document, tuple(SOURCES_KEYS), "", path)
    llama = _table(document, "llama_cpp", path)
    vllm = _table(document, "vllm", path)
    subdir = _relative_path(
        llama,
        "source_subdir",
        "llama_cpp",
        path,
        "name the llama.cpp directory inside the archive, e.g. 'llama.cpp-b1234'",
    )
    lock = Path(
        _relative_path(
            vllm,
            "lock",
            "vllm",
            path,
            "give the lock file's path in the repository, e.g. 'inventories/locks/vllm-X.txt'",
            suffix=".txt",
        )
    )
    return RuntimeSources(
        llama_cpp=LlamaCppSource(
            url=_text(llama, "source_url", "llama_cpp", path, _URL, "give an https:// URL"),
            sha256=_text(
                llama,
                "source_sha256",
                "llama_cpp",
                path,
                SHA256,
                "give the archive's SHA256 as 64 lower-case hex digits",
            ),
            subdir=subdir,
            repository=_text(llama, "repository", "llama_cpp", path, OCI_REPOSITORY),
        ),
        vllm=VllmPin(
            version=_text(vllm, "version", "vllm", path, _VERSION, "give a version, e.g. '0.10.1'"),
            lock=REPO_ROOT / lock,
            repository=_text(vllm, "repository", "vllm", path, OCI_REPOSITORY),
        ),
        definition=path,
    )


def load_builds(path: Path | None = None) -> dict[str, LlamaCppBuild]:
    """llama.cpp builds by hardware class; a missing file means nothing is built yet."""
    path = path or builds_file()
    if not path.exists():
        return {}
    builds = {}
    for name, table in read_toml(path, "runtime-builds").items():
        prefix = f"{name}"
        if not isinstance(table, dict):
            raise ConfigError(
                f"is not a table in {path}", key=prefix, fix="rebuild the class to rewrite it"
            )
        _known_keys(table, BUILD_KEYS, prefix, path)
        files = table.get("files")
        if not isinstance(files, list) or not files:
            raise ConfigError(
                f"has no files in {path}", key=f"{prefix}.files", fix="rebuild the class"
            )
        builds[name] = LlamaCppBuild(
            hardware_class=name,
            digest=_text(table, "digest", prefix, path, DIGEST),
            files=tuple(_build_file(f, f"{prefix}.files[{i}]", path) for i, f in enumerate(files)),
        )
    return builds


def _build_file(entry: object, prefix: str, path: Path) -> ModelFile:
    fix = "rebuild the class to rewrite it"
    if not isinstance(entry, dict):
        raise ConfigError(f"is not a table in {path}", key=prefix, fix=fix)
    _known_keys(entry, BUILD_FILE_KEYS, prefix, path)
    name = _relative_path(entry, "path", prefix, path, fix)
    size = entry.get("size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise ConfigError(f"{size!r} is not a size in {path}", key=f"{prefix}.size", fix=fix)
    return ModelFile(path=name, size=size, sha256=_text(entry, "sha256", prefix, path, SHA256, fix))


def find_build(hardware_class: str) -> LlamaCppBuild:
    build = load_builds().get(hardware_class)
    if build is None:
        raise ConfigError(
            f"no llama.cpp build is recorded for class {hardware_class} in {builds_file()}",
            key="hardware",
            fix=f"build and push one: llmhost runtimes build --class {hardware_class}",
        )
    return build


def record_build(build: LlamaCppBuild, path: Path | None = None) -> None:
    """Write one class's build into the builds file, keeping the other classes."""
    path = path or builds_file()
    builds = load_builds(path)
    builds[build.hardware_class] = build
    lines = [
        "# llama.cpp builds by hardware class: written by `llmhost runtimes build`; hosts pull",
        "# these digests. Commit this file with the hardware.toml change that caused the build.",
    ]
    for name in sorted(builds):
        entry = builds[name]
        lines += ["", f"[{name}]", f'digest = "{entry.digest}"', *files_toml(entry.files)]
    path.write_text("\n".join(lines) + "\n")


def files_toml(files: Sequence[ModelFile]) -> list[str]:
    """``files = [...]`` as the builds and wheels records write it, one file a line."""
    return [
        "files = [",
        *(f'  {{ path = "{f.path}", size = {f.size}, sha256 = "{f.sha256}" }},' for f in files),
        "]",
    ]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def download_verified(url: str, sha256: str, dest: Path) -> Path:
    """Fetch ``url`` to a temporary name, check its sha256, then rename it to ``dest``."""
    if dest.exists() and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
        total = int(response.headers.get("Content-Length") or 0)
        done, shown = 0, -1
        while chunk := response.read(1024 * 1024):
            digest.update(chunk)
            out.write(chunk)
            done += len(chunk)
            tenth = done * 10 // total if total else -1
            if tenth != shown:
                print(
                    f"download: {dest.name} {done >> 20} MiB of {total >> 20} MiB", file=sys.stderr
                )
                shown = tenth
    if digest.hexdigest() != sha256:
        partial.unlink()
        raise ConfigError(
            f"{url} has sha256 {digest.hexdigest()}, not the pinned {sha256}",
            key="llama_cpp.source_sha256",
            fix="the archive changed upstream or in transit: check it, then pin the new hash",
        )
    partial.rename(dest)
    return dest


def compiler_identity() -> str:
    """What else decides the binary: the C++ compiler and the machine it targets."""
    found = subprocess.run(["c++", "--version"], capture_output=True, text=True, check=False)
    return f"{found.stdout.splitlines()[0] if found.stdout else 'unknown'} {platform.machine()}"


def build_flags(hardware: HardwareClass) -> list[str]:
    return [*BASE_FLAGS, *hardware.llama_cpp.build_flags]


def build_key(source: LlamaCppSource, hardware: HardwareClass) -> str:
    inputs = {"source": source.sha256, "flags": build_flags(hardware), "cc": compiler_identity()}
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def _check_build_tools(hardware: HardwareClass) -> None:
    needed = ["cmake", "c++"] + (["nvcc"] if hardware.has_gpu else [])
    missing = [tool for tool in needed if shutil.which(tool) is None]
    if missing:
        raise ConfigError(
            f"building llama.cpp for class {hardware.name} needs {', '.join(missing)}",
            key="hardware",
            fix="run the build on a machine with cmake and a C++ compiler"
            + (" and the class's CUDA toolkit" if hardware.has_gpu else ""),
        )


def build_llama_cpp(
    source: LlamaCppSource, hardware: HardwareClass, cache: Path, jobs: int | None = None
) -> Path:
    """Build llama-server and llama-bench for a class; returns the artifact directory.

    Builds are cached by their inputs (archive hash, flags, compiler), so a second
    call with nothing changed returns at once.
    """
    _check_build_tools(hardware)
    key = build_key(source, hardware)
    artifact = cache / "builds" / f"{hardware.name}-{key}"
    if (artifact / BUILD_INFO).exists():
        return artifact
    archive = download_verified(
        source.url, source.sha256, cache / "sources" / f"{source.sha256}.tar.gz"
    )
    with tempfile.TemporaryDirectory(prefix="llmhost-build-", dir=cache) as scratch:
        work = Path(scratch)
        with tarfile.open(archive) as tar:
            tar.extractall(work / "src", filter="data")
        tree = work / "src" / source.subdir
        if not (tree / "CMakeLists.txt").exists():
            raise ConfigError(
                f"{source.subdir} in the archive has no CMakeLists.txt",
                key="llama_cpp.source_subdir",
                fix="name the llama.cpp directory inside the archive",
            )
        out = work / "out"
        print(f"build: llama.cpp for class {hardware.name} ({key})", file=sys.stderr)
        subprocess.run(
            ["cmake", "-S", str(tree), "-B", str(out), *build_flags(hardware)],
            check=True,
            stdout=sys.stderr,
        )
        subprocess.run(
            [
                "cmake",
                "--build",
                str(out),
                "--parallel",
                str(jobs or os.cpu_count() or 1),
                "--target",
                *LLAMA_CPP_BINARIES,
            ],
            check=True,
            stdout=sys.stderr,
        )
        staging = work / "artifact"
        staging.mkdir()
        for binary in LLAMA_CPP_BINARIES:
            shutil.copy2(out / "bin" / binary, staging / binary)
        info = {
            "source_sha256": source.sha256,
            "flags": build_flags(hardware),
            "compiler": compiler_identity(),
            "class": hardware.name,
        }
        (staging / BUILD_INFO).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        artifact.parent.mkdir(parents=True, exist_ok=True)
        staging.rename(artifact)
    return artifact


def artifact_files(directory: Path) -> tuple[ModelFile, ...]:
    names = [*LLAMA_CPP_BINARIES, BUILD_INFO]
    return tuple(
        ModelFile(
            path=name, size=(directory / name).stat().st_size, sha256=sha256_file(directory / name)
        )
        for name in names
    )


def config_blob(hardware_class: str, files: Sequence[ModelFile]) -> bytes:
    return artifact_config({"runtime": "llama.cpp", "class": hardware_class}, files)


def artifact_config(fields: dict[str, str], files: Sequence[ModelFile]) -> bytes:
    """A runtime artifact's OCI config: what it is, and every file with its size and hash."""
    files_list = [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files]
    document = {**fields, "files": files_list}
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


# -- vLLM lock ------------------------------------------------------------------------------

# The hosts vLLM is locked for: Debian 12 / Ubuntu 22.04 (CPython 3.11 and manylinux x86_64).
LOCK_PYTHON = "3.11"
LOCK_PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux_2_5_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
    "any",
)


def hosts_target() -> list[str]:
    """pip's options for the hosts' interpreter and platform, not this machine's."""
    target = [
        "--only-binary=:all:", "--python-version", LOCK_PYTHON, "--implementation", "cp",
        "--abi", "cp" + LOCK_PYTHON.replace(".", ""), "--abi", "abi3", "--abi", "none",
    ]  # fmt: skip
    for platform_tag in LOCK_PLATFORMS:
        target += ["--platform", platform_tag]
    return target


def run_pip(command: list[str], *, show_output: bool, problem: str, key: str, fix: str) -> None:
    """Run pip; a failure is a ConfigError ending with pip's last line of error."""
    done = subprocess.run(
        command,
        stdout=sys.stderr if show_output else subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ConfigError(f"{problem}: {last}", key=key, fix=fix)


def vllm_resolve_command(version: str, report: Path, index_url: str) -> list[str]:
    """pip's resolver, run for the hosts' platform, writing what it chose (with hashes)."""
    return [
        sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
        *hosts_target(),
        "--target", str(report.parent / "target"), "--report", str(report),
        "--index-url", index_url, f"vllm=={version}",
    ]  # fmt: skip


def lock_from_report(report: dict[str, Any], version: str) -> str:
    """A requirements file pinning every distribution pip chose, each with its sha256."""
    lines = [
        f"# vLLM {version} and every dependency, for CPython {LOCK_PYTHON} on x86_64 Linux.",
        "# Written by `llmhost runtimes lock-vllm`; hosts install it with --require-hashes.",
    ]
    entries = []
    for item in report.get("install", []):
        name, pinned = item["metadata"]["name"], item["metadata"]["version"]
        digest = item["download_info"].get("archive_info", {}).get("hashes", {}).get("sha256")
        if not digest:
            raise ConfigError(
                f"pip reported no sha256 for {name} {pinned}",
                key="vllm.lock",
                fix="resolve against an index that publishes hashes (PyPI does)",
            )
        entries.append(f"{name.lower()}=={pinned} \\\n    --hash=sha256:{digest}")
    if not any(entry.startswith(f"vllm=={version} ") for entry in entries):
        raise ConfigError(
            f"the resolution has no vllm {version}",
            key="vllm.version",
            fix="check that the version exists on the index",
        )
    return "\n".join([*lines, *sorted(entries)]) + "\n"


def lock_vllm(version: str, dest: Path, index_url: str) -> Path:
    with tempfile.TemporaryDirectory(prefix="llmhost-lock-") as scratch:
        report = Path(scratch) / "report.json"
        run_pip(
            vllm_resolve_command(version, report, index_url),
            show_output=False,
            problem=f"pip could not resolve vllm=={version} for the hosts",
            key="vllm.version",
            fix="pick a version whose dependencies all have wheels on the index",
        )
        text = lock_from_report(json.loads(report.read_text()), version)
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(text)
    return dest


def publish_build(
    artifact: Path, hardware_class: str, repository: str, accesses: Sequence[Any]
) -> LlamaCppBuild:
    """Push the build to every registry, read each copy back verified, record the digest."""
    files = artifact_files(artifact)
    digest = push_verified(
        artifact,
        files,
        config_blob(hardware_class, files),
        repository,
        f"llama.cpp-{hardware_class}",
        accesses,
    )
    build = LlamaCppBuild(hardware_class=hardware_class, digest=digest, files=files)
    record_build(build)
    return build


def push_verified(
    directory: Path,
    files: Sequence[ModelFile],
    config: bytes,
    repository: str,
    name: str,
    accesses: Sequence[Any],
) -> str:
    """Push ``files`` as one artifact to every registry, read each copy back verified;
    returns the one digest they all store it under."""
    from llmhost.mirror import push_artifact
    from llmhost.onhost.pull import pull
    from llmhost.onhost.pull.request import Credentials, PullRequest

    digests = set()
    for access in accesses:
        digest = push_artifact(
            access,
            repository=repository,
            name=name,
            directory=directory,
            files=files,
            config=config,
            config_media_type=CONFIG_MEDIA_TYPE,
        )
        with tempfile.TemporaryDirectory(prefix="llmhost-verify-") as scratch:
            credentials = access.credentials
            pulled = pull(
                PullRequest(
                    registries=(access.url,),
                    repository=repository,
                    digest=digest,
                    store=Path(scratch) / "store",
                    dest=Path(scratch) / "artifact",
                    credentials=Credentials(credentials.username, credentials.password),
                    ca_file=access.ca_file,
                )
            )
            got = {layer.title: layer.digest for layer in pulled.files}
        if got != {f.path: f"sha256:{f.sha256}" for f in files}:
            raise RuntimeError(f"{access.endpoint} returned other files than were pushed")
        digests.add(digest)
    if len(digests) != 1:
        raise RuntimeError(f"registries stored {name} under different digests: {digests}")
    return digests.pop()


# -- vLLM wheels, served from the registry ----------------------------------------------------

WHEELS_KEYS = ("version", "lock_sha256", "digest", "files")
WHEELS_CONFIG_RUNTIME = "vllm-wheels"


@dataclass(frozen=True)
class VllmWheels:
    """Every wheel of a vLLM lock, pushed as one OCI artifact: what hosts install from."""

    version: str
    lock_sha256: str
    digest: str
    files: tuple[ModelFile, ...]


def wheels_file() -> Path:
    return Path(os.environ.get("LLMHOST_VLLM_WHEELS", INVENTORIES / "vllm-wheels.toml"))


def load_vllm_wheels(path: Path | None = None) -> VllmWheels | None:
    """The published wheels of the lock; None when none were published (hosts use the index)."""
    path = path or wheels_file()
    if not path.exists():
        return None
    table = read_toml(path, "vllm-wheels")
    _known_keys(table, WHEELS_KEYS, "", path)
    fix = "publish them again: llmhost runtimes publish-vllm"
    files = table.get("files")
    if not isinstance(files, list) or not files:
        raise ConfigError(f"has no files in {path}", key="vllm-wheels.files", fix=fix)
    return VllmWheels(
        version=_text(table, "version", "vllm-wheels", path, _VERSION, fix),
        lock_sha256=_text(table, "lock_sha256", "vllm-wheels", path, SHA256, fix),
        digest=_text(table, "digest", "vllm-wheels", path, DIGEST, fix),
        files=tuple(_build_file(f, f"vllm-wheels.files[{i}]", path) for i, f in enumerate(files)),
    )


def current_vllm_wheels(pin: VllmPin) -> VllmWheels | None:
    """The published wheels, if they are the pinned lock's (ConfigError: another lock's)."""
    wheels = load_vllm_wheels()
    if wheels is None:
        return None
    lock_sha256 = sha256_file(pin.lock)
    if (wheels.version, wheels.lock_sha256) != (pin.version, lock_sha256):
        raise ConfigError(
            f"{wheels_file()} holds the wheels of vLLM {wheels.version} (lock sha256 "
            f"{wheels.lock_sha256[:12]}), not of the pinned {pin.version} (lock sha256 "
            f"{lock_sha256[:12]})",
            key="vllm.lock",
            fix="publish the pinned lock's wheels: llmhost runtimes publish-vllm --inventory INV",
        )
    return wheels


def record_vllm_wheels(wheels: VllmWheels, path: Path | None = None) -> None:
    path = path or wheels_file()
    lines = [
        "# vLLM's wheels in the registry: written by `llmhost runtimes publish-vllm`; hosts pull",
        "# this digest and install with pip --no-index. Commit it with the lock it was made from.",
        "",
        f'version = "{wheels.version}"',
        f'lock_sha256 = "{wheels.lock_sha256}"',
        f'digest = "{wheels.digest}"',
        *files_toml(wheels.files),
    ]
    path.write_text("\n".join(lines) + "\n")


def vllm_download_command(lock: Path, dest: Path, index_url: str) -> list[str]:
    """pip fetching exactly the lock's wheels (by their hashes) for the hosts' platform."""
    return [
        sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes",
        *hosts_target(),
        "--index-url", index_url, "--dest", str(dest), "-r", str(lock),
    ]  # fmt: skip


def wheel_files(directory: Path) -> tuple[ModelFile, ...]:
    return tuple(
        ModelFile(path=wheel.name, size=wheel.stat().st_size, sha256=sha256_file(wheel))
        for wheel in sorted(directory.glob("*.whl"))
    )


def wheels_config_blob(pin: VllmPin, lock_sha256: str, files: Sequence[ModelFile]) -> bytes:
    fields = {"runtime": WHEELS_CONFIG_RUNTIME, "version": pin.version, "lock_sha256": lock_sha256}
    return artifact_config(fields, files)


def download_vllm_wheels(pin: VllmPin, cache: Path, index_url: str) -> Path:
    """The lock's wheels in ``cache``/vllm-wheels/<lock sha256>/ (pip keeps what it has)."""
    dest = cache / "vllm-wheels" / sha256_file(pin.lock)
    dest.mkdir(parents=True, exist_ok=True)
    run_pip(
        vllm_download_command(pin.lock, dest, index_url),
        show_output=True,
        problem=f"pip could not download the wheels of {pin.lock.name}",
        key="vllm.lock",
        fix="run where the index is reachable (--index-url), or lock again: "
        "llmhost runtimes lock-vllm",
    )
    return dest


def publish_vllm_wheels(pin: VllmPin, directory: Path, accesses: Sequence[Any]) -> VllmWheels:
    """Push the lock's wheels to every registry, read each copy back verified, record them."""
    lock_sha256 = sha256_file(pin.lock)
    files = wheel_files(directory)
    digest = push_verified(
        directory,
        files,
        wheels_config_blob(pin, lock_sha256, files),
        pin.repository,
        f"vllm-{pin.version}",
        accesses,
    )
    wheels = VllmWheels(pin.version, lock_sha256, digest, files)
    record_vllm_wheels(wheels)
    return wheels
