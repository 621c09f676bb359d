"""A negative result kept reproducible: clamp the LSTM gate pre-activation ranges (`*/z`) to where the int8 LOGISTIC
output saturates, in a learned-range export of a checkpoint's tier with calibrated ranges and no training.

    python reports/quant/zclamp.py WORK_DIR CHECKPOINT TIER OUT_DIR

Every `z` feeds only LOGISTIC and TANH. Beyond |z| = ln(511) LOGISTIC's int8 output (grid 1/256) is 0 or 255/256 and
TANH's (grid 1/128) is -1 or 127/128 either way, so clamping z's int8 range to +-ln(511) rounds nothing the kernels
could see and makes z's grid 2-3x finer (calibration sets it to the largest |z| seen, 10-24). Writes OUT_DIR/float32,
ptq (the converter's own calibration), union (the calibrated ranges through the learned-range export: the yardstick,
which decodes as ptq does) and zclamp; decode them with graph_mix.py.
"""
import math
import sys
from pathlib import Path

import numpy as np

from pipeline.build import GRAPHS, PreparedData, _calibration_features, _representative
from pipeline.calibrate import load_calibration_recipe
from pipeline.checkpoint import ModelCheckpoint
from pipeline.data import DataSource
from pipeline.export import calibrated_ranges, convert_all
from regate import bench_inputs  # reports/quant/regate.py, beside this script

SATURATION = math.log(511.0)  # sigmoid(S) = 1 - 1/512


def calibrated_tier(work: Path, ck_dir: Path, tier: int, splits: tuple[str, ...] = ()) -> tuple:
    """A checkpoint's tier as the default calibration recipe sees it: (checkpoint, corpus of the bench work dir's
    train + `splits`, tier params, float32 graphs, representative inputs, calibrated ranges, union of each point's tensors)."""
    data, _ = bench_inputs(work)
    corpus = PreparedData(DataSource("fsdd", ""), data, {}, {s: data / f"{s}.jsonl" for s in ("train", *splits)})
    ck = ModelCheckpoint.load(ck_dir)
    recipe = load_calibration_recipe("default")
    params = ck.tier_params(tier)
    floats, rep = _representative(ck, params, _calibration_features(corpus, recipe, ck), recipe)
    return ck, corpus, params, floats, rep, calibrated_ranges(ck.config, params, rep, "union")


def main() -> None:
    work, ck_dir, tier, out = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
    ck, _, params, floats, rep, ranges = calibrated_tier(work, ck_dir, tier)
    clamped = {p: np.array([max(r[0], -SATURATION), min(r[1], SATURATION)], np.float32) if p.endswith("/z") else r for p, r in ranges.items()}
    for p in sorted(p for p in ranges if p.endswith("/z")):
        print(f"{p}: calibrated {ranges[p][0]:+.2f}..{ranges[p][1]:+.2f}, clamped {clamped[p][0]:+.2f}..{clamped[p][1]:+.2f}")
    variants = {"float32": floats, "ptq": convert_all(ck.config, params, rep), "union": convert_all(ck.config, params, rep, ranges=ranges),
                "zclamp": convert_all(ck.config, params, rep, ranges=clamped)}
    for name, graphs in variants.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        for g in GRAPHS:
            (out / name / f"{g}.tflite").write_bytes(graphs[g])


if __name__ == "__main__":
    main()
