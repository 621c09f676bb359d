"""Every sparse tier of one omni checkpoint's cached exports: int8 WER stored dense (XNNPACK and LiteRT's built-in
kernels) and sparse-encoded (built-in kernels; XNNPACK refuses them), as converted and with the weights whose blocks
do not tile them stored dense (`pipeline.export.dense_partial_blocks`), and how many utterances' words differ.

    python tiers.py WORK/cache CHECKPOINT_DIR DATA_DIR TRAIN_CODE_PREFIX
"""

import json
import sys
from pathlib import Path

from pipeline.checkpoint import ModelCheckpoint
from pipeline.corpus import read_manifest
from pipeline.export import dense_partial_blocks
from pipeline.features import utterance_features
from pipeline.runtimes import LiteRTGraph
from pipeline.stages import transducer
from pipeline.verify import score

GRAPHS = ("encoder", "predictor", "joiner")
cache, ckpt, data, code = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
ck = ModelCheckpoint.load(ckpt)
exports = {}
for d in (cache / "export").iterdir():
    st = json.loads((d / "stage.json").read_text())
    if st["inputs"]["train"]["code"].startswith(code) and (d / "int8_sparse").is_dir():
        exports[st["summary"]["tier"]] = d


def graphs(exp: Path, variant: str) -> dict[str, bytes]:
    if variant == "sparse_fixed":
        return {
            g: dense_partial_blocks(
                (exp / "int8_sparse" / f"{g}.tflite").read_bytes(), (exp / "int8" / f"{g}.tflite").read_bytes(), g
            )[0]
            for g in GRAPHS
        }
    folder = "int8_sparse" if variant == "sparse_as_converted" else "int8"
    return {g: (exp / folder / f"{g}.tflite").read_bytes() for g in GRAPHS}


for split in ("test_unseen", "test_seen"):
    corpus = read_manifest(data / f"{split}.jsonl")
    feats = [ck.normalizer(f) for f in utterance_features(corpus, ck.config.frontend, edge_padding_samples=800)]
    refs = [u.text for u in corpus.utterances]
    for tier, exp in sorted(exports.items()):
        row, hyps = {}, {}
        for name, variant, xnn in (
            ("dense_xnnpack", "dense", True),
            ("dense_builtin", "dense", False),
            ("sparse_as_converted", "sparse_as_converted", False),
            ("sparse_fixed", "sparse_fixed", False),
        ):
            g = graphs(exp, variant)
            s = score(
                transducer(ck.config, ck.tokenizer, {k: LiteRTGraph(v, 1, xnn) for k, v in g.items()}),
                ck.tokenizer,
                feats,
                refs,
                1.0,
                desc=name,
            )
            row[name] = f"{100 * s.wer:.1f}% ({sum(len(v) for v in g.values()):,} B)"
            hyps[name] = s.hypotheses
        differ = {k: sum(a != b for a, b in zip(hyps[k], hyps["dense_builtin"])) for k in hyps}
        print(
            split, tier, row, "utterances whose words differ from dense_builtin:", differ, "of", len(refs), flush=True
        )
