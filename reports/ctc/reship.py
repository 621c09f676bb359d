"""Export, calibrate and verify an already trained checkpoint with the current code, into a device folder.

    python reports/ctc/reship.py MODEL_TOML TARGET CHECKPOINT_DIR WORK_DIR OUT_DIR

For a change that moves only what happens after training (session 24: the decode contract's edge padding, which the
calibration and every evaluation now go through), this gives the figures a fresh `pipeline build` of the same
checkpoint would: the build's own stages, with training and the training features replaced by CHECKPOINT_DIR (a
build's `cache/train/<key>/checkpoint`). MODEL_TOML must be the configuration it was trained with; its `[synthesized]`
fields are not compared (checkpoints from before session 23 have none, and an FSDD build does not use them). FSDD is
read from $PIPELINE_FSDD_DIR. Prints the manifest's WER per held-out set (%).
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pipeline.build as b
from pipeline.checkpoint import ModelCheckpoint
from pipeline.data import DataOptions


def main(argv: list[str]) -> None:
    if len(argv) != 5:
        sys.exit(__doc__)
    model, target, ckpt, work, out = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    summary = json.loads((Path(ckpt).parent / "stage.json").read_text())["summary"]
    load = ModelCheckpoint.load.__func__
    ModelCheckpoint.load = classmethod(lambda cls, folder, expect=None, ignore=(): load(cls, folder, expect, (*ignore, "synthesized")))
    b.stage_train = lambda cache, cfg, feats, steps=None, method="dense", tier=None: (Path(ckpt), {**b.checkpoint_stage_input(Path(ckpt))[1], **summary})
    b.stage_features = lambda cache, cfg, corpus: (None, {"key": None})
    manifest = b.build(target, DataOptions("fsdd"), b.BuildPaths(Path(out), Path(work)), model=model)
    sets = json.loads(manifest.read_text())["evaluation"]["sets"]
    print(out, {s: {k: round(100 * v, 1) for k, v in e["wer"].items()} for s, e in sets.items()})


if __name__ == "__main__":
    main(sys.argv[1:])
