"""The model directory: built from the store beside its destination, renamed into place.

A serving process must never see a half-written model, and the weights should
take disk space once however many models share them. So the directory is filled
with hard links to the verified blobs under a temporary name next to ``dest``,
made durable, and renamed over it in one step. The manifest it was built from is
kept inside it (``layout.MANIFEST_FILE``), which is how a later run, and the
control side's fact, tell that it already holds the artifact asked for.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path

from llmhost.onhost.layout import MANIFEST_FILE, is_materialised
from llmhost.onhost.pull.blobs import blob_path, fsync_dir
from llmhost.onhost.pull.errors import CannotRun, Failure, IntegrityError
from llmhost.onhost.pull.manifest import Layer, parse_manifest, sha256_of


def materialised_layers(dest: Path, digest: str) -> list[Layer] | None:
    """The files, when ``dest`` already holds exactly this artifact; else None.

    The manifest kept inside dest is checked against the digest, and the files
    beside it against what it lists (``layout.is_materialised``): a missing,
    truncated or extra file means dest gets rebuilt, not trusted.
    """
    try:
        body = (dest / MANIFEST_FILE).read_bytes()
    except OSError:
        return None
    manifest_digest = sha256_of(body)
    if manifest_digest != digest:
        return None
    try:
        layers = parse_manifest(body, source=str(dest / MANIFEST_FILE))
    except IntegrityError:
        return None
    try:
        files = _regular_files(dest)
    except OSError:  # an unreadable part of dest cannot be vouched for
        return None
    sizes = {layer.title: layer.size for layer in layers}
    return layers if is_materialised(manifest_digest, files, digest, sizes) else None


def _regular_files(dest: Path) -> dict[str, int]:
    """Every regular file in dest but its manifest: relative POSIX path -> size.

    Symlinks are not regular files, so a layer replaced by one counts as missing.
    """

    def fail(error: OSError) -> None:
        raise error

    files: dict[str, int] = {}
    for root, _, names in os.walk(dest, onerror=fail):
        for name in names:
            path = Path(root, name)
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                files[path.relative_to(dest).as_posix()] = info.st_size
    files.pop(MANIFEST_FILE, None)
    return files


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def clean_stale_siblings(dest: Path) -> None:
    """Remove temp dirs left next to dest by runs that were killed."""
    pattern = glob.escape(str(dest)) + ".*-*"
    for name in glob.glob(pattern):
        kind, _, pid = name[len(str(dest)) + 1 :].partition("-")
        if kind in ("tmp", "old") and pid.isdigit() and not _pid_alive(int(pid)):
            _remove_tree(Path(name))


def _populate(tmp: Path, body: bytes, layers: Sequence[Layer], store: Path) -> None:
    """Fill ``tmp`` with hard links to the store and the manifest itself."""
    tmp.mkdir()
    for layer in layers:
        target = tmp.joinpath(*layer.title.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blob_path(store, layer.digest), target)
        except OSError as exc:
            raise CannotRun(
                f"cannot hard-link {layer.title} from --store {store} into {tmp}: {exc.strerror}. "
                "Fix: keep --store and --dest on the same filesystem",
                digest=layer.digest,
                title=layer.title,
            ) from None
    manifest = tmp / MANIFEST_FILE
    with open(manifest, "xb") as file:
        file.write(body)
        file.flush()
        os.fsync(file.fileno())
    manifest.chmod(0o444)
    for directory, _, _ in os.walk(tmp):
        fsync_dir(Path(directory))


def _swap_into_place(tmp: Path, dest: Path, digest: str) -> bool:
    """Rename the finished dir to dest; False when a concurrent run already placed it."""
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise CannotRun(f"--dest {dest} exists and is not a directory. Fix: move it away")
    if dest.exists():  # a damaged or foreign dir at our path: swap it out, then drop it
        old = dest.with_name(f"{dest.name}.old-{os.getpid()}")
        os.rename(dest, old)
        os.rename(tmp, dest)
        _remove_tree(old)
    else:
        try:
            os.rename(tmp, dest)
        except OSError:
            if materialised_layers(dest, digest) is None:
                raise
            _remove_tree(tmp)
            return False
    fsync_dir(dest.parent)
    return True


def materialise(dest: Path, body: bytes, layers: Sequence[Layer], store: Path, digest: str) -> bool:
    """Build the model dir beside dest and rename it in; True when dest changed."""
    tmp = dest.with_name(f"{dest.name}.tmp-{os.getpid()}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        _remove_tree(tmp)
        _populate(tmp, body, layers, store)
        return _swap_into_place(tmp, dest, digest)
    except OSError as exc:
        raise CannotRun(
            f"cannot build {dest}: {exc}. Fix: check permissions and space of its directory",
            failures=[Failure("materialise", str(exc))],
        ) from None
    finally:
        with contextlib.suppress(OSError):
            _remove_tree(tmp)
