"""Free Spoken Digit Dataset (FSDD): `download_fsdd` / `prepare_fsdd`, lhotse style.

FSDD (Zohar Jackson and contributors, CC BY-SA 4.0): isolated digits, 8 kHz, named
`{digit}_{speaker}_{index}.wav`. The recipe turns them into connected-digit
utterances with the protocol of the dataset's README: train on four speakers'
recordings 5-49, test on their recordings 0-4 (seen speakers) and on every
recording of a fifth speaker (unseen speaker).
"""

from __future__ import annotations

import hashlib
import logging
import re
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import read_wav
from .digits import ConnectRecipe, Recording, build_split
from .errors import DataError, OutputError, host_error
from .fsutil import atomic_directory, check_replaceable

log = logging.getLogger(__name__)

FSDD_COMMIT = "26eb9aaf76e81b692f806f9140c2d2777410d7a1"
FSDD_URL = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/{FSDD_COMMIT}.zip"
# sha256 over "name\0sha256(file)\n" of the 2,500 recordings of the five speakers below,
# sorted by name (computed from the dataset at FSDD_COMMIT).
FSDD_RECORDINGS_SHA256 = "11110d6e58039066ecf4dc9ce1757ef101ff489d0a87a6525fac1d8eab60cd89"
_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


FSDD_SPEAKERS = ("george", "jackson", "nicolas", "theo", "yweweler")  # the five speakers at FSDD_COMMIT


@dataclass(frozen=True)
class FsddRecipe:
    train_speakers: tuple[str, ...] = ("george", "jackson", "nicolas", "theo")
    test_speakers: tuple[str, ...] = ("yweweler",)
    test_indices: tuple[int, int] = (0, 4)  # inclusive: FSDD's official test split
    train_utterances: int = 3000

    @property
    def speakers(self) -> tuple[str, ...]:
        return self.train_speakers + self.test_speakers

    @classmethod
    def holding_out(cls, test_speakers: tuple[str, ...], train_utterances: int) -> FsddRecipe:
        """Every FSDD speaker but `test_speakers` trains; those are the unseen-speaker test."""
        return cls(
            tuple(s for s in FSDD_SPEAKERS if s not in test_speakers),
            tuple(test_speakers),
            train_utterances=train_utterances,
        )


def recordings_dir(fsdd_dir: Path) -> Path:
    """The folder holding the WAVs: `fsdd_dir/recordings` or `fsdd_dir` itself."""
    fsdd_dir = Path(fsdd_dir)
    if fsdd_dir.exists() and not fsdd_dir.is_dir():
        raise DataError(
            f"FSDD folder {fsdd_dir} is a file, not a folder (set --fsdd-dir or PIPELINE_FSDD_DIR to the dataset's "
            "folder)."
        )
    if not fsdd_dir.is_dir():
        raise DataError(
            f"FSDD folder {fsdd_dir} does not exist (set --fsdd-dir or PIPELINE_FSDD_DIR, or use --data synth)."
        )
    sub = fsdd_dir / "recordings"
    d = sub if sub.is_dir() else fsdd_dir
    try:
        names = [p.name for p in d.iterdir()]
    except OSError as exc:
        raise host_error("read the FSDD folder", d, exc) from None
    if not any(_NAME.match(n) for n in names):
        raise DataError(f"FSDD folder {fsdd_dir} holds no recordings named like 0_george_0.wav.")
    return d


def check_complete(rec_dir: Path, speakers: tuple[str, ...]) -> None:
    """`DataError` unless every speaker has every digit, each with the same takes 0..N-1 (FSDD: 50 per digit and
    speaker), so a half-copied dataset is refused instead of silently training on what is left."""
    takes: dict[tuple[str, int], set[int]] = {}
    for p in Path(rec_dir).iterdir():
        m = _NAME.match(p.name)
        if m and m.group(2) in speakers:
            takes.setdefault((m.group(2), int(m.group(1))), set()).add(int(m.group(3)))
    most = max((max(t) for t in takes.values()), default=-1) + 1
    for spk in speakers:
        counts = [len(takes.get((spk, d), ())) for d in range(10)]
        if sum(counts) < 10 * most:
            have = ", ".join(f"{d}: {c}" for d, c in enumerate(counts) if c < most)
            raise DataError(
                f"FSDD folder {rec_dir} is incomplete: speaker {spk} has {sum(counts)} of {10 * most} recordings "
                f"(takes 0-{most - 1} of each digit; short digits {have}); copy the whole dataset or run "
                f"`pipeline download-fsdd`."
            )


