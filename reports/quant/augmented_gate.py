"""The [aat] gate on a harder held-out split, tried on a `bench quant` work dir's cached exports: test_seen with the
training recipe's waveform augmentation (speed 0.9 / 1.0 / 1.1, gain, white noise at 10-40 dB SNR half the time),
`COPIES` seeded copies of every utterance.

    python reports/quant/augmented_gate.py WORK_DIR [RULE [COPIES]]

test_seen is the training speakers' clean held-out recordings: on it the int8 graphs of a tier often decode as well as
the float ones even where the unseen speaker shows an int8 gap (reports/quant/README.md, session 20, seed 3). Inputs
farther from the training data may show the gap where clean ones do not. Runs build.stage_aat_gate with RULE (default:
the [aat] default) on the augmented split for every tier the bench's gate decided on (regate.regate); one JSON line per
tier.
"""
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.audio import read_wav, write_wav
from pipeline.build import PreparedData
from pipeline.checkpoint import ModelCheckpoint
from pipeline.config import AatConfig
from pipeline.corpus import read_manifest, write_manifest
from pipeline.data import DataSource
from pipeline.features import augment_waveform
from regate import bench_inputs, regate  # reports/quant/regate.py, beside this script

SPLIT = "test_seen_augmented"


def augmented_split(source: Path, out: Path, ck: ModelCheckpoint, copies: int) -> Path:
    """`copies` augmented copies of every utterance of the manifest `source`, written under `out` (seeded)."""
    corpus, rng, rate = read_manifest(source), np.random.default_rng(20261129), ck.config.frontend.sample_rate
    out.mkdir(parents=True, exist_ok=True)
    utts = []
    for u in corpus.utterances:
        x = read_wav(corpus.audio_path(u), rate)
        for k in range(copies):
            y = augment_waveform(x, ck.config.augment, rng, rate)
            name = f"{Path(u.audio_filepath).stem}_aug{k}.wav"
            write_wav(out / name, y, rate)
            utts.append(replace(u, id=f"{u.id}-aug{k}", audio_filepath=name, duration=len(y) / rate))
    write_manifest(out / f"{SPLIT}.jsonl", utts)
    return out / f"{SPLIT}.jsonl"


def main() -> None:
    work = Path(sys.argv[1])
    rule = sys.argv[2] if len(sys.argv) > 2 else AatConfig().gate
    copies = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    data, ck_dir = bench_inputs(work)
    ck = ModelCheckpoint.load(ck_dir)
    split = augmented_split(data / "test_seen.jsonl", work / f"augmented{copies}", ck, copies)
    corpus = PreparedData(DataSource("fsdd", ""), data, {"augmented": copies}, {SPLIT: split})
    for row in regate(work, ck_dir, corpus, replace(ck.config.aat, gate=rule), SPLIT, f"regate_augmented{copies}"):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
