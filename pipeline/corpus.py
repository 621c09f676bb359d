"""Corpus manifests: JSONL, one utterance per line (the NeMo convention).

Fields: `audio_filepath` (absolute, or relative to the manifest's folder), `duration`
(seconds), `text`, `speaker`; optional `id`. Users can bring their own.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import DataError
from .fsutil import atomic_write_text
from .tokenizer import normalize_text

MAX_DURATION = (
    3600.0  # seconds: an utterance is at most an hour of audio (training further limits it: train.max_seconds)
)


@dataclass(frozen=True)
class Utterance:
    id: str
    audio_filepath: str
    duration: float
    text: str
    speaker: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "utterance") -> Utterance:
        if not isinstance(d, dict):
            raise DataError(f"{where}: expected a JSON object, got {type(d).__name__}.")
        missing = [k for k in ("audio_filepath", "duration", "text") if k not in d]
        if missing:
            raise DataError(f"{where}: missing field `{missing[0]}` (need audio_filepath, duration, text).")
        path, text, dur = d["audio_filepath"], d["text"], d["duration"]
        if not isinstance(path, str) or not path:
            raise DataError(f"{where}: `audio_filepath` must be a non-empty string.")
        if not isinstance(text, str) or not normalize_text(text):
            raise DataError(f"{where}: transcript `text` is empty.")
        if isinstance(dur, bool) or not isinstance(dur, (int, float)) or not (0 < dur <= MAX_DURATION):
            raise DataError(
                f"{where}: `duration` must be a number of seconds above 0 and at most {MAX_DURATION:g}, got {dur!r}."
            )
        speaker = d.get("speaker", "unknown")
        uid = d.get("id", Path(path).stem)
        if not isinstance(speaker, str) or not isinstance(uid, str):
            raise DataError(f"{where}: `speaker` and `id` must be strings.")
        return cls(uid, path, float(dur), normalize_text(text), speaker)


@dataclass(frozen=True)
class Corpus:
    """A list of utterances and the folder relative paths resolve against."""

    utterances: tuple[Utterance, ...]
    root: Path

    def audio_path(self, utt: Utterance) -> Path:
        """Resolve an utterance's audio path; relative paths may not escape `root`."""
        p = Path(utt.audio_filepath)
        if p.is_absolute():
            return p
        full = (self.root / p).resolve()
        if not full.is_relative_to(self.root.resolve()):
            raise DataError(
                f"utterance {utt.id}: audio_filepath {utt.audio_filepath!r} escapes the manifest folder {self.root}."
            )
        return full

    def __len__(self) -> int:
        return len(self.utterances)


def read_manifest(path: Path) -> Corpus:
    """Read a JSONL corpus manifest; every bad line is a `DataError` naming file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DataError(f"corpus manifest {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"corpus manifest {path} cannot be read ({exc}).") from None
    utts: list[Utterance] = []
    seen: set[str] = set()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not valid JSON ({exc.msg}).") from None
        utt = Utterance.from_dict(obj, where)
        if utt.id in seen:
            raise DataError(f"{where}: duplicate utterance id {utt.id!r}.")
        seen.add(utt.id)
        utts.append(utt)
    if not utts:
        raise DataError(f"corpus manifest {path} holds no utterances.")
    return Corpus(tuple(utts), path.parent)


def write_manifest(path: Path, utterances: list[Utterance]) -> None:
    atomic_write_text(Path(path), "".join(json.dumps(u.to_dict()) + "\n" for u in utterances))
