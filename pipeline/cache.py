"""Content-addressed stage cache: a stage reruns only when its inputs (config + data + code) change.

Each stage output is a folder `<root>/<stage>/<key>/` written atomically, with
`stage.json` (the stage's result summary) inside; a folder without it never exists,
so an interrupted stage is simply redone.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

from .errors import ArtifactError
from .fsutil import atomic_directory, atomic_write_json

log = logging.getLogger(__name__)


def digest(obj: Any) -> str:
    """sha256 of a JSON-serializable object (key order irrelevant)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class StageCache:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:20]

    def work_folder(self, stage: str, key: str) -> Path:
        """A persistent scratch folder for a stage that can resume (e.g. training checkpoints)."""
        return self.root / stage / f"{key[:20]}.work"

    def run(self, stage: str, key_parts: dict[str, Any], fn: Callable[[Path], dict[str, Any]]) -> tuple[Path, dict[str, Any]]:
        """Return (folder, summary) of `stage` for these inputs, running `fn(staging_folder)` if needed."""
        key = digest(key_parts)
        out = self.folder(stage, key)
        done = out / "stage.json"
        if done.exists():
            try:
                info = json.loads(done.read_text())
                log.info("%s: reusing %s", stage, out)
                return out, info["summary"]
            except (OSError, ValueError, KeyError):
                log.warning("%s: cached summary %s is unreadable, rebuilding", stage, done)
        log.info("%s: running", stage)
        with atomic_directory(out) as tmp:
            summary = fn(tmp)
            atomic_write_json(tmp / "stage.json", {"stage": stage, "key": key, "inputs": key_parts, "summary": summary})
        return out, summary

    def load_summary(self, folder: Path) -> dict[str, Any]:
        try:
            return json.loads((folder / "stage.json").read_text())["summary"]
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"stage output {folder} is incomplete ({exc}); delete it to rebuild.") from None
