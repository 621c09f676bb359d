"""Which graph carries a tier's int8 gap: decode a held-out split in LiteRT with every mix of the encoder, predictor
and joiner taken from two (or more) variants of the same tier's export.

    python reports/quant/graph_mix.py WORK_DIR EXPORT_DIR [VARIANTS [SPLIT]]

WORK_DIR: a `bench quant` (or build) work dir, for its prepared data and a checkpoint's config, tokenizer and
normalizer. EXPORT_DIR: a folder holding one subfolder of encoder/predictor/joiner .tflite per variant (an export
stage's folder has `float32/` and `int8/`). VARIANTS: comma-separated subfolder names (default float32,int8).
SPLIT: default test_unseen. One JSON line per mix.
"""
import itertools
import json
import sys
from pathlib import Path

from pipeline.build import GRAPHS, PreparedData, _eval_sets, _transducer
from pipeline.checkpoint import ModelCheckpoint
from pipeline.data import DataSource
from pipeline.runtimes import LiteRTGraph
from pipeline.verify import score
from regate import bench_inputs  # reports/quant/regate.py, beside this script


def main() -> None:
    work, root = Path(sys.argv[1]), Path(sys.argv[2])
    variants = sys.argv[3].split(",") if len(sys.argv) > 3 else ["float32", "int8"]
    split = sys.argv[4] if len(sys.argv) > 4 else "test_unseen"
    data, ck_dir = bench_inputs(work)
    corpus = PreparedData(DataSource("fsdd", ""), data, {}, {split: data / f"{split}.jsonl"})
    ck = ModelCheckpoint.load(ck_dir)
    feats, refs, seconds = _eval_sets(corpus, ck, only=split)[split]
    for mix in itertools.product(variants, repeat=len(GRAPHS)):
        graphs = {g: LiteRTGraph((root / v / f"{g}.tflite").read_bytes()) for g, v in zip(GRAPHS, mix)}
        s = score(_transducer(ck.config, ck.tokenizer, graphs), ck.tokenizer, feats, refs, seconds, desc="/".join(mix))
        print(json.dumps({**dict(zip(GRAPHS, mix)), "split": split, "wer": round(s.wer, 4)}), flush=True)


if __name__ == "__main__":
    main()
