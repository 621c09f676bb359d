"""How much one lossless range change moves a tier's WER: the predictor's gate pre-activation range (`pred_lstm/z`)
clamped to +-S for several S, each predictor converted with every other range as calibrated (learned-range export,
no training) and decoded on the unseen speaker with the float encoder and joiner in LiteRT.

    python reports/quant/zsweep.py WORK_DIR CHECKPOINT TIER S1,S2,...

Beyond |z| = ln 511 = 6.24 the int8 LOGISTIC and TANH outputs are saturated, so every S >= 6.24 rounds nothing those
kernels can see differently; only z's grid (and where it clips) changes. One JSON line per S.
"""
import json
import sys
from pathlib import Path

import numpy as np

from pipeline.build import GRAPHS, _eval_sets, _transducer
from pipeline.export import convert_all
from pipeline.runtimes import LiteRTGraph
from pipeline.verify import score
from zclamp import calibrated_tier  # reports/quant/zclamp.py, beside this script


def main() -> None:
    work, ck_dir, tier, bounds = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), [float(x) for x in sys.argv[4].split(",")]
    ck, corpus, params, floats, rep, ranges = calibrated_tier(work, ck_dir, tier, ("test_unseen",))
    feats, refs, seconds = _eval_sets(corpus, ck, only="test_unseen")["test_unseen"]
    lo, hi = (float(v) for v in ranges["pred_lstm/z"])
    for s in bounds:
        clamped = {**ranges, "pred_lstm/z": np.array([max(lo, -s), min(hi, s)], np.float32)}
        graphs = {g: LiteRTGraph(floats[g]) for g in GRAPHS}
        graphs["predictor"] = LiteRTGraph(convert_all(ck.config, params, rep, ranges=clamped)["predictor"])
        wer = score(_transducer(ck.config, ck.tokenizer, graphs), ck.tokenizer, feats, refs, seconds, desc=f"S={s}").wer
        print(json.dumps({"S": s, "pred_lstm/z": [max(lo, -s), min(hi, s)], "wer_unseen_int8_predictor_only": round(wer, 4)}), flush=True)


if __name__ == "__main__":
    main()
