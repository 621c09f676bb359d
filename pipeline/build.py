"""`build()`: data → features → train → export → verify → manifest, each stage cached.

Each stage is a typed function from artifacts to artifacts; this driver runs them in
order, keys each on (config + data + code), and checks the invariants between them
by raising. The device folder `dist/<target>/` is replaced atomically, manifest last.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .cache import StageCache, digest, open_cache
from .calibrate import CalibrationRecipe, load_calibration_recipe, representative_inputs
from .checkpoint import ModelCheckpoint
from .codehash import code_digest
from .config import AatConfig, ModelConfig, load_model_config
from .contract import integrity_section
from .corpus import Corpus, read_manifest
from .data import SYNTH_CAVEAT, DataOptions, DataSource, describe_split, prepare, recipe_key, resolve_source
from .decode import Transducer
from .digits import ConnectRecipe
from .distribute import Distribution
from .errors import BudgetError, ConfigError, InternalError
from .export import GRAPHS, calibrated_ranges, convert_all, sparse_weight_bytes
from .features import FeatureSet, compute_training_features, utterance_features
from .frontend import FrontendConfig, edge_padding_default
from .fsutil import atomic_directory, atomic_write_json, sha256_file
from .manifest import (
    DECODE_LOOP,
    SCHEMA_VERSION,
    code_sha256,
    frontend_section,
    git_commit,
    machine,
    tokenizer_section,
    tool_versions,
    validate_manifest,
)
from .methods import check_method
from .model import PREDICTOR_STATE_NAMES, encoder_state_names
from .npu import compile_for_npu, tool_info
from .preflight import Output, preflight
from .runtimes import LiteRTGraph, TFLMGraph, describe, tflm_min_arena
from .sparsity import sparsity_of, tier_name
from .targets import TargetProfile, load_target, target_names
from .tokenizer import CharTokenizer
from .tomlconf import to_dict
from .train import Trainer
from .verify import Score, paired_bootstrap, score

log = logging.getLogger(__name__)
EVAL_SPLITS = ("test_unseen", "test_seen")


@dataclass(frozen=True)
class BuildPaths:
    out_dir: Path = Path("dist")
    work_dir: Path = Path(".pipeline")


@dataclass(frozen=True)
class PreparedData:
    source: DataSource
    folder: Path
    key: dict[str, Any]
    splits: dict[str, Path]


# ----------------------------------------------------------------------------- stages


def begin(cfg: ModelConfig, data: DataOptions, work_dir: Path, outputs: list[Output]) -> tuple[StageCache, DataSource]:
    """Resolve the data source, run every check that needs no training (`preflight`), and open the stage cache."""
    src = resolve_source(data)
    preflight(cfg.for_source(src.kind), src, work_dir, outputs)
    return open_cache(work_dir), src


def stage_data(cache: StageCache, cfg: ModelConfig, src: DataSource) -> PreparedData:
    key = {**recipe_key(src, cfg), "code": code_digest(stage_data, "data")}

    def run(tmp: Path) -> dict[str, Any]:
        splits = prepare(src, cfg, tmp)
        return {
            "splits": {
                k: (str(v.relative_to(tmp)) if v.is_relative_to(tmp) else str(v.resolve())) for k, v in splits.items()
            }
        }

    folder, summary = cache.run("data", key, run)
    splits = {k: (folder / v if not Path(v).is_absolute() else Path(v)) for k, v in summary["splits"].items()}
    if "train" not in splits:
        raise InternalError("the data stage produced no training split.")
    return PreparedData(src, folder, key, splits)


def stage_corpus(cache: StageCache, cfg: ModelConfig, src: DataSource) -> tuple[ModelConfig, PreparedData]:
    """The data stage, and the configuration that trains on what it found (`ModelConfig.for_source`: `[synthesized]`'s
    fields when the corpus is synthesized speech alone). Every stage after it takes that configuration."""
    corpus = stage_data(cache, cfg, src)
    return cfg.for_source(corpus.source.kind), corpus


def stage_features(cache: StageCache, cfg: ModelConfig, corpus: PreparedData) -> tuple[Path, dict[str, Any]]:
    edge = edge_padding_samples(cfg.frontend, corpus.source.kind) if cfg.train.pad_edges else 0
    key = {
        "data": corpus.key,
        "frontend": to_dict(cfg.frontend),
        "augment": to_dict(cfg.augment),
        "seed": cfg.train.seed,
        "max_seconds": cfg.train.max_seconds,
        "edge_padding_samples": edge,
        "code": code_digest(stage_features, "features"),
    }

    def run(tmp: Path) -> dict[str, Any]:
        train = read_manifest(corpus.splits["train"])
        tok = CharTokenizer.fit(u.text for u in train.utterances)
        fs = compute_training_features(train, cfg, tok, cfg.train.seed, edge)
        fs.save(tmp / "features.npz")
        return {"utterances": len(train), "feature_sets": len(fs.feats), "vocab": tok.vocab}

    folder, summary = cache.run("features", key, run)
    return folder, {"key": key, **summary}


def stage_train(
    cache: StageCache,
    cfg: ModelConfig,
    features: tuple[Path, dict[str, Any]],
    steps: int | None = None,
    resume: bool = True,
    method: str = "dense",
    tier: int | None = None,
    dist: Distribution | None = None,
) -> tuple[Path, dict[str, Any]]:
    """Train and write a `ModelCheckpoint`; with `resume`, continue an interrupted run of the same inputs.

    `tier` names the one tier a per-tier method (tfmot, csp) trains; omni trains all of them.
    """
    tier = tier if method in ("tfmot", "csp") else None
    # [aat] configures the fine-tuning after this stage (stage_aat, stage_aat_gate), so it does not key this one
    model = {k: v for k, v in cfg.to_dict().items() if k != "aat"}
    key = {
        "features": features[1]["key"],
        "model": model,
        "steps": steps or cfg.train.steps,
        "method": method,
        "tier": tier,
        "code": code_digest(stage_train, "train", "checkpoint"),
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
        fs = FeatureSet.load(features[0] / "features.npz")
        result = Trainer(cfg, fs, work, method, tier, steps=steps, dist=dist).run(resume=resume)
        meta = {
            **result.method_meta,
            "steps": result.steps,
            "final_loss": result.final_loss,
            "wall_seconds": result.wall_seconds,
            "data_sha256": digest(features[1]["key"]["data"]),
        }
        ModelCheckpoint(cfg, result.params, fs.tokenizer, fs.normalizer, result.masks, meta=meta).save(
            tmp / "checkpoint"
        )
        return meta

    folder, summary = cache.run("train", key, run)
    shutil.rmtree(work, ignore_errors=True)
    return folder / "checkpoint", {"key": key, **summary}


def checkpoint_stage_input(folder: Path) -> tuple[Path, dict[str, Any]]:
    """A checkpoint folder given by the user (load it first: that refuses a broken one), as a stage
    input keyed by the digest of its files."""
    return Path(folder), {
        "key": {"checkpoint": {f: sha256_file(Path(folder) / f) for f in ("model.json", "params.npz")}}
    }


GATE_FIELDS = ("gate", "gate_split")  # [aat] fields that choose between artifacts after fine-tuning, not how it trains


def stage_aat(
    cache: StageCache,
    cfg: ModelConfig,
    features: tuple[Path, dict[str, Any]],
    base: tuple[Path, dict[str, Any]],
    corpus: PreparedData,
    recipe: CalibrationRecipe,
    steps: int | None = None,
    resume: bool = True,
    emulate: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Accelerator-aware fine-tuning of the checkpoint `base` (every tier it holds) → a checkpoint with int8 ranges.

    Each tier's int8 ranges start, and stay, where `recipe` (the calibration the export would use) puts them.
    `emulate=False` runs the same fine-tuning in float (no ranges): the control for AAT's effect.
    """
    phase = "aat" if emulate else "float_finetune"
    calibrated = emulate
    recipe_key = {k: v for k, v in to_dict(cfg.aat).items() if k not in GATE_FIELDS}
    key = {
        "base": base[1]["key"],
        "aat": recipe_key,
        "steps": steps or cfg.aat.steps,
        "phase": phase,
        "code": code_digest(stage_aat, "train", "checkpoint", "export", "calibrate"),
        **({"calibration": recipe.to_dict(), "data": corpus.key} if calibrated else {}),
    }
    work = cache.work_folder(phase, digest(key))
    if not resume:
        shutil.rmtree(work, ignore_errors=True)

    def run(tmp: Path) -> dict[str, Any]:
        fs = FeatureSet.load(features[0] / "features.npz")
        init = ModelCheckpoint.load(
            base[0], expect=cfg, ignore=("aat",)
        )  # cfg.aat may be a recipe given apart (--aat-config)
        if calibrated:
            feats = _calibration_features(corpus, recipe, init)
            init = replace(
                init,
                ranges={
                    tier_name(t): calibrated_ranges(cfg, p, _representative(init, p, feats, recipe)[1])
                    for t in init.tiers
                    for p in [init.tier_params(t)]
                },
            )
        result = Trainer(cfg, fs, work, "aat" if emulate else "finetune", steps=steps, init=init).run(resume=resume)
        meta = {
            **result.method_meta,
            phase: {**result.method_meta[phase], "final_loss": result.final_loss, "wall_seconds": result.wall_seconds},
        }
        ModelCheckpoint(cfg, result.params, fs.tokenizer, fs.normalizer, result.masks, meta, result.ranges).save(
            tmp / "checkpoint"
        )
        return meta

    folder, summary = cache.run(phase, key, run)
    shutil.rmtree(work, ignore_errors=True)
    return folder / "checkpoint", {"key": key, **summary}