def recordings_digest(rec_dir: Path, speakers: tuple[str, ...]) -> str:
    """sha256 identifying the recordings of `speakers` in `rec_dir` (names and contents)."""
    h = hashlib.sha256()
    for p in sorted(rec_dir.iterdir(), key=lambda q: q.name):
        m = _NAME.match(p.name)
        if m and m.group(2) in speakers:
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise host_error("read", p, exc) from None
            h.update(p.name.encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\n")
    return h.hexdigest()


def download_fsdd(
    dest: Path,
    url: str = FSDD_URL,
    expected_sha256: str = FSDD_RECORDINGS_SHA256,
    speakers: tuple[str, ...] = FsddRecipe().speakers,
) -> Path:
    """Download the FSDD archive, verify its recordings, install them at `dest/recordings`.

    Idempotent: an existing verified `dest` is kept. Everything is staged in a hidden folder beside `dest` (the same
    file system) and renamed into place only once the checksum matched: on any failure nothing is left at `dest`.
    `dest` must be new, empty, or an earlier download. Returns `dest`.
    """
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise OutputError(f"{dest} is a file, not a folder: choose a new folder to download FSDD into.")
    if (dest / "recordings").is_dir() and recordings_digest(dest / "recordings", speakers) == expected_sha256:
        log.info("FSDD already present and verified at %s", dest)
        return dest
    check_replaceable(dest, "FSDD download")
    with atomic_directory(dest, "FSDD download") as stage:
        archive = stage / "fsdd.zip"
        _fetch(url, archive)
        staged = stage / "recordings"
        staged.mkdir()
        try:
            with zipfile.ZipFile(archive) as zf:
                for info in zf.infolist():
                    name = Path(info.filename).name
                    if "/recordings/" in f"/{info.filename}" and _NAME.match(name):
                        (staged / name).write_bytes(zf.read(info))  # flat names only: no path traversal
        except (zipfile.BadZipFile, EOFError):
            raise DataError(f"the download from {url} is not a zip archive.") from None
        except OSError as exc:
            raise host_error("write the FSDD recordings to", staged, exc) from None
        archive.unlink()
        got = recordings_digest(staged, speakers)
        if got != expected_sha256:
            raise DataError(
                f"FSDD checksum mismatch for {url}: expected {expected_sha256}, got {got}; nothing was installed."
            )
    return dest


def _fetch(url: str, path: Path) -> None:
    """Stream `url` into `path`: a network failure is a `DataError`, a write failure (disk full) a `HostError`."""
    try:
        resp = urllib.request.urlopen(url, timeout=60)  # noqa: S310 (url is the user's)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot download FSDD from {url}: {getattr(exc, 'reason', exc)}.") from None
    with resp, open(path, "wb") as fh:
        while True:
            try:
                block = resp.read(1 << 20)
            except OSError as exc:
                raise DataError(f"the download from {url} broke off: {exc}.") from None
            if not block:
                return
            try:
                fh.write(block)
            except OSError as exc:
                raise host_error("write", path, exc) from None


def load_recordings(fsdd_dir: Path, sample_rate: int, speakers: tuple[str, ...]) -> list[tuple[Recording, int]]:
    """Every recording of `speakers` as (Recording, index), in file-name order."""
    rec_dir = recordings_dir(fsdd_dir)
    out = []
    for p in sorted(rec_dir.iterdir(), key=lambda q: q.name):
        m = _NAME.match(p.name)
        if m and m.group(2) in speakers:
            out.append((Recording(m.group(2), int(m.group(1)), read_wav(p, sample_rate)), int(m.group(3))))
    missing = sorted(set(speakers) - {r.speaker for r, _ in out})
    if missing:
        raise DataError(f"FSDD directory {fsdd_dir} has no recordings of speaker(s) {', '.join(missing)}.")
    return out


def prepare_fsdd(
    fsdd_dir: Path, out_dir: Path, sample_rate: int, recipe: FsddRecipe, connect: ConnectRecipe, seed: int
) -> dict[str, Path]:
    """Write connected-digit splits `train`, `test_seen`, `test_unseen` under `out_dir`.

    Returns {split name: JSONL manifest path}.
    """
    recs = load_recordings(fsdd_dir, sample_rate, recipe.speakers)
    lo, hi = recipe.test_indices
    train = [r for r, i in recs if r.speaker in recipe.train_speakers and not lo <= i <= hi]
    seen = [r for r, i in recs if r.speaker in recipe.train_speakers and lo <= i <= hi]
    unseen = [r for r, _ in recs if r.speaker in recipe.test_speakers]
    rng = np.random.default_rng(seed)
    return {
        "train": build_split(train, out_dir, "train", sample_rate, rng, connect, recipe.train_utterances),
        "test_seen": build_split(seen, out_dir, "test_seen", sample_rate, rng, connect),
        "test_unseen": build_split(unseen, out_dir, "test_unseen", sample_rate, rng, connect),
    }


def prepare_fsdd_speakers(
    fsdd_dir: Path, out_dir: Path, sample_rate: int, connect: ConnectRecipe, seed: int
) -> dict[str, Path]:
    """Every recording of each FSDD speaker once, as connected-digit utterances: {speaker: JSONL manifest}."""
    recs = load_recordings(fsdd_dir, sample_rate, FSDD_SPEAKERS)
    rng = np.random.default_rng(seed)
    return {
        spk: build_split([r for r, _ in recs if r.speaker == spk], out_dir, spk, sample_rate, rng, connect)
        for spk in FSDD_SPEAKERS
    }
