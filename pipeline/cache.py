"""Content-addressed stage cache: a stage reruns only when its inputs (config + data + code) change.

Each stage output is a folder `<root>/<stage>/<key>/` written atomically, with
`stage.json` (the stage's result summary) inside; a folder without it never exists,
so an interrupted stage is simply redone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError, OutputError, host_error
from .fsutil import MARKER, atomic_directory, atomic_write_json, marker, read_marker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """What a stage wrote: its folder, the key that identifies it (inputs and code) and its summary."""

    folder: Path
    key: dict[str, Any]
    summary: dict[str, Any]


def digest(obj: Any) -> str:
    """sha256 of a JSON-serializable object (key order irrelevant)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


WORK_HOLDS = "pipeline work folder (stage cache)"


def _legacy_work_dir(path: Path) -> bool:
    """A work folder written before the pipeline marked its folders: nothing in it but `cache/`."""
    return {p.name for p in path.iterdir()} <= {"cache"} and (path / "cache").is_dir()


def open_cache(work_dir: Path) -> StageCache:
    """The stage cache in `work_dir`, claimed for the pipeline: the folder must be new, empty or the pipeline's own (it
    then gets the marker), never a folder of the user's that the cache's clean-ups could delete from."""
    work_dir = Path(work_dir)
    try:
        if work_dir.exists() and not work_dir.is_dir():
            raise OutputError(f"work folder {work_dir} is a file, not a folder: pass --work-dir a folder.")
        if work_dir.is_dir() and read_marker(work_dir) is None:
            if any(work_dir.iterdir()) and not _legacy_work_dir(work_dir):
                raise OutputError(
                    f"work folder {work_dir} already holds files the pipeline did not write, and the stage cache "
                    f"deletes what it replaces there: pass --work-dir a new or empty folder."
                )
        if read_marker(work_dir) is None:
            work_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_json(work_dir / MARKER, marker(WORK_HOLDS))
    except OSError as exc:
        raise host_error("use the work folder", work_dir, exc) from None
    return StageCache(work_dir / "cache")


def link_stages(from_work_dir: Path, to_work_dir: Path, stages: tuple[str, ...] = ("data", "features")) -> None:
    """Give the stage cache in `to_work_dir` the finished outputs of `stages` that `from_work_dir`'s holds, as hard
    links (no copy of the audio or features): what a second worker on the same disk needs to skip those stages."""
    import os
    import shutil

    open_cache(to_work_dir)
    for stage in stages:
        for folder in (Path(from_work_dir) / "cache" / stage).glob("*/stage.json"):
            dst = Path(to_work_dir) / "cache" / stage / folder.parent.name
            if not dst.exists():
                shutil.copytree(folder.parent, dst, copy_function=os.link)


class StageCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:20]

    def work_folder(self, stage: str, key: str) -> Path:
        """A persistent scratch folder for a stage that can resume (e.g. training checkpoints)."""
        return self.root / stage / f"{key[:20]}.work"

    def run(self, stage: str, key_parts: dict[str, Any], fn: Callable[[Path], dict[str, Any]]) -> Artifact:
        """The artifact of `stage` for these inputs, running `fn(staging_folder)` (it returns the summary) if needed."""
        key = digest(key_parts)
        out = self.folder(stage, key)
        done = out / "stage.json"
        if done.exists():
            try:
                info = json.loads(done.read_text())
                log.info("%s: reusing %s", stage, out)
                return Artifact(out, key_parts, info["summary"])
            except (OSError, ValueError, KeyError):
                log.warning("%s: cached summary %s is unreadable, rebuilding", stage, done)
        log.info("%s: running", stage)
        with atomic_directory(out) as tmp:
            summary = fn(tmp)
            atomic_write_json(tmp / "stage.json", {"stage": stage, "key": key, "inputs": key_parts, "summary": summary})
        return Artifact(out, key_parts, summary)

    def load_summary(self, folder: Path) -> dict[str, Any]:
        try:
            return json.loads((folder / "stage.json").read_text())["summary"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"stage output {folder} is incomplete ({exc}); delete it to rebuild.") from None
