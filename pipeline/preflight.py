"""Checks that need no training, run before the first stage.

A bad output path, a full disk, too little memory, an incomplete corpus or a test
transcript the vocabulary cannot spell stops a command in seconds, before anything is
written, instead of after minutes of training.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .audio import check_audio
from .config import ModelConfig
from .corpus import read_manifest
from .data import DataSource
from .digits import ConnectRecipe
from .errors import DataError, HostError, OutputError
from .fsdd import FsddRecipe, check_complete, recordings_dir
from .fsutil import check_replaceable, check_writable, free_bytes, inside
from .synth import check_engine

log = logging.getLogger(__name__)

DIGIT_SECONDS = 0.45  # mean length of one spoken digit in FSDD and in the synthesized voices (trimmed)
CACHED_MARGIN = 200 << 20  # free bytes a build needs when the stage cache already holds its corpus


@dataclass(frozen=True)
class Output:
    """A folder a command replaces whole: where, what it holds (for the marker and messages), and how to recognize
    one written before the pipeline marked its folders."""

    path: Path
    holds: str
    legacy: Callable[[Path], bool] | None = None


@dataclass(frozen=True)
class Estimate:
    """What a fresh run of the data and features stages costs, from the config alone."""

    corpus_bytes: int  # the prepared corpus's WAV files
    feature_bytes: int  # float32 training features on disk (training reads them a batch at a time)

    @property
    def disk_bytes(self) -> int:
        return self.corpus_bytes + self.feature_bytes + (50 << 20)  # checkpoints, graphs, reports


def utterance_seconds(cfg: ModelConfig) -> float:
    """Mean length of one connected-digit utterance the recipe draws, estimated from its digits, pauses and edges."""
    c = ConnectRecipe(min_digits=cfg.data.min_digits, max_digits=cfg.data.max_digits)
    digits = (c.min_digits + c.max_digits) / 2
    return digits * DIGIT_SECONDS + (digits - 1) * sum(c.pause_s) / 2 + sum(c.edge_s)


def estimate(cfg: ModelConfig, src: DataSource) -> Estimate:
    """Disk and memory a fresh build on `src` needs, from the recipe (or the user corpus's own durations)."""
    fe = cfg.frontend
    if src.kind == "manifest":
        train = read_manifest(src.manifests["train"])  # type: ignore[index]
        train_seconds = sum(u.duration for u in train.utterances)
        test_seconds = 0.0
    else:
        seconds = utterance_seconds(cfg)
        utterances = cfg.data.train_utterances + (cfg.data.synth_train_utterances if src.kind == "fsdd" else 0)
        train_seconds = utterances * seconds
        test_seconds = 1500 * seconds  # the test splits: at most every held-out recording once
    frames = train_seconds * 1000 / fe.hop_ms * (1 + cfg.augment.copies)
    corpus = 0 if src.kind == "manifest" else (train_seconds + test_seconds) * fe.sample_rate * 2
    return Estimate(int(corpus), int(frames * fe.n_mels * 4))


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


def dataset_roots(src: DataSource) -> list[tuple[Path, str]]:
    """Folders that hold the user's speech (FSDD's folder; each folder holding audio of a user corpus) and the user's
    corpus manifests, which no output may overlap."""
    if src.kind == "fsdd" and src.fsdd_dir is not None:
        return [(Path(src.fsdd_dir), "the FSDD dataset")]
    if src.kind == "manifest" and src.manifests:
        roots: dict[Path, str] = {}
        for p in src.manifests.values():
            corpus = read_manifest(p)
            roots.update({corpus.audio_path(u).parent: f"the audio of {Path(p).name}" for u in corpus.utterances})
            roots[Path(p)] = f"the corpus manifest {Path(p).name}"
        return list(roots.items())
    return []


def check_paths(outputs: list[Output], work_dir: Path | None, src: DataSource | None) -> None:
    """Each output is writable, replaceable (`fsutil.check_replaceable`) and apart from the work folder and from every
    dataset; the work folder is writable and apart from every dataset."""
    roots = dataset_roots(src) if src is not None else []
    places = [(o.path, f"the {o.holds} ({o.path})") for o in outputs] + (
        [(work_dir, f"the work folder ({work_dir})")] if work_dir else []
    )
    for path, what in places:
        for root, name in roots:
            if inside(path, root) or inside(root, path):
                raise OutputError(
                    f"{what} overlaps {name} at {root}; the pipeline never writes into a dataset: choose a folder "
                    "outside it."
                )
    for o in outputs:
        if work_dir is not None and (inside(o.path, work_dir) or inside(work_dir, o.path)):
            raise OutputError(
                f"the {o.holds} ({o.path}) and the work folder ({work_dir}) overlap; give them separate folders."
            )
        check_writable(o.path, o.holds)
        check_replaceable(o.path, o.holds, o.legacy)
    for a in outputs:
        for b in outputs:
            if a is not b and a.path != b.path and inside(a.path, b.path):
                raise OutputError(
                    f"the {a.holds} ({a.path}) lies inside the {b.holds} ({b.path}); give them separate folders."
                )
    if work_dir is not None:
        check_writable(work_dir, "work folder")


def check_resources(cfg: ModelConfig, src: DataSource, work_dir: Path) -> None:
    """Enough free disk in the work folder and memory for the features, against `estimate`."""
    need = estimate(cfg, src)
    cached = any((Path(work_dir) / "cache" / "features").glob("*/stage.json"))
    disk = CACHED_MARGIN if cached else need.disk_bytes
    free = free_bytes(work_dir)
    if free < disk:
        what = (
            "its outputs"
            if cached
            else f"the corpus ({_gb(need.corpus_bytes)}), its features ({_gb(need.feature_bytes)}) and the models"
        )
        raise HostError(
            f"the work folder {work_dir} has {_gb(free)} free, and model {cfg.name} needs about {_gb(disk)} there for "
            f"{what}: free some space or pass --work-dir on another disk."
        )


def check_corpus(src: DataSource) -> None:
    """The corpus is complete and readable, and the training transcripts spell every test transcript."""
    if src.kind == "fsdd":
        check_complete(recordings_dir(src.fsdd_dir), FsddRecipe().speakers)  # type: ignore[arg-type]
        return
    if src.kind != "manifest" or not src.manifests:
        return
    corpora = {split: read_manifest(p) for split, p in src.manifests.items()}
    for corpus in corpora.values():
        for u in corpus.utterances:
            check_audio(corpus.audio_path(u))
    chars = {c for u in corpora["train"].utterances for c in u.text}
    for split, corpus in corpora.items():
        for u in corpus.utterances:
            missing = sorted(set(u.text) - chars)
            if missing:
                chars = ", ".join(repr(c) for c in missing[:10])
                raise DataError(
                    f"{src.manifests[split]}: utterance {u.id}'s transcript has {chars}, which no training "
                    "transcript has, so the model could never output them; add training speech with them or "
                    "normalize the text."
                )


def preflight(cfg: ModelConfig | None, src: DataSource | None, work_dir: Path | None, outputs: list[Output]) -> None:
    """Every check that needs no training, in the order a user would fix them."""
    check_paths(outputs, work_dir, src)
    if src is not None:
        check_corpus(src)
        if cfg is not None and src.kind in ("fsdd", "synth"):
            used = src.kind == "synth" or cfg.data.synth_train_utterances > 0
            for engine in (cfg.data.synth_engines if used else ()) + cfg.data.synth_test_engines:
                check_engine(engine)  # an engine that cannot run here is named before any stage
        if cfg is not None and work_dir is not None:
            check_resources(cfg, src, work_dir)