def _transducer(cfg: ModelConfig, tok: CharTokenizer, graphs: dict[str, Any]) -> Transducer:
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


def _representative(
    ck: ModelCheckpoint, params: dict[str, np.ndarray], feats: list[np.ndarray], recipe: CalibrationRecipe
) -> tuple[dict[str, bytes], dict[str, list[dict[str, np.ndarray]]]]:
    """The float32 graphs of `params` and the converter's representative inputs, recorded by streaming them per
    `recipe`.
    """
    floats = convert_all(ck.config, params)
    float_t = _transducer(ck.config, ck.tokenizer, {g: LiteRTGraph(b) for g, b in floats.items()})
    return floats, representative_inputs(float_t, feats, recipe)


def stage_export(
    cache: StageCache,
    ckpt_dir: Path,
    train_key: dict[str, Any],
    corpus: PreparedData,
    recipe: CalibrationRecipe,
    tier: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """float32 and int8 .tflite of one tier's weights; int8 calibrated per `recipe`; for a sparse
    tier also the int8 graphs sparse-encoded (`int8_sparse/`)."""
    key = {
        "train": train_key,
        "calibration": recipe.to_dict(),
        "tier": tier,
        "code": code_digest(stage_export, "export", "calibrate", "checkpoint"),
    }

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(ckpt_dir)
        cfg = ck.config
        params = ck.tier_params(tier)
        floats, rep = _representative(ck, params, _calibration_features(corpus, recipe, ck), recipe)
        ranges = ck.tier_ranges(tier)  # learned by AAT: the converter takes them instead of calibrating
        variants = {"float32": floats, "int8": convert_all(cfg, params, rep, ranges=ranges)}
        if tier > 0:
            variants["int8_sparse"] = convert_all(cfg, params, rep, sparse=True, ranges=ranges)
        for variant, graphs in variants.items():
            (tmp / variant).mkdir()
            for g in GRAPHS:
                (tmp / variant / f"{g}.tflite").write_bytes(graphs[g])
        encoded = None
        if "int8_sparse" in variants:
            per = [sparse_weight_bytes(b) for b in variants["int8_sparse"].values()]
            encoded = {k: sum(p[k] for p in per) for k in ("values", "index", "nonzero")}
        return {
            "calibration": {**recipe.to_dict(), "samples": {g: len(v) for g, v in rep.items()}},
            "tier": tier,
            "sparse_encoded_weights": encoded,
            "activation_ranges": "learned (accelerator-aware training)" if ranges is not None else "calibrated",
            "sparsity": sparsity_of(params, cfg.sparsity),
            "bytes": {v: {g: len(b) for g, b in graphs.items()} for v, graphs in variants.items()},
        }

    folder, summary = cache.run("export", key, run)
    return folder, {"key": key, **summary}


def _eval_sets(
    corpus: PreparedData, ck: ModelCheckpoint, only: str | None = None
) -> dict[str, tuple[list[np.ndarray], list[str], float]]:
    """Each held-out split's normalized features (the decode contract's edge padding included), transcripts and
    audio seconds (`only`: that split alone)."""
    out = {}
    for split, path in corpus.splits.items():
        if split == "train" or (only is not None and split != only):
            continue
        c = read_manifest(path)
        for u in c.utterances:
            ck.tokenizer.encode(u.text, where=f"transcript of test utterance {u.id}")
        feats = decode_features(corpus, ck, c)
        out[split] = (
            feats,
            [u.text for u in c.utterances],
            float(sum(len(f) for f in feats) * ck.config.frontend.hop_ms / 1000),
        )
    return out


def check_gate_split(cfg: ModelConfig, corpus: PreparedData) -> None:
    """`ConfigError` unless the corpus holds the held-out split the [aat] gate decodes (checked before any training)."""
    if cfg.aat.gate != "none" and cfg.aat.gate_split not in corpus.splits:
        held = ", ".join(sorted(s for s in corpus.splits if s != "train")) or "none"
        raise ConfigError(
            f"[aat] gate_split {cfg.aat.gate_split!r} is not a split of the {corpus.source.kind} corpus (held-out "
            f"splits: {held}); "
            f'set gate_split to one of them, or gate = "none".'
        )


def ships_aat(aat_minus_ptq: float, ptq_gap_lo: float, sparsest: bool = False) -> bool:
    """Whether the `[aat] gate = "sparsest"` rule ships AAT's int8 graphs rather than PTQ's, from the gate split's
    figures: AAT's WER minus PTQ's, and the low end of the 95% interval of PTQ's int8 - float gap. AAT at the sparsest
    tier of a checkpoint with several (`sparsest`) whatever the split shows; elsewhere AAT where PTQ's int8 gap is
    measured (its interval above 0) and AAT's WER is not higher."""
    return sparsest or (ptq_gap_lo > 0 and aat_minus_ptq <= 0)


def sparsest_tier(tier: int, tiers: list[int]) -> bool:
    """Whether `tier` is the sparsest of a shared-weight checkpoint's `tiers` (never on a checkpoint of one tier)."""
    return len(tiers) > 1 and tier == max(tiers)


def stage_aat_gate(
    cache: StageCache,
    ptq: tuple[Path, dict[str, Any]],
    aat: tuple[Path, dict[str, Any]],
    ckpt_dir: Path,
    corpus: PreparedData,
    cfg: AatConfig,
) -> dict[str, Any]:
    """Choose AAT's int8 graphs or the checkpoint's post-training-quantized ones for one tier, per `cfg.gate`, by
    decoding `cfg.gate_split` in LiteRT with both and with the checkpoint's float graphs:
    `{"shipped": "aat" | "ptq", ...the figures it was chosen on}`."""
    if cfg.gate == "none":
        return {"rule": "none", "shipped": "aat"}
    key = {
        "ptq": ptq[1]["key"],
        "aat": aat[1]["key"],
        "gate": cfg.gate,
        "split": cfg.gate_split,
        "code": code_digest(stage_aat_gate, "verify", "checkpoint"),
    }

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(ckpt_dir)
        sparsest = sparsest_tier(ptq[1]["key"]["tier"], ck.tiers)  # the tier and checkpoint are in the key
        feats, refs, seconds = _eval_sets(corpus, ck, only=cfg.gate_split)[cfg.gate_split]
        scores = {}
        for name, graphs in (("float", ptq[0] / "float32"), ("ptq", ptq[0] / "int8"), ("aat", aat[0] / "int8")):
            t = _transducer(
                ck.config, ck.tokenizer, {g: LiteRTGraph((graphs / f"{g}.tflite").read_bytes()) for g in GRAPHS}
            )
            scores[name] = score(t, ck.tokenizer, feats, refs, seconds, desc=f"gate {cfg.gate_split} {name}")
        words = [len(r.split()) for r in refs]
        diff, lo, hi = paired_bootstrap(scores["ptq"].word_errors, scores["aat"].word_errors, words)
        gap, gap_lo, gap_hi = paired_bootstrap(scores["float"].word_errors, scores["ptq"].word_errors, words)
        ship = ships_aat(diff, gap_lo, sparsest)
        return {
            "rule": cfg.gate,
            "sparsest_tier": sparsest,
            "split": cfg.gate_split,
            "words": sum(words),
            "wer_float": round(scores["float"].wer, 5),
            "wer_int8_ptq": round(scores["ptq"].wer, 5),
            "wer_int8_aat": round(scores["aat"].wer, 5),
            "ptq_minus_float": round(gap, 5),
            "gap_interval95": [round(gap_lo, 5), round(gap_hi, 5)],
            "aat_minus_ptq": round(diff, 5),
            "interval95": [round(lo, 5), round(hi, 5)],
            "shipped": "aat" if ship else "ptq",
        }

    return cache.run("aat_gate", key, run)[1]


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)), "runs": len(values)}


