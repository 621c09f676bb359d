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

import sys
from pathlib import Path

from pipeline.corpus import read_manifest
from pipeline.features import utterance_features
from pipeline.runtimes import LiteRTGraph
from pipeline.verify import score

GRAPHS = ("encoder", "predictor", "joiner")


def decode(export_dir: Path, test_jsonl: Path) -> None:
    from pipeline.build import _transducer
    from pipeline.checkpoint import ModelCheckpoint
    import json

    train = json.loads((export_dir / "stage.json").read_text())
    ck_dir = export_dir.parent.parent / "train"  # the checkpoint's tokenizer/normalizer: any train stage of the cache
    ck = ModelCheckpoint.load(next(p for p in ck_dir.glob("*/checkpoint")))
    corpus = read_manifest(test_jsonl)
    feats = [ck.normalizer(f) for f in utterance_features(corpus, ck.config.frontend)]
    refs = [u.text for u in corpus.utterances]
    for variant in ("int8", "int8_sparse"):
        graphs = {g: LiteRTGraph((export_dir / variant / f"{g}.tflite").read_bytes(), 1, xnnpack=False) for g in GRAPHS}
        s = score(_transducer(ck.config, ck.tokenizer, graphs), ck.tokenizer, feats, refs, 0.0)
        print(f"tier {train['summary']['tier']} {variant} (built-in kernels): WER {100 * s.wer:.1f}%", flush=True)


def per_tensor(data_dir: Path, ck_path: Path, target: str, tiers: list[int]) -> None:
    from pipeline._tf import tf
    from pipeline.build import PreparedData, _calibration_features, _representative, _transducer
    from pipeline.calibrate import load_calibration_recipe
    from pipeline.checkpoint import ModelCheckpoint
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
    test = read_manifest(corpus.splits["test_unseen"])
    feats = [ck.normalizer(f) for f in utterance_features(test, ck.config.frontend)]
    refs = [u.text for u in test.utterances]
    for tier in tiers:
        params = ck.tier_params(tier)
        _, rep = _representative(ck, params, _calibration_features(corpus, recipe, ck), recipe)
        graphs = {g: LiteRTGraph(b, 1, xnnpack=False) for g, b in convert_all(ck.config, params, rep, sparse=True).items()}
        s = score(_transducer(ck.config, ck.tokenizer, graphs), ck.tokenizer, feats, refs, 0.0)
        print(f"tier {tier} int8_sparse, per-tensor kernel scales (built-in kernels): WER {100 * s.wer:.1f}%", flush=True)


def main() -> None:
    cmd, *args = sys.argv[1:]
    if cmd == "decode":
        decode(Path(args[0]), Path(args[1]))
    elif cmd == "per-tensor":
        per_tensor(Path(args[0]), Path(args[1]), args[2], [int(t) for t in args[3:]])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
