"""Where the speech comes from: FSDD, synthesized speech, or the user's own JSONL manifests.

`resolve_source` turns the user's choice into a `DataSource` with a content digest
(so caches notice changed data); `prepare` writes the corpus splits.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

from .config import PROJECT_ROOT, ModelConfig
from .corpus import read_manifest, write_manifest
from .digits import ConnectRecipe
from .errors import ConfigError, DataError
from .fsdd import FSDD_SPEAKERS, FsddRecipe, prepare_fsdd, recordings_digest, recordings_dir
from .synth import SynthRecipe, prepare_engine_test, prepare_synth
from .tomlconf import to_dict

log = logging.getLogger(__name__)
SOURCES = ("auto", "fsdd", "synth", "manifest")
# held-out speech that choices after training are scored on; never evaluated as a test set (a user corpus names it
# with a test manifest called dev.jsonl)
DEV_SPLIT = "dev"
DEV_SPLIT_FILE = "dev.jsonl"
FSDD_ENV = "PIPELINE_FSDD_DIR"
SPLIT_DESCRIPTIONS = {
    "fsdd": {
        "test_unseen": "FSDD speaker yweweler (never seen in training), every recording once, connected 1-6 digits",
        "test_seen": "FSDD speakers george/jackson/nicolas/theo, recordings 0-4 (held out), connected 1-6 digits",
    },
    "synth": {
        "test_unseen": "synthesized voices never seen in training, connected 1-6 digits",
        "test_seen": "training synthesized voices, held-out takes, connected 1-6 digits",
    },
}


# what a build trained and evaluated on synthesized speech alone says about its figures (manifest `evaluation.caveat`)
SYNTH_CAVEAT = (
    "trained and evaluated on synthesized speech only: these WERs say nothing about recorded "
    "speech, on which such a model does far worse; build with FSDD or your own recorded corpus before shipping"
)


def default_fsdd_dir() -> Path:
    """`$PIPELINE_FSDD_DIR`, else `../shared/data/fsdd` beside the project (the CI layout)."""
    env = os.environ.get(FSDD_ENV)
    return Path(env) if env else PROJECT_ROOT.parent / "shared" / "data" / "fsdd"


@dataclass(frozen=True)
class DataOptions:
    source: str = "auto"
    fsdd_dir: Path | None = None
    train_manifest: Path | None = None
    test_manifests: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ConfigError(f"unknown data source {self.source!r}; choose one of {', '.join(SOURCES)}.")
        if self.source == "manifest" and (self.train_manifest is None or not self.test_manifests):
            raise ConfigError("data source `manifest` needs --train-manifest and at least one --test-manifest.")


@dataclass(frozen=True)
class DataSource:
    kind: str  # fsdd | synth | manifest
    digest: str  # identifies the content
    fsdd_dir: Path | None = None
    manifests: dict[str, Path] | None = None


def _file_digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        try:
            st = p.stat()
        except OSError as exc:
            raise DataError(f"cannot read {p} ({exc.strerror}).") from None
        h.update(f"{p.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve_source(opts: DataOptions) -> DataSource:
    """Pick the concrete source (auto: FSDD if present, else synthesized) and digest it."""
    if opts.source == "manifest":
        manifests = {"train": Path(opts.train_manifest)}  # type: ignore[arg-type]
        for p in opts.test_manifests:
            if Path(p).stem in manifests:
                raise ConfigError(
                    f"test manifest {p}: its name {Path(p).stem!r} is already a split's name; each test manifest "
                    "needs its own file name (not train)."
                )
            manifests[Path(p).stem] = Path(p)
        files: list[Path] = []
        for p in manifests.values():
            corpus = read_manifest(p)
            files.append(p)
            files.extend(corpus.audio_path(u) for u in corpus.utterances)
        return DataSource("manifest", _file_digest(files), manifests=manifests)
    fsdd_dir = Path(opts.fsdd_dir) if opts.fsdd_dir else default_fsdd_dir()
    # an FSDD folder the user named (--fsdd-dir, or --data fsdd) must be there; only the default lookup falls back
    named = opts.fsdd_dir is not None or opts.source == "fsdd"
    if opts.source != "synth" and (named or fsdd_dir.is_dir()):
        rec = recordings_dir(fsdd_dir)
        return DataSource("fsdd", recordings_digest(rec, FsddRecipe().speakers), fsdd_dir=fsdd_dir)
    if opts.source == "auto":
        log.warning("FSDD not found at %s: training on synthesized speech", fsdd_dir)
    import espeakng_loader

    return DataSource("synth", hashlib.sha256(Path(espeakng_loader.get_library_path()).read_bytes()).hexdigest())


def recipe_key(src: DataSource, cfg: ModelConfig) -> dict:
    """Everything that determines the prepared corpus."""
    return {
        "source": src.kind,
        "digest": src.digest,
        "data": to_dict(cfg.data),
        "sample_rate": cfg.frontend.sample_rate,
    }


def prepare(src: DataSource, cfg: ModelConfig, out_dir: Path) -> dict[str, Path]:
    """Write (or, for user manifests, point at) the splits; returns {split: manifest path}."""
    connect = ConnectRecipe(min_digits=cfg.data.min_digits, max_digits=cfg.data.max_digits)
    if src.kind == "fsdd":
        fsdd = FsddRecipe.holding_out(cfg.data.fsdd_test_speakers, cfg.data.train_utterances)
        splits = prepare_fsdd(src.fsdd_dir, out_dir, cfg.frontend.sample_rate, fsdd, connect, cfg.data.seed)  # type: ignore[arg-type]
        if cfg.data.synth_train_utterances:
            extra = prepare_synthesized(out_dir, cfg, connect, cfg.data.synth_train_utterances, "synth")
            mixed = list(read_manifest(splits["train"]).utterances) + list(read_manifest(extra["train"]).utterances)
            write_manifest(splits["train"], mixed)
            if "test_voices" in extra:
                write_manifest(out_dir / "test_voices.jsonl", read_manifest(extra["test_voices"]).utterances)
                splits["test_voices"] = out_dir / "test_voices.jsonl"
            # the synthesized speakers held out of training (never reported as a test set here): the dev split that
            # choices after training (the omni subnet search) are made on
            write_manifest(out_dir / DEV_SPLIT_FILE, read_manifest(extra["test_unseen"]).utterances)
            splits[DEV_SPLIT] = out_dir / DEV_SPLIT_FILE
        splits.update(prepare_engine_tests(out_dir, cfg, connect))
        return splits
    if src.kind == "synth":
        splits = prepare_synthesized(out_dir, cfg, connect, cfg.data.train_utterances, "")
        splits.update(prepare_engine_tests(out_dir, cfg, connect))
        splits.update(prepare_engine_tests(out_dir, cfg, connect, DEV_SPLIT))
        return splits
    return dict(src.manifests or {})


def prepare_synthesized(
    out_dir: Path, cfg: ModelConfig, connect: ConnectRecipe, utterances: int, folder: str
) -> dict[str, Path]:
    """Synthesized connected digits from every engine of `cfg.data.synth_engines` (an equal share of `utterances`
    each), written under `out_dir/folder` (espeak-ng) and `out_dir/<folder>-<engine>` (the others); returns
    {split: manifest}, each engine's splits joined in one manifest in `out_dir` whose paths are relative to it."""
    engines = cfg.data.synth_engines
    shares = [utterances // len(engines) + (i < utterances % len(engines)) for i in range(len(engines))]
    merged: dict[str, list] = {}
    for engine, share in zip(engines, shares):
        sub = folder if engine == "espeak-ng" else f"{folder}-{engine}".lstrip("-")
        recipe = SynthRecipe(
            train_speakers=cfg.data.synth_speakers,
            train_utterances=max(1, share),
            test_voices=cfg.data.synth_test_voices,
            engine=engine,
        )
        splits = prepare_synth(
            out_dir / sub if sub else out_dir, cfg.frontend.sample_rate, recipe, connect, cfg.data.seed
        )
        for split, path in splits.items():
            rel = [
                replace(u, audio_filepath=f"{sub}/{u.audio_filepath}") if sub else u
                for u in read_manifest(path).utterances
            ]
            merged.setdefault(split, []).extend(rel)
    out = {}
    for split, utts in merged.items():
        path = out_dir / f"{folder}{'_' if folder else ''}{split}.jsonl"
        if folder or len(engines) > 1:
            write_manifest(path, utts)
        out[split] = path
    return out


def prepare_engine_tests(
    out_dir: Path, cfg: ModelConfig, connect: ConnectRecipe, split: str = "test_engines"
) -> dict[str, Path]:
    """{"test_engines": manifest} of speech said by `cfg.data.synth_test_engines` (none: {}); with `split` = dev, the
    dev split of a corpus synthesized alone, said by speakers of `cfg.data.synth_engines` drawn apart from training."""
    utts = []
    engines = cfg.data.synth_test_engines if split == "test_engines" else cfg.data.synth_engines
    for engine in engines:
        sub = f"held-{engine}" if split == "test_engines" else f"{split}-{engine}"
        path = prepare_engine_test(
            out_dir / sub, cfg.frontend.sample_rate, engine, SynthRecipe(), connect, cfg.data.seed, split
        )
        utts += [replace(u, audio_filepath=f"{sub}/{u.audio_filepath}") for u in read_manifest(path).utterances]
    if not utts:
        return {}
    write_manifest(out_dir / f"{split}.jsonl", utts)
    return {split: out_dir / f"{split}.jsonl"}


def describe_split(kind: str, split: str, cfg: ModelConfig | None = None) -> str:
    if kind == "fsdd" and cfg is not None and split in ("test_unseen", "test_seen"):
        held = cfg.data.fsdd_test_speakers
        if split == "test_unseen":
            return (
                f"FSDD speaker(s) {'/'.join(held)} (never seen in training), every recording once, connected 1-6 digits"
            )
        trained = "/".join(s for s in FSDD_SPEAKERS if s not in held)
        return f"FSDD speakers {trained}, recordings 0-4 (held out), connected 1-6 digits"
    if split == "test_engines" and cfg is not None:
        engines = ", ".join(cfg.data.synth_test_engines)
        return f"speech synthesized by {engines} (an engine that says no training speech), connected 1-6 digits"
    if split == DEV_SPLIT and kind in ("fsdd", "synth") and cfg is not None:
        engines = " and ".join(cfg.data.synth_engines)
        return f"{engines} speakers held out of training (not a test set), connected 1-6 digits"
    if split == "test_voices" and cfg is not None:
        voices = ", ".join(cfg.data.synth_test_voices)
        return f"espeak-ng voices {voices} (no training speech in them), connected 1-6 digits"
    if kind == "synth" and cfg is not None and split in ("test_unseen", "test_seen"):
        engines = " and ".join(cfg.data.synth_engines)
        return SPLIT_DESCRIPTIONS["synth"][split].replace("synthesized voices", f"{engines} voices")
    return SPLIT_DESCRIPTIONS.get(kind, {}).get(split, f"user corpus {split}")