def shipped_encoding(target: TargetProfile, export: tuple[Path, dict[str, Any]]) -> str:
    """`sparse` where the profile allows it, its runtime executes it (LiteRT) and it is smaller; else `dense`."""
    sizes = export[1]["bytes"]
    if target.build.sparse_encoding and target.device.runtime == "litert" and "int8_sparse" in sizes:
        if sum(sizes["int8_sparse"].values()) < sum(sizes["int8"].values()):
            return "sparse"
    return "dense"


def stage_reference(
    cache: StageCache, export: tuple[Path, dict[str, Any]], ckpt_dir: Path, corpus: PreparedData
) -> dict[str, Any]:
    """What does not depend on the target, computed once per export and shared by every target:
    the float graphs' WER on each test split and the smallest TFLM arena of each int8 graph."""
    key = {"export": export[1]["key"], "code": code_digest(stage_reference, "verify", "checkpoint")}

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(ckpt_dir)
        floats = _transducer(
            ck.config,
            ck.tokenizer,
            {g: LiteRTGraph((export[0] / "float32" / f"{g}.tflite").read_bytes()) for g in GRAPHS},
        )
        wer = {
            split: round(score(floats, ck.tokenizer, feats, refs, seconds, desc=f"{split} float32").wer, 5)
            for split, (feats, refs, seconds) in _eval_sets(corpus, ck).items()
        }
        return {
            "float32_wer": wer,
            "tflm_arena_bytes": {g: tflm_min_arena(export[0] / "int8" / f"{g}.tflite") for g in GRAPHS},
        }

    return cache.run("reference", key, run)[1]


