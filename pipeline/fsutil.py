"""Atomic file and directory writes, and the ownership rule for output folders.

A reader sees the old complete output or the new one, never half of either. A command
replaces a folder only if the pipeline wrote it (it holds `MARKER`, naming what it holds)
or the folder is empty: the pipeline never deletes a file it did not create.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .errors import HostError, OutputError, host_error

MARKER = ".pipeline-output.json"  # in every folder a command writes whole: what it holds and which tool wrote it


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` via a temporary file in the same folder and a rename."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs get the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise host_error("write", path, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


# ----------------------------------------------------------------------------- ownership


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a folder the pipeline wrote, or None."""
    try:
        info = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("tool") == "pipeline" else None


def marker(holds: str) -> dict[str, Any]:
    return {"tool": "pipeline", "holds": holds}


def check_replaceable(path: Path, holds: str, legacy: Callable[[Path], bool] | None = None) -> None:
    """`OutputError` unless the pipeline may replace `path`: it does not exist, is an empty folder, holds the
    pipeline's marker, or is recognized by `legacy` (output the pipeline wrote before it marked its folders)."""
    path = Path(path)
    try:
        if not path.exists() and not path.is_symlink():
            return
        if path.is_symlink() or not path.is_dir():
            raise OutputError(f"{path} is a file, not a folder: choose another output folder for the {holds}.")
        if not any(path.iterdir()) or read_marker(path) is not None or (legacy is not None and legacy(path)):
            return
    except OSError as exc:
        raise host_error("read", path, exc) from None
    raise OutputError(
        f"{path} already holds files the pipeline did not write; it would be replaced by the {holds}, so "
        f"nothing was done: choose a new or empty folder, or move those files away."
    )


@contextlib.contextmanager
def atomic_directory(
    path: Path, holds: str | None = None, legacy: Callable[[Path], bool] | None = None
) -> Iterator[Path]:
    """Yield a fresh staging folder; on success it replaces `path` whole, on error it vanishes.

    With `holds` (what the folder holds, for the marker and for messages), `path` is replaced only if
    `check_replaceable` allows it, checked before and again just before the rename, and the new folder gets the
    marker. Without it the caller owns the parent already (the stage cache inside a work folder). The previous
    `path` (if any) stays complete until the final rename.
    """
    path = Path(path)
    if holds is not None:
        check_replaceable(path, holds, legacy)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_partials(path)
        stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".partial", dir=path.parent))
        stage.chmod(0o777 & ~_umask())
    except OSError as exc:
        raise host_error("write", path, exc) from None
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    try:
        if holds is not None:
            (stage / MARKER).write_text(json.dumps(marker(holds)) + "\n")
            check_replaceable(path, holds, legacy)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.old.{os.getpid()}"
            os.replace(path, old)
        os.replace(stage, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(stage, ignore_errors=True)
        raise host_error("write", path, exc) from None
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_partials(path: Path) -> None:
    """Staging folders left by a killed process (`.<name>.<pid>.*.partial`, pid gone) are removed."""
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.partial"):
        pid = stale.name[len(path.name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def inside(a: Path, b: Path) -> bool:
    """Whether `a` is `b` or lies inside it (both resolved, so links and `..` do not hide it)."""
    a, b = Path(a).resolve(), Path(b).resolve()
    return a == b or a.is_relative_to(b)


def nearest_existing(path: Path) -> Path:
    """`path` or its nearest ancestor that exists."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_writable(path: Path, what: str) -> None:
    """`HostError` (or `OutputError` for a file in the way) unless a folder can be created or written at `path`."""
    path = Path(path)
    base = nearest_existing(path)
    if not base.is_dir():
        raise OutputError(f"{base} is a file, so the {what} cannot be written at {path}: choose another folder.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise HostError(f"cannot write the {what} at {path}: {base} is not writable.")


def free_bytes(path: Path) -> int:
    """Free bytes on the file system that holds `path` (or would hold it)."""
    try:
        return shutil.disk_usage(nearest_existing(path)).free
    except OSError:
        return 1 << 62  # unknown: not a reason to refuse


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
