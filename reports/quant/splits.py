"""Float and int8 WER on both test splits of every export in a work dir's stage cache (base, AAT, float control).

    python reports/quant/splits.py WORK_DIR [INIT]
        WORK_DIR: the --work-dir of a `pipeline bench quant` run; INIT: its --init checkpoint folder, if it had one
        (the stage cache keys that checkpoint by its files' digests, not by where it is)

One line per export: phase (train = the base checkpoint, aat, float_finetune), its recipe's [aat] distill, tier, then test_seen float / int8 and
test_unseen float / int8 WER in %, decoded with the three .tflite graphs in LiteRT. Written to ask whether the
seen-speaker split (FSDD recordings 0-4 of the training speakers, 200 words) could choose between AAT and PTQ per
tier without looking at the unseen speaker (reports/quant/README.md, session 15). Run from the project root with
the project's Python (`.venv/bin/python`).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.build import PreparedData, _eval_sets, _transducer
from pipeline.cache import StageCache, digest
from pipeline.checkpoint import ModelCheckpoint
from pipeline.data import DataOptions, resolve_source
from pipeline.runtimes import LiteRTGraph
from pipeline.verify import score

SPLITS = ("test_seen", "test_unseen")


def main(work_dir: Path, init: Path | None) -> None:
    cache = work_dir / "cache"
    data = next((cache / "data").iterdir())
    corpus = PreparedData(resolve_source(DataOptions()), data, {}, {s: data / f"{s}.jsonl" for s in SPLITS})
    tests = None  # the test sets' features, normalized as the checkpoints (one model, one normalizer) normalize them
    print("phase distill tier seen_float seen_int8 unseen_float unseen_int8")
    for export in sorted((cache / "export").iterdir()):
        stage = json.loads((export / "stage.json").read_text())
        trained = stage["inputs"]["train"]  # the key of the stage that wrote the exported checkpoint
        phase = trained.get("phase", "train")
        distill = trained.get("aat", {}).get("distill", "-")  # a fine-tuning's recipe; "-" for the base checkpoint
        if "checkpoint" in trained:  # the bench's --init
            if init is None:
                sys.exit(f"{export.name} exports an --init checkpoint: give its folder as INIT.")
            ck = ModelCheckpoint.load(init)
        else:
            ck = ModelCheckpoint.load(StageCache(cache).folder(phase, digest(trained)) / "checkpoint")
        row = [phase, distill, stage["summary"]["tier"]]
        tests = tests or _eval_sets(corpus, ck)
        for split in SPLITS:
            for variant in ("float32", "int8"):
                t = _transducer(ck.config, ck.tokenizer, {f.stem: LiteRTGraph(f.read_bytes(), 1) for f in (export / variant).glob("*.tflite")})
                row.append(round(100 * score(t, ck.tokenizer, *tests[split]).wer, 1))
        print(*row, flush=True)


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) == 3 else None)