def stage_verify(
    cache: StageCache,
    export: tuple[Path, dict[str, Any]],
    ckpt_dir: Path,
    corpus: PreparedData,
    target: TargetProfile,
    encoding: str = "dense",
) -> dict[str, Any]:
    """Decode every test split with the shipped artifacts in their runtimes; measure arena and host latency."""
    threads = target.build.threads_for_latency or target.device.threads
    npu = target.device.npu if target.device.runtime == "tflm" else None
    key = {
        "export": export[1]["key"],
        "runtime": target.device.runtime,
        "threads": threads,
        "npu": to_dict(npu) if npu else None,
        "encoding": encoding,
        "code": code_digest(stage_verify, "verify", "npu", "checkpoint"),
    }
    reference = stage_reference(cache, export, ckpt_dir, corpus)

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(ckpt_dir)
        cfg, tok = ck.config, ck.tokenizer
        int8_dir = export[0] / "int8"
        shipped = export[0] / ("int8_sparse" if encoding == "sparse" else "int8")
        xnnpack = encoding == "dense"  # XNNPACK refuses sparse-encoded graphs (docs/design.md)
        runtimes = {
            "int8_litert": _transducer(
                cfg, tok, {g: LiteRTGraph((shipped / f"{g}.tflite").read_bytes(), threads, xnnpack) for g in GRAPHS}
            ),
        }
        arenas = reference["tflm_arena_bytes"]
        if target.device.runtime == "tflm":
            runtimes["int8_tflm"] = _transducer(
                cfg, tok, {g: TFLMGraph(int8_dir / f"{g}.tflite", arenas[g]) for g in GRAPHS}
            )
        sets: dict[str, Any] = {}
        latency: dict[str, Any] = {}
        for split, (feats, refs, seconds) in _eval_sets(corpus, ck).items():
            entry: dict[str, Any] = {
                "description": describe_split(corpus.source.kind, split, cfg),
                "utterances": len(refs),
                "words": sum(len(r.split()) for r in refs),
                "audio_seconds": round(seconds, 3),
                "wer": {"float32_litert": reference["float32_wer"][split]},
            }
            for name, t in runtimes.items():
                s: Score = score(t, tok, feats, refs, seconds, desc=f"{split} {name}")
                entry["wer"][name] = round(s.wer, 5)
                if name == "int8_litert" and split == EVAL_SPLITS[0]:
                    latency = {
                        "encoder_rtf": _percentiles(s.encoder_rtf),
                        "decode_rtf": _percentiles(s.decode_rtf),
                        "encoder_ms_per_chunk": _percentiles([1000 * x for x in s.encoder_seconds_per_chunk]),
                        "decode_stats": {k: int(v) if float(v).is_integer() else v for k, v in vars(s.stats).items()},
                    }
            sets[split] = entry
            log.info("%s WER: %s", split, entry["wer"])
        npu_reports = (
            {g: compile_for_npu(int8_dir / f"{g}.tflite", npu, tmp / "npu").to_dict() for g in GRAPHS} if npu else {}
        )
        return {
            "sets": sets,
            "tflm_arena_bytes": arenas,
            "latency": latency,
            "threads": threads,
            "machine": machine(),
            "npu": npu_reports,
            "encoding": encoding,
            "litert_kernels": "XNNPACK" if xnnpack else "built-in (sparse-encoded weights)",
        }

    folder, summary = cache.run("verify", key, run)
    return {**summary, "folder": str(folder)}


