"""The stages a build runs, each a cached function from artifacts to artifacts: corpus, features, training,
accelerator-aware fine-tuning, int8 export.

Each stage is keyed on its inputs (config, data, the keys of the stages it reads) and on the code it runs
(`codehash.code_digest`), so a rerun reuses every stage whose inputs did not change.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .cache import Artifact, StageCache, digest, open_cache
from .calibrate import CalibrationRecipe, representative_inputs
from .checkpoint import ModelCheckpoint
from .codehash import code_digest
from .config import ModelConfig
from .corpus import Corpus, read_manifest
from .data import DataOptions, DataSource, prepare, recipe_key, resolve_source
from .decode import Transducer
from .digits import ConnectRecipe
from .distribute import Distribution
from .errors import InternalError
from .export import calibrated_ranges, convert_all
from .features import FeatureShards, utterance_features, write_training_features
from .frontend import FrontendConfig, edge_padding_default
from .fsdd import prepare_fsdd_speakers
from .fsutil import sha256_file
from .preflight import Output, preflight
from .runtimes import LiteRTGraph
from .sparsity import tier_name
from .tokenizer import CharTokenizer
from .tomlconf import to_dict
from .train import Trainer

log = logging.getLogger(__name__)


EVAL_SPLITS = ("test_unseen", "test_seen")


@dataclass(frozen=True)
class PreparedData:
    source: DataSource
    folder: Path
    key: dict[str, Any]
    splits: dict[str, Path]


def begin(cfg: ModelConfig, data: DataOptions, work_dir: Path, outputs: list[Output]) -> tuple[StageCache, DataSource]:
    """Resolve the data source, run every check that needs no training (`preflight`), and open the stage cache."""
    src = resolve_source(data)
    preflight(cfg.for_source(src.kind), src, work_dir, outputs)
    return open_cache(work_dir), src


def stage_data(cache: StageCache, cfg: ModelConfig, src: DataSource) -> PreparedData:
    key = {**recipe_key(src, cfg), "code": code_digest(stage_data, "stages", "data")}

    def run(tmp: Path) -> dict[str, Any]:
        splits = prepare(src, cfg, tmp)
        return {
            "splits": {
                k: (str(v.relative_to(tmp)) if v.is_relative_to(tmp) else str(v.resolve())) for k, v in splits.items()
            }
        }

    data = cache.run("data", key, run)
    splits = {k: (data.folder / v if not Path(v).is_absolute() else Path(v)) for k, v in data.summary["splits"].items()}
    if "train" not in splits:
        raise InternalError("the data stage produced no training split.")
    return PreparedData(src, data.folder, key, splits)


def stage_fsdd_speakers(cache: StageCache, cfg: ModelConfig, src: DataSource) -> PreparedData:
    """Every recording of each FSDD speaker as connected digits, one split per speaker (named after them): the test
    sets of a model that never heard any of them (trained on synthesized speech)."""
    connect = ConnectRecipe(min_digits=cfg.data.min_digits, max_digits=cfg.data.max_digits)
    key = {**recipe_key(src, cfg), "every_speaker": True, "code": code_digest(stage_fsdd_speakers, "stages", "fsdd")}

    def run(tmp: Path) -> dict[str, Any]:
        splits = prepare_fsdd_speakers(src.fsdd_dir, tmp, cfg.frontend.sample_rate, connect, cfg.data.seed)  # type: ignore[arg-type]
        return {"splits": {k: str(v.relative_to(tmp)) for k, v in splits.items()}}

    data = cache.run("fsdd_speakers", key, run)
    splits = {k: data.folder / v for k, v in data.summary["splits"].items()}
    return PreparedData(src, data.folder, key, {"train": next(iter(splits.values())), **splits})


def stage_corpus(cache: StageCache, cfg: ModelConfig, src: DataSource) -> tuple[ModelConfig, PreparedData]:
    """The data stage, and the configuration that trains on what it found (`ModelConfig.for_source`: `[synthesized]`'s
    fields when the corpus is synthesized speech alone). Every stage after it takes that configuration."""
    corpus = stage_data(cache, cfg, src)
    return cfg.for_source(corpus.source.kind), corpus


def stage_features(cache: StageCache, cfg: ModelConfig, corpus: PreparedData) -> Artifact:
    edge = edge_padding_samples(cfg.frontend, corpus.source.kind) if cfg.train.pad_edges else 0
    key = {
        "data": corpus.key,
        "frontend": to_dict(cfg.frontend),
        "augment": to_dict(cfg.augment),
        "seed": cfg.train.seed,
        "max_seconds": cfg.train.max_seconds,
        "edge_padding_samples": edge,
        "code": code_digest(stage_features, "stages", "features"),
    }

    # shards are written here first and kept if the stage is interrupted: a rerun resumes from the last complete one
    work = cache.work_folder("features", digest(key))

    def run(tmp: Path) -> dict[str, Any]:
        train = read_manifest(corpus.splits["train"])
        tok = CharTokenizer.fit(u.text for u in train.utterances)
        t0 = time.perf_counter()
        fs = write_training_features(train, cfg, tok, cfg.train.seed, work, edge)
        seconds = time.perf_counter() - t0
        assert fs is not None
        for f in sorted(work.iterdir()):
            os.replace(f, tmp / f.name)
        frames = int(fs.lengths.sum())
        return {
            "utterances": len(train),
            "feature_sets": len(fs),
            "shards": len(list(tmp.glob("*.f32"))),
            "frames": frames,
            "vocab": tok.vocab,
            "seconds": round(seconds, 3),
        }

    out = cache.run("features", key, run)
    shutil.rmtree(work, ignore_errors=True)
    return out


def stage_train(
    cache: StageCache,
    cfg: ModelConfig,
    features: Artifact,
    steps: int | None = None,
    resume: bool = True,
    method: str = "dense",
    tier: int | None = None,
    dist: Distribution | None = None,
) -> Artifact:
    """Train and write a `ModelCheckpoint`; with `resume`, continue an interrupted run of the same inputs.

    `tier` names the one tier a per-tier method (tfmot, csp) trains; omni trains all of them.
    """
    tier = tier if method in ("tfmot", "csp") else None
    # [aat] configures the fine-tuning after this stage (stage_aat, stage_aat_gate), so it does not key this one
    model = {k: v for k, v in cfg.to_dict().items() if k != "aat"}
    key = {
        "features": features.key,
        "model": model,
        "steps": steps or cfg.train.steps,
        "method": method,
        "tier": tier,
        "code": code_digest(stage_train, "stages", "train", "checkpoint"),
        **(
            {"strategy": dist.name, "worker": dist.worker, "workers": dist.workers}
            if dist and dist.name != "default"
            else {}
        ),
    }
    work = cache.work_folder("train", digest(key))
    if not resume:
        shutil.rmtree(work, ignore_errors=True)

    def run(tmp: Path) -> dict[str, Any]:
        fs = FeatureShards.load(features.folder)
        result = Trainer(cfg, fs, work, method, tier, steps=steps, dist=dist).run(resume=resume)
        meta = {
            **result.method_meta,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "wall_seconds": result.wall_seconds,
            "data_sha256": digest(features.key["data"]),
        }
        ModelCheckpoint(cfg, result.params, fs.tokenizer, fs.normalizer, result.masks, meta=meta).save(
            tmp / "checkpoint"
        )
        return meta

    trained = cache.run("train", key, run)
    shutil.rmtree(work, ignore_errors=True)
    return replace(trained, folder=trained.folder / "checkpoint")


def checkpoint_stage_input(folder: Path) -> Artifact:
    """A checkpoint folder given by the user (load it first: that refuses a broken one), as a stage
    input keyed by the digest of its files."""
    return Artifact(
        Path(folder), {"checkpoint": {f: sha256_file(Path(folder) / f) for f in ("model.json", "params.npz")}}, {}
    )


GATE_FIELDS = ("gate", "gate_split")  # [aat] fields that choose between artifacts after fine-tuning, not how it trains


def stage_aat(
    cache: StageCache,
    cfg: ModelConfig,
    features: Artifact,
    base: Artifact,
    corpus: PreparedData,
    recipe: CalibrationRecipe,
    steps: int | None = None,
    resume: bool = True,
    emulate: bool = True,
    dist: Distribution | None = None,
) -> Artifact:
    """Accelerator-aware fine-tuning of the checkpoint `base` (every tier it holds) → a checkpoint with int8 ranges.

    Each tier's int8 ranges start, and stay, where `recipe` (the calibration the export would use) puts them.
    `emulate=False` runs the same fine-tuning in float (no ranges): the control for AAT's effect.
    """
    phase = "aat" if emulate else "float_finetune"
    calibrated = emulate
    recipe_key = {k: v for k, v in to_dict(cfg.aat).items() if k not in GATE_FIELDS}
    key = {
        "base": base.key,
        "aat": recipe_key,
        "steps": steps or cfg.aat.steps,
        "phase": phase,
        "code": code_digest(stage_aat, "stages", "train", "checkpoint", "export", "calibrate"),
        **({"calibration": recipe.to_dict(), "data": corpus.key} if calibrated else {}),
        **(
            {"strategy": dist.name, "worker": dist.worker, "workers": dist.workers}
            if dist and dist.name != "default"
            else {}
        ),
    }
    work = cache.work_folder(phase, digest(key))
    if not resume:
        shutil.rmtree(work, ignore_errors=True)

    def run(tmp: Path) -> dict[str, Any]:
        fs = FeatureShards.load(features.folder)
        # cfg.aat may be a recipe given apart (--aat-config)
        init = ModelCheckpoint.load(base.folder, expect=cfg, ignore=("aat",))
        if calibrated:
            feats = _calibration_features(corpus, recipe, init)
            init = replace(
                init,
                ranges={
                    tier_name(t): calibrated_ranges(cfg, p, representative(init, p, feats, recipe)[1])
                    for t in init.tiers
                    for p in [init.tier_params(t)]
                },
            )
        result = Trainer(cfg, fs, work, "aat" if emulate else "finetune", steps=steps, dist=dist, init=init).run(
            resume=resume
        )
        meta = {
            **result.method_meta,
            phase: {**result.method_meta[phase], "final_loss": result.final_loss, "wall_seconds": result.wall_seconds},
        }
        ModelCheckpoint(cfg, result.params, fs.tokenizer, fs.normalizer, result.masks, meta, result.ranges).save(
            tmp / "checkpoint"
        )
        return meta

    tuned = cache.run(phase, key, run)
    shutil.rmtree(work, ignore_errors=True)
    return replace(tuned, folder=tuned.folder / "checkpoint")


def transducer(cfg: ModelConfig, tok: CharTokenizer, graphs: dict[str, Any]) -> Transducer:
    return Transducer(
        graphs["encoder"],
        graphs["predictor"],
        graphs["joiner"],
        cfg.chunk_feature_frames,
        cfg.encoder.stack,
        tok.size,
        tok.blank_id,
        cfg.decode.max_symbols_per_frame,
        cfg.frontend.hop_ms / 1000,
    )


def decode_features(corpus: PreparedData, ck: ModelCheckpoint, utterances: Corpus) -> list[np.ndarray]:
    """Normalized features of `utterances` as the decode contract presents them to the model: with the edge padding
    the manifest of a build on `corpus` states."""
    fe = ck.config.frontend
    return [
        ck.normalizer(f)
        for f in utterance_features(utterances, fe, edge_padding_samples=edge_padding_samples(fe, corpus.source.kind))
    ]


def _calibration_features(corpus: PreparedData, recipe: CalibrationRecipe, ck: ModelCheckpoint) -> list[np.ndarray]:
    return decode_features(corpus, ck, read_manifest(corpus.splits[recipe.split]))


def representative(
    ck: ModelCheckpoint, params: dict[str, np.ndarray], feats: list[np.ndarray], recipe: CalibrationRecipe
) -> tuple[dict[str, bytes], dict[str, list[dict[str, np.ndarray]]]]:
    """The float32 graphs of `params` and the converter's representative inputs, recorded by streaming them per
    `recipe`.
    """
    floats = convert_all(ck.config, params)
    float_t = transducer(ck.config, ck.tokenizer, {g: LiteRTGraph(b) for g, b in floats.items()})
    return floats, representative_inputs(float_t, feats, recipe)


def edge_padding_samples(fe: FrontendConfig, source: str) -> int:
    """Zeros the decode contract adds at each end of an utterance's audio (manifest `frontend.edge_padding_samples`).

    `frontend.EDGE_PADDING_MS` for the project's own corpora (FSDD connected digits, synthesized voices): every
    utterance in them has quiet at both ends, and without the zeros a model trained on them loses the first and last
    words of audio cut at the speech (models/tiny, unseen speaker, utterances with no pause at either end: 18-19% WER
    against 9-11% with them; on the recipe's own utterances they cost nothing). 0 for your own corpus (`--data
    manifest`), whose edges the project does not know.
    """
    return edge_padding_default(fe) if source in ("fsdd", "synth") else 0
