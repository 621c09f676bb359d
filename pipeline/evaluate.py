"""Decoding the held-out sets with exported graphs: the float reference shared by every target, and the shipped
artifacts in the target's runtimes with host latency, TFLM arena and Vela's NPU estimates."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .cache import Artifact, StageCache
from .checkpoint import ModelCheckpoint
from .codehash import code_digest
from .corpus import read_manifest
from .data import DEV_SPLIT, describe_split
from .export import GRAPHS
from .manifest import (
    machine,
)
from .npu import compile_for_npu
from .runtimes import LiteRTGraph, TFLMGraph, tflm_min_arena
from .stages import EVAL_SPLITS, PreparedData, decode_features, transducer
from .targets import TargetProfile
from .tomlconf import to_dict
from .verify import Score, score

log = logging.getLogger(__name__)


def eval_sets(
    corpus: PreparedData, ck: ModelCheckpoint, only: str | None = None
) -> dict[str, tuple[list[np.ndarray], list[str], float]]:
    """Each held-out split's normalized features (the decode contract's edge padding included), transcripts and
    audio seconds (`only`: that split alone; the dev split only when asked for by name)."""
    out = {}
    for split, path in corpus.splits.items():
        if split == "train" or (only is None and split == DEV_SPLIT) or (only is not None and split != only):
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


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": float(np.percentile(values, 50)), "p90": float(np.percentile(values, 90)), "runs": len(values)}


def stage_reference(cache: StageCache, export: Artifact, ckpt_dir: Path, corpus: PreparedData) -> dict[str, Any]:
    """What does not depend on the target, computed once per export and shared by every target:
    the float graphs' WER on each test split and the smallest TFLM arena of each int8 graph."""
    key = {"export": export.key, "code": code_digest(stage_reference, "evaluate", "verify", "checkpoint")}

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(ckpt_dir)
        floats = transducer(
            ck.config,
            ck.tokenizer,
            {g: LiteRTGraph((export.folder / "float32" / f"{g}.tflite").read_bytes()) for g in GRAPHS},
        )
        wer = {
            split: round(score(floats, ck.tokenizer, feats, refs, seconds, desc=f"{split} float32").wer, 5)
            for split, (feats, refs, seconds) in eval_sets(corpus, ck).items()
        }
        return {
            "float32_wer": wer,
            "tflm_arena_bytes": {g: tflm_min_arena(export.folder / "int8" / f"{g}.tflite") for g in GRAPHS},
        }

    return cache.run("reference", key, run).summary


MIN_SPEAKERS = 3  # an evaluation set with fewer distinct speakers gets a caveat in the manifest


def wer_by_speaker(speakers: list[str], word_errors: list[int], refs: list[str]) -> dict[str, float]:
    """WER of each speaker's utterances: their word errors over their reference words."""
    errors: dict[str, list[int]] = {}
    for spk, e, r in zip(speakers, word_errors, refs, strict=True):
        errors.setdefault(spk, [0, 0])
        errors[spk][0] += e
        errors[spk][1] += len(r.split())
    return {spk: round(e / max(n, 1), 5) for spk, (e, n) in sorted(errors.items())}


def stage_verify(
    cache: StageCache,
    export: Artifact,
    ckpt_dir: Path,
    corpus: PreparedData,
    target: TargetProfile,
    encoding: str = "dense",
) -> dict[str, Any]:
    """Decode every test split with the shipped artifacts in their runtimes; measure arena and host latency."""
    threads = target.build.threads_for_latency or target.device.threads
    npu = target.device.npu if target.device.runtime == "tflm" else None
    key = {
        "export": export.key,
        "runtime": target.device.runtime,
        "threads": threads,
        "npu": to_dict(npu) if npu else None,
        "encoding": encoding,
        "code": code_digest(stage_verify, "evaluate", "verify", "npu", "checkpoint"),
    }
    reference = stage_reference(cache, export, ckpt_dir, corpus)

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(ckpt_dir)
        cfg, tok = ck.config, ck.tokenizer
        int8_dir = export.folder / "int8"
        shipped = export.folder / ("int8_sparse" if encoding == "sparse" else "int8")
        xnnpack = encoding == "dense"  # XNNPACK refuses sparse-encoded graphs (docs/design.md)
        runtimes = {
            "int8_litert": transducer(
                cfg, tok, {g: LiteRTGraph((shipped / f"{g}.tflite").read_bytes(), threads, xnnpack) for g in GRAPHS}
            ),
        }
        arenas = reference["tflm_arena_bytes"]
        if target.device.runtime == "tflm":
            runtimes["int8_tflm"] = transducer(
                cfg, tok, {g: TFLMGraph(int8_dir / f"{g}.tflite", arenas[g]) for g in GRAPHS}
            )
        sets: dict[str, Any] = {}
        latency: dict[str, Any] = {}
        for split, (feats, refs, seconds) in eval_sets(corpus, ck).items():
            entry: dict[str, Any] = {
                "description": describe_split(corpus.source.kind, split, cfg),
                "utterances": len(refs),
                "words": sum(len(r.split()) for r in refs),
                "audio_seconds": round(seconds, 3),
                "wer": {"float32_litert": reference["float32_wer"][split]},
            }
            speakers = [u.speaker for u in read_manifest(corpus.splits[split]).utterances]
            entry["speakers"] = sorted(set(speakers))
            if len(entry["speakers"]) < MIN_SPEAKERS:
                entry["caveat"] = (
                    f"this figure rests on {len(entry['speakers'])} speaker(s): WER on speakers the model has never "
                    "heard varies far more from one to the next; see the leave-one-speaker-out figures (pipeline "
                    "bench speakers) for what a new speaker should expect"
                )
            for name, t in runtimes.items():
                s: Score = score(t, tok, feats, refs, seconds, desc=f"{split} {name}")
                entry["wer"][name] = round(s.wer, 5)
                if name == "int8_litert":
                    entry["wer_by_speaker"] = wer_by_speaker(speakers, s.word_errors, refs)
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

    verified = cache.run("verify", key, run)
    return {**verified.summary, "folder": str(verified.folder)}