# ----------------------------------------------------------------------------- manifest


def _graph_entry(path: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    data = path.read_bytes()
    inputs, outputs = describe(data)
    ops: dict[str, int] = {}
    for op in Interpreter(model_content=data)._get_ops_details():  # noqa: SLF001 (the only op listing LiteRT offers)
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    return {
        "file": path.name,
        "bytes": len(data),
        "sha256": sha256_file(path),
        "signature": "serving_default",
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        "operators": dict(sorted(ops.items())),
    }


def make_manifest(
    target: TargetProfile,
    ck: ModelCheckpoint,
    graphs: dict[str, dict[str, Any]],
    verify: dict[str, Any],
    corpus: PreparedData,
    export_summary: dict[str, Any],
    train_summary: dict[str, Any],
    aat_gate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cfg = ck.config
    sp = export_summary["sparsity"]
    sizes = {v: sum(b.values()) for v, b in export_summary["bytes"].items()}
    model_bytes = sum(g["bytes"] for g in graphs.values())
    states = [
        {"graph": "encoder", "input": s, "output": f"{s}_out", "initial_value": 0.0} for s in encoder_state_names(cfg)
    ]
    states += [
        {"graph": "predictor", "input": s, "output": f"{s}_out", "initial_value": 0.0} for s in PREDICTOR_STATE_NAMES
    ]
    for g, entry in graphs.items():
        entry["tflm_arena_bytes"] = verify["tflm_arena_bytes"][g]
        if verify.get("npu"):
            entry["npu"] = {"estimated": True, **verify["npu"][g], **entry.pop("npu_file")}
    latency: dict[str, Any] = {
        "host": {
            "measured": True,
            "runtime": f"litert (ai-edge-litert, {verify['litert_kernels']}), int8 artifacts as shipped",
            "threads": verify["threads"],
            "machine": verify["machine"],
            **verify["latency"],
        }
    }
    if verify.get("npu") and target.device.npu is not None:
        latency["device"] = _npu_latency(verify, target, cfg)
    budgets = to_dict(target.budgets)
    figures = budget_figures(target, cfg, export_summary, verify)
    return {
        "schema_version": SCHEMA_VERSION,
        "target": {
            "name": target.name,
            "runtime": target.device.runtime,
            "description": target.description,
            "threads": verify["threads"],
            "device": to_dict(target.device),
            "budgets": budgets,
            "budget_check": {
                k: {"limit": budgets[k], **f, "ok": budgets[k] is None or f["value"] <= budgets[k]}
                for k, f in figures.items()
            },
        },
        "model": {
            "name": cfg.name,
            "method": ck.meta.get("method", "dense"),
            "tier": export_summary["tier"],
            "parameters": sp["parameters"],
            "nonzero_parameters": sp["nonzero_parameters"],
            "config": cfg.to_dict(),
            "config_sha256": cfg.digest(),
            "sparsity": {
                "prunable_parameters": sp["prunable_parameters"],
                "prunable_nonzero": sp["prunable_nonzero"],
                "sparsity": round(sp["sparsity"], 6),
                "block": list(cfg.sparsity.block),
                "tiers_in_checkpoint": ck.tiers,
                "int8_bytes": {"dense_stored": sizes["int8"], "sparse_encoded": sizes.get("int8_sparse")},
                "shipped_encoding": verify["encoding"],
                "sparse_encoded_weights": _encoded_weights(export_summary.get("sparse_encoded_weights")),
                "litert_op_resolver": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
                if verify["encoding"] == "sparse"
                else "BUILTIN",
            },
            "quantization": {
                "scheme": "full-integer int8: weights per output channel symmetric, activations per tensor asymmetric, "
                "int8 inputs and outputs",
                "activation_ranges": export_summary.get("activation_ranges", "calibrated"),
                "accelerator_aware_training": ck.meta.get("aat"),
                "aat_selection": aat_gate,
            },
        },
        "frontend": frontend_section(
            cfg, ck.normalizer, edge_padding_samples(cfg.frontend, corpus.source.kind), EDGE_PADDING_WHY
        ),
        "tokenizer": tokenizer_section(ck.tokenizer),
        "streaming": {
            "chunk_feature_frames": cfg.chunk_feature_frames,
            "stack": cfg.encoder.stack,
            "encoder_frames_per_chunk": cfg.encoder.chunk_frames,
            "chunk_ms": cfg.chunk_ms,
            "algorithmic_latency_ms": cfg.algorithmic_latency_ms,
            "last_chunk_pad_value": 0.0,
            "states": states,
        },
        "decode": {
            "algorithm": "greedy",
            "max_symbols_per_frame": cfg.decode.max_symbols_per_frame,
            "start_token": ck.tokenizer.blank_id,
            "predictor_input": "one_hot",
            "encoder_output": "encoder_out",
            "predictor_output": "predictor_out",
            "joiner_inputs": {"encoder_frame": "one row of encoder_out", "predictor_out": "predictor_out"},
            "joiner_output": "logits",
            "valid_encoder_frames": "ceil(feature_frames / stack): later frames of the padded last chunk are skipped",
            "loop": DECODE_LOOP,
        },
        "graphs": graphs,
        "evaluation": {
            "data_source": corpus.source.kind,
            "sets": verify["sets"],
            **({"caveat": SYNTH_CAVEAT} if corpus.source.kind == "synth" else {}),
        },
        "latency": latency,
        "memory": {
            "model_bytes": model_bytes,
            "tflm_arena_bytes": verify["tflm_arena_bytes"],
            "tflm_arena_bytes_total": int(sum(verify["tflm_arena_bytes"].values())),
        },
        "build": {
            "tool_versions": tool_versions(),
            "git_commit": git_commit(),
            "config_sha256": cfg.digest(),
            "data_sha256": ck.meta.get("data_sha256", digest(corpus.key)),
            "code_sha256": code_sha256(),
            "calibration": export_summary["calibration"],
            "training": train_summary,
        },
    }


_EDGE_LO_MS, _EDGE_HI_MS = (round(1000 * s) for s in ConnectRecipe().edge_s)
EDGE_PADDING_WHY = (
    f"every utterance the project trains on has {_EDGE_LO_MS}-{_EDGE_HI_MS} ms of quiet before and after the "
    f"speech, and audio that starts or stops with a word loses that word unless zeros are added; every WER "
    f"in this manifest was measured with them"
)


def edge_padding_samples(fe: FrontendConfig, source: str) -> int:
    """Zeros the decode contract adds at each end of an utterance's audio (manifest `frontend.edge_padding_samples`).

    `frontend.EDGE_PADDING_MS` for the project's own corpora (FSDD connected digits, synthesized voices): every
    utterance in them
    has quiet at both ends, and without the zeros a model trained on them loses the first and last words of audio cut
    at the speech (models/tiny, unseen speaker, utterances with no pause at either end: 18-19% WER against 9-11% with
    them; on the recipe's own utterances they cost nothing). 0 for your own corpus (`--data manifest`), whose edges the
    project does not know.
    """
    return edge_padding_default(fe) if source in ("fsdd", "synth") else 0


def _encoded_weights(e: dict[str, int] | None) -> dict[str, Any] | None:
    if not e:
        return None
    return {
        "weight_bytes": e["values"],
        "index_bytes": e["index"],
        "nonzero_weights": e["nonzero"],
        "bytes_per_nonzero": round((e["values"] + e["index"]) / max(e["nonzero"], 1), 4),
    }


def budget_figures(
    target: TargetProfile, cfg: ModelConfig, export_summary: dict[str, Any], verify: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The figure each budget is checked against, and what it is: measured, or estimated by a named tool."""
    shipped = "int8_sparse" if verify["encoding"] == "sparse" else "int8"
    if verify.get("npu"):
        npu_dir = Path(verify["folder"]) / "npu"
        model = {
            "value": sum((npu_dir / f"{g}_vela.tflite").stat().st_size for g in GRAPHS),
            "basis": "bytes of the three Vela-compiled graphs (flash)",
        }
        rtf = {
            "value": _npu_latency(verify, target, cfg)["rtf"],
            "basis": "estimated: Vela performance model, NPU seconds per second of audio",
        }
    else:
        model = {
            "value": sum(export_summary["bytes"][shipped].values()),
            "basis": f"bytes of the three shipped .tflite graphs ({verify['encoding']} weights)",
        }
        rtf = {
            "value": verify["latency"]["decode_rtf"]["p90"],
            "basis": f"measured: host LiteRT decode p90 at {verify['threads']} thread(s)",
        }
    arena = {
        "value": max(verify["tflm_arena_bytes"].values()),
        "basis": "measured: smallest TFLM arena that allocates, largest graph",
    }
    return {"model_bytes": model, "arena_bytes": arena, "rtf": rtf}


def _npu_latency(verify: dict[str, Any], target: TargetProfile, cfg: ModelConfig) -> dict[str, Any]:
    """Vela's estimated NPU time per second of audio, using the eval set's invocation counts."""
    stats = verify["latency"]["decode_stats"]
    audio = stats["feature_frames"] * cfg.frontend.hop_ms / 1000
    per_call = {g: verify["npu"][g]["inference_seconds"] for g in GRAPHS}
    calls = {"encoder": stats["encoder_calls"], "predictor": stats["predictor_calls"], "joiner": stats["joiner_calls"]}
    return {
        "estimated": True,
        **tool_info(target.device.npu),
        "seconds_per_invocation": per_call,
        "invocations_per_second_of_audio": {g: calls[g] / audio for g in GRAPHS},
        "encoder_rtf": calls["encoder"] * per_call["encoder"] / audio,
        "rtf": sum(calls[g] * per_call[g] for g in GRAPHS) / audio,
        "basis": "Vela performance model x invocation counts of the greedy decode of test_unseen",
    }


def device_output(out_dir: Path, target: str) -> Output:
    """The device folder of `target` under `out_dir`, as a folder the build replaces whole."""
    return Output(Path(out_dir) / target, f"device artifacts for target {target}", legacy=is_device_folder)


def is_device_folder(folder: Path) -> bool:
    """Whether `folder` is a device folder an earlier build wrote (its manifest names the build's tool versions)."""
    try:
        m = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(m, dict)
        and "schema_version" in m
        and isinstance(m.get("build"), dict)
        and "tool_versions" in m["build"]
    )


def write_dist(out: Output, int8_dir: Path, make: Any, npu_dir: Path | None = None) -> Path:
    """Replace `out` atomically with the three graphs (and NPU-compiled graphs) and `manifest.json` (written last)."""
    with atomic_directory(out.path, out.holds, out.legacy) as tmp:
        for g in GRAPHS:
            shutil.copyfile(int8_dir / f"{g}.tflite", tmp / f"{g}.tflite")
        graphs = {g: _graph_entry(tmp / f"{g}.tflite") for g in GRAPHS}
        if npu_dir is not None:
            (tmp / "npu").mkdir()
            for g in GRAPHS:
                f = tmp / "npu" / f"{g}_vela.tflite"
                shutil.copyfile(npu_dir / f.name, f)
                graphs[g]["npu_file"] = {"file": f"npu/{f.name}", "bytes": f.stat().st_size, "sha256": sha256_file(f)}
        manifest = make(graphs)
        manifest["integrity"] = integrity_section(manifest)
        validate_manifest(manifest, f"manifest for {out.path}")
        atomic_write_json(tmp / "manifest.json", manifest)
    return out.path / "manifest.json"


# ----------------------------------------------------------------------------- driver


def candidate_tiers(cfg: ModelConfig, target: TargetProfile, method: str, tier: int | None) -> list[int]:
    """Tiers to try, densest first: the one asked for, or the profile's (default: the model's) for tiered methods."""
    if tier is not None:
        return [cfg.sparsity.check_tier(tier)]
    if method == "dense":
        return [0]
    tiers = [cfg.sparsity.check_tier(t) for t in (target.build.tiers or cfg.sparsity.tiers)]
    return [t for t in tiers if t > 0] if method in ("tfmot", "csp") else tiers


def build_target(
    cache: StageCache,
    target: TargetProfile,
    cfg: ModelConfig,
    method: str,
    tiers: list[int],
    corpus: PreparedData,
    feats: tuple[Path, dict[str, Any]],
    steps: int | None,
    out_dir: Path,
    aat: bool = False,
) -> Path:
    """The densest of `tiers` whose artifacts meet every budget of `target` → `out_dir/<target>/`;
    with `aat`, also fine-tuned by accelerator-aware training, each tier shipping AAT's int8 graphs or the checkpoint's
    post-training-quantized ones as `[aat] gate` chooses on a held-out split (`stage_aat_gate`)."""
    recipe = load_calibration_recipe(target.build.calibration)
    if aat:
        check_gate_split(cfg, corpus)
    budgets = to_dict(target.budgets)
    tried: list[tuple[int, dict[str, dict[str, Any]]]] = []
    for tier in tiers:
        ckpt_dir, train_summary = stage_train(cache, cfg, feats, steps, method=method, tier=tier)
        export = stage_export(cache, ckpt_dir, train_summary["key"], corpus, recipe, tier)
        gate = None
        if aat:
            tuned = stage_aat(cache, cfg, feats, (ckpt_dir, train_summary), corpus, recipe)
            tuned_export = stage_export(cache, tuned[0], tuned[1]["key"], corpus, recipe, tier)
            gate = stage_aat_gate(cache, export, tuned_export, tuned[0], corpus, cfg.aat)
            if gate["rule"] != "none":
                log.info(
                    "%s: tier %d ships %s int8 (%s int8 WER: PTQ %.1f%%, AAT %.1f%%)",
                    target.name,
                    tier,
                    gate["shipped"].upper(),
                    gate["split"],
                    100 * gate["wer_int8_ptq"],
                    100 * gate["wer_int8_aat"],
                )
            if gate["shipped"] == "aat":
                (ckpt_dir, train_summary), export = tuned, tuned_export
        encoding = shipped_encoding(target, export)
        size = sum(export[1]["bytes"]["int8_sparse" if encoding == "sparse" else "int8"].values())
        if target.device.runtime == "litert" and budgets["model_bytes"] is not None and size > budgets["model_bytes"]:
            # known from the export alone: skip decoding a tier that cannot ship
            figures = {
                "model_bytes": {
                    "value": size,
                    "basis": f"bytes of the three shipped .tflite graphs ({encoding} weights)",
                }
            }
            log.info("%s: tier %d misses model_bytes %d > %d", target.name, tier, size, budgets["model_bytes"])
            tried.append((tier, figures))
            continue
        verify = stage_verify(cache, export, ckpt_dir, corpus, target, encoding)
        figures = budget_figures(target, cfg, export[1], verify)
        over = {k: f for k, f in figures.items() if budgets[k] is not None and f["value"] > budgets[k]}
        if over:
            log.info(
                "%s: tier %d misses %s",
                target.name,
                tier,
                ", ".join(f"{k} {f['value']:g} > {budgets[k]:g}" for k, f in over.items()),
            )
            tried.append((tier, figures))
            continue
        log.info("%s: tier %d (%s) meets every budget", target.name, tier, method)
        # a cached checkpoint may hold another [aat] than cfg (it keys neither training nor, for the gate, fine-tuning)
        ck = replace(ModelCheckpoint.load(ckpt_dir, expect=cfg, ignore=("aat",)), config=cfg)
        summary = {k: v for k, v in train_summary.items() if k != "key"}
        npu_dir = Path(verify["folder"]) / "npu" if verify.get("npu") else None
        shipped = export[0] / ("int8_sparse" if encoding == "sparse" else "int8")
        return write_dist(
            device_output(out_dir, target.name),
            shipped,
            lambda graphs: make_manifest(target, ck, graphs, verify, corpus, export[1], summary, gate),  # noqa: B023 (called now)
            npu_dir,
        )
    last_tier, last = tried[-1]
    misses = "; ".join(
        f"{k}: limit {budgets[k]:g}, tier {last_tier} needs {f['value']:g} ({f['basis']})"
        for k, f in last.items()
        if budgets[k] is not None and f["value"] > budgets[k]
    )
    raise BudgetError(
        f"no tier of {cfg.name} ({method}, tiers {', '.join(map(str, tiers))}) meets the budgets of target "
        f"{target.name!r}: {misses}; "
        f"raise the budget in the target profile, or train a smaller model or sparser tiers."
    )


def build(
    target_name: str,
    data: DataOptions = DataOptions(),
    paths: BuildPaths = BuildPaths(),
    model: str | None = None,
    steps: int | None = None,
    method: str | None = None,
    tier: int | None = None,
    aat: bool | None = None,
) -> Path:
    """Build `dist/<target>/` for one target profile; returns the manifest path. `aat` (default: the
    profile's) adds the accelerator-aware fine-tuning phase."""
    target = load_target(target_name)
    cfg = load_model_config(model or target.build.model)
    method = method or target.build.method
    check_method(method, cfg, tier)
    tiers = candidate_tiers(cfg, target, method, tier)
    cache, src = begin(cfg, data, paths.work_dir, [device_output(paths.out_dir, target.name)])
    cfg, corpus = stage_corpus(cache, cfg, src)
    feats = stage_features(cache, cfg, corpus)
    return build_target(
        cache, target, cfg, method, tiers, corpus, feats, steps, paths.out_dir, target.build.aat if aat is None else aat
    )


def build_all(
    data: DataOptions = DataOptions(),
    paths: BuildPaths = BuildPaths(),
    model: str | None = None,
    steps: int | None = None,
    method: str | None = None,
    aat: bool = False,
) -> list[Path]:
    """Every profile in targets/ from ONE trained checkpoint (default: tiny, omni), each at the densest tier meeting
    its budgets.
    """
    cfg = load_model_config(model or "tiny")
    method = method or "omni"
    check_method(method, cfg, None if method != "dense" else 0)
    targets = [load_target(n) for n in target_names()]
    plans = [(t, candidate_tiers(cfg, t, method, None)) for t in targets]
    cache, src = begin(cfg, data, paths.work_dir, [device_output(paths.out_dir, t.name) for t in targets])
    cfg, corpus = stage_corpus(cache, cfg, src)
    feats = stage_features(cache, cfg, corpus)
    return [build_target(cache, t, cfg, method, tiers, corpus, feats, steps, paths.out_dir, aat) for t, tiers in plans]
