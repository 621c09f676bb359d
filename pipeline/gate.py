"""The `[aat]` gate: per tier, ship the AAT int8 graphs or the post-training-quantized ones, decided on a held-out
split (never the unseen-speaker test)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .cache import Artifact, StageCache
from .calibrate import CalibrationRecipe
from .checkpoint import ModelCheckpoint
from .codehash import code_digest
from .config import AatConfig, ModelConfig
from .errors import ConfigError
from .evaluate import eval_sets
from .export import GRAPHS
from .export_stage import stage_export
from .runtimes import LiteRTGraph
from .stages import PreparedData, stage_aat, transducer
from .verify import paired_bootstrap, score

log = logging.getLogger(__name__)


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
    ptq: Artifact,
    aat: Artifact,
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
        "ptq": ptq.key,
        "aat": aat.key,
        "gate": cfg.gate,
        "split": cfg.gate_split,
        "code": code_digest(stage_aat_gate, "gate", "verify", "checkpoint"),
    }

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(ckpt_dir)
        sparsest = sparsest_tier(ptq.key["tier"], ck.tiers)  # the tier and checkpoint are in the key
        feats, refs, seconds = eval_sets(corpus, ck, only=cfg.gate_split)[cfg.gate_split]
        scores = {}
        for name, graphs in (
            ("float", ptq.folder / "float32"),
            ("ptq", ptq.folder / "int8"),
            ("aat", aat.folder / "int8"),
        ):
            t = transducer(
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

    return cache.run("aat_gate", key, run).summary


def aat_or_ptq(
    cache: StageCache,
    cfg: ModelConfig,
    feats: Artifact,
    trained: Artifact,
    export: Artifact,
    corpus: PreparedData,
    recipe: CalibrationRecipe,
    tier: int,
) -> tuple[Artifact, Artifact, dict[str, Any]]:
    """Fine-tune `trained` with AAT, export the tier, and keep AAT's (checkpoint, export) or the post-training ones as
    `[aat] gate` decides: (checkpoint, export, the gate's figures)."""
    tuned = stage_aat(cache, cfg, feats, trained, corpus, recipe)
    tuned_export = stage_export(cache, tuned, corpus, recipe, tier)
    gate = stage_aat_gate(cache, export, tuned_export, tuned.folder, corpus, cfg.aat)
    if gate["rule"] != "none":
        log.info(
            "tier %d ships %s int8 (%s int8 WER: PTQ %.1f%%, AAT %.1f%%)",
            tier,
            gate["shipped"].upper(),
            gate["split"],
            100 * gate["wer_int8_ptq"],
            100 * gate["wer_int8_aat"],
        )
    return (tuned, tuned_export, gate) if gate["shipped"] == "aat" else (trained, export, gate)
