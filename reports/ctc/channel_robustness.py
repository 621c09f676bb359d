"""Unseen-speaker WER of device folders when the recording level or microphone colour changes.

    python reports/ctc/channel_robustness.py [--no-edge-padding] TEST.jsonl OUT_DIR DIST_FOLDER [DIST_FOLDER ...]

The artifacts are decoded, by apps, on speech recorded through microphones and gains this project never saw. This
writes altered copies of a test corpus (TEST.jsonl, e.g. a build's `cache/data/*/test_unseen.jsonl`) into OUT_DIR
(once per test corpus) and decodes each variant with every DIST_FOLDER's int8 graphs in LiteRT, through the manifest alone
(`verify.transducer_from_manifest`: the frontend, normalization and decode loop the manifest states). Variants:

  clean      the recordings as they are
  gain-20dB  0.1 x the samples (a quiet microphone or a far talker)
  gain+12dB  4 x the samples, clipped to int16 (a hot input stage)
  lowpass    a one-pole low-pass, y[n] = 0.35 x[n] + 0.65 y[n-1] (a muffled microphone: -3 dB at ~550 Hz at 8 kHz)
  highpass   pre-emphasis, y[n] = x[n] - 0.95 x[n-1] (a thin microphone)

Prints one Markdown row per folder: WER % per variant. A per-utterance mean normalization (`[frontend]
cmn_prior_frames`) is meant to remove constant offsets in log-mel (gain: all bins; a fixed channel: per bin).
"""
from __future__ import annotations

import hashlib
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable

import numpy as np
from scipy.signal import lfilter

import pipeline  # noqa: F401  (environment: legacy Keras, oneDNN off)
from pipeline.audio import read_wav, write_wav
from pipeline.corpus import read_manifest, write_manifest
from pipeline.features import utterance_features
from pipeline.verify import load_manifest, manifest_edge_padding, score, transducer_from_manifest


VARIANTS = {
    "clean": lambda x: x,
    "gain-20dB": lambda x: 0.1 * x,
    "gain+12dB": lambda x: np.clip(4.0 * x, -1.0, 32767 / 32768),
    "lowpass": lambda x: lfilter([0.35], [1.0, -0.65], x),
    "highpass": lambda x: lfilter([1.0, -0.95], [1.0], x),
}


def write_variants(test: Path, out: Path, sample_rate: int) -> dict[str, Path]:
    """The altered copies of `test`, under OUT_DIR/<digest of TEST.jsonl>/<variant>/ (written once per test corpus: two
    builds whose data recipes differ have different test corpora, and one OUT_DIR serves both). Each recording is read
    once for all the variants still missing."""
    key = hashlib.sha256(test.read_bytes()).hexdigest()[:16]
    paths = {name: out / key / name / "test.jsonl" for name in VARIANTS}
    missing = [name for name, jsonl in paths.items() if not jsonl.exists()]
    if missing:
        src = read_manifest(test)
        for name in missing:
            paths[name].parent.mkdir(parents=True, exist_ok=True)
        for u in src.utterances:
            x = read_wav(src.audio_path(u), sample_rate).astype(np.float64)
            for name in missing:
                wav = paths[name].parent / Path(u.audio_filepath).name
                write_wav(wav, np.clip(VARIANTS[name](x), -1.0, 32767 / 32768).astype(np.float32), sample_rate)
        for name in missing:  # each manifest written last and atomically: its presence means the variant is complete
            write_manifest(paths[name], [replace(u, audio_filepath=Path(u.audio_filepath).name) for u in src.utterances])
    return paths


def print_wer_table(variants: dict[str, Path], folders: list[Path], edge_padding: bool = True) -> None:
    """One Markdown row per device folder: WER % of its int8 graphs in LiteRT on each variant's corpus (JSONL), decoded
    through the manifest alone (its edge padding included, none before schema 1.2; `edge_padding=False`: left out, as
    a client that ignores it would). Log-mel is computed once per (frontend, variant) and shared by the folders."""
    print("| folder | " + " | ".join(variants) + " |")
    print("| --- |" + " ---: |" * len(variants))
    corpora = {name: read_manifest(jsonl) for name, jsonl in variants.items()}
    logmel: dict[tuple, list[np.ndarray]] = {}  # (frontend, edge padding, variant) -> un-normalized log-mel
    for folder in folders:
        manifest = load_manifest(folder)
        t, fe, norm, tok = transducer_from_manifest(folder, manifest, "litert")
        edge = manifest_edge_padding(manifest) if edge_padding else 0
        cells = []
        for name, corpus in corpora.items():
            if (fe, edge, name) not in logmel:
                logmel[fe, edge, name] = utterance_features(corpus, fe, edge_padding_samples=edge)
            s = score(t, tok, [norm(f) for f in logmel[fe, edge, name]], [u.text for u in corpus.utterances],
                      sum(u.duration for u in corpus.utterances), desc=name)
            cells.append(f"{100 * s.wer:.1f}")
        print(f"| {folder} | " + " | ".join(cells) + " |", flush=True)


def report(argv: list[str], write: Callable[[Path, Path, int], dict[str, Path]], usage: str) -> None:
    """`[--no-edge-padding] SOURCE OUT_DIR DIST_FOLDER...`: write the variants of SOURCE into OUT_DIR with `write` (at
    the first folder's sample rate) and print their WER table (`--no-edge-padding`: decoded without the manifest's
    edge padding)."""
    padded = "--no-edge-padding" not in argv
    argv = [a for a in argv if a != "--no-edge-padding"]
    if len(argv) < 3:
        sys.exit(usage)
    source, out, folders = Path(argv[0]), Path(argv[1]), [Path(a) for a in argv[2:]]
    print_wer_table(write(source, out, load_manifest(folders[0])["frontend"]["sample_rate"]), folders, padded)


def main(argv: list[str]) -> None:
    report(argv, write_variants, __doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
