"""Sparse-encoded vs dense-stored int8 graphs of the same weights, decoded with LiteRT's built-in kernels.

    python reports/sparsity/sparse_kernel/compare.py decode EXPORT_DIR TEST_JSONL
        EXPORT_DIR: an `export` stage folder of the stage cache (holds int8/ and int8_sparse/), e.g. the speaker's
        (its stage.json names the tier); TEST_JSONL: the test split of the data stage (`test_unseen.jsonl`).
    python reports/sparsity/sparse_kernel/compare.py per-tensor DATA_DIR CHECKPOINT TARGET TIER [TIER ...]
        re-exports TIERs of CHECKPOINT sparse-encoded with per-tensor (not per-channel) kernel scales, calibrated
        with TARGET's recipe on the data stage folder DATA_DIR, and decodes test_unseen.

Run from the project root with the project's Python (`.venv/bin/python`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.build import _transducer
from pipeline.checkpoint import ModelCheckpoint
from pipeline.corpus import read_manifest
from pipeline.features import utterance_features
from pipeline.runtimes import LiteRTGraph
from pipeline.verify import score


def _test_set(ck: ModelCheckpoint, jsonl: Path) -> tuple[list[np.ndarray], list[str]]:
    corpus = read_manifest(jsonl)
    return [ck.normalizer(f) for f in utterance_features(corpus, ck.config.frontend)], [u.text for u in corpus.utterances]


def _wer(ck: ModelCheckpoint, graphs: dict[str, bytes], test: tuple[list[np.ndarray], list[str]]) -> float:
    """WER in % of the three int8 graphs run by LiteRT's built-in kernels (the only ones that run sparse weights)."""
    t = _transducer(ck.config, ck.tokenizer, {g: LiteRTGraph(b, 1, xnnpack=False) for g, b in graphs.items()})
    return 100 * score(t, ck.tokenizer, *test, 0.0).wer


def decode(export_dir: Path, test_jsonl: Path) -> None:
    from pipeline.cache import StageCache, digest

    stage = json.loads((export_dir / "stage.json").read_text())
    trained = stage["inputs"]["train"]  # the key of the stage that wrote the exported checkpoint (train, aat, ...)
    ck = ModelCheckpoint.load(StageCache(export_dir.parent.parent).folder(trained.get("phase", "train"), digest(trained)) / "checkpoint")
    test = _test_set(ck, test_jsonl)
    for variant in ("int8", "int8_sparse"):
        graphs = {f.stem: f.read_bytes() for f in (export_dir / variant).glob("*.tflite")}
        print(f"tier {stage['summary']['tier']} {variant} (built-in kernels): WER {_wer(ck, graphs, test):.1f}%", flush=True)


def per_tensor(data_dir: Path, ck_path: Path, target: str, tiers: list[int]) -> None:
    from pipeline._tf import tf
    from pipeline.build import PreparedData, _calibration_features, _representative
    from pipeline.calibrate import load_calibration_recipe
    from pipeline.data import DataOptions, resolve_source
    from pipeline.export import convert_all
    from pipeline.targets import load_target

    original = tf.lite.TFLiteConverter.from_concrete_functions

    def per_tensor_converter(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        conv = original(*args, **kwargs)
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
        return conv

    tf.lite.TFLiteConverter.from_concrete_functions = per_tensor_converter
    corpus = PreparedData(resolve_source(DataOptions()), data_dir, {}, {k: data_dir / f"{k}.jsonl" for k in ("train", "test_seen", "test_unseen")})
    ck = ModelCheckpoint.load(ck_path)
    recipe = load_calibration_recipe(load_target(target).build.calibration)
    calibration, test = _calibration_features(corpus, recipe, ck), _test_set(ck, corpus.splits["test_unseen"])
    for tier in tiers:
        params = ck.tier_params(tier)
        _, rep = _representative(ck, params, calibration, recipe)
        wer = _wer(ck, convert_all(ck.config, params, rep, sparse=True), test)
        print(f"tier {tier} int8_sparse, per-tensor kernel scales (built-in kernels): WER {wer:.1f}%", flush=True)


def main() -> None:
    cmd, *args = sys.argv[1:] or ["help"]
    if cmd == "decode" and len(args) == 2:
        decode(Path(args[0]), Path(args[1]))
    elif cmd == "per-tensor" and len(args) >= 4:
        per_tensor(Path(args[0]), Path(args[1]), args[2], [int(t) for t in args[3:]])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
