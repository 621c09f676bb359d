"""Unseen-speaker WER of device folders when the utterances are put together differently, or recorded in noise.

    python reports/ctc/recipe_robustness.py [--no-edge-padding] FSDD_DIR OUT_DIR DIST_FOLDER [DIST_FOLDER ...]

Every model here trains and is tested on connected digits made one way (pipeline/digits.py: 1-6 digits, 0.05-0.3 s
pauses, 0.05-0.25 s at each end, a -60 dBFS noise floor). Apps will not say digits that way: one digit at a time, a
phone number, long hesitations, a fan in the room. This builds the unseen speaker's (yweweler's) recordings into
utterances by other recipes, every recording once per variant (seeded, written once into OUT_DIR), and decodes each
with every DIST_FOLDER's int8 graphs in LiteRT through the manifest alone (`verify.transducer_from_manifest`, and the
manifest's edge padding: none before schema 1.2; `--no-edge-padding`: without it, as a client that ignores it would).

  recipe       the project's recipe, with another draw (seed 99) than the build's test_unseen
  as-recorded  every recording as FSDD ships it, one digit per utterance: trimmed to the word, no pause at either end
  as-recorded+100ms  the same with 100 ms of digital silence (zeros) added at each end, as an app can do (a folder whose
               manifest pads the edges itself, schema 1.2, gets its own zeros on top of these)
  no-edges     the recipe's pauses between digits, none at either end (the utterance starts and stops with a word)
  isolated     one digit per utterance, the recipe's 0.05-0.25 s at each end
  isolated-1s  one digit per utterance, 0.4-1.0 s at each end (a push-to-talk clip)
  long-pauses  0.4-1.0 s between digits and 0.3-1.0 s at each end
  tight        0-0.05 s between digits
  ten-digits   ten digits per utterance (a phone number; training has at most six)
  white|pink|brown SNR  `recipe` with white, pink (1/f power) or brown (1/f^2) noise added at SNR dB (10, 5) against
                        each utterance's own power

Prints one Markdown row per folder: WER % per variant.
"""
from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

import pipeline  # noqa: F401  (environment: legacy Keras, oneDNN off)
from pipeline.audio import read_wav, write_wav
from pipeline.corpus import Utterance, read_manifest, write_manifest
from pipeline.digits import DIGIT_WORDS, ConnectRecipe, build_split
from pipeline.fsdd import load_recordings

from channel_robustness import report  # reports/ctc/channel_robustness.py, beside this script

SPEAKER, SEED = "yweweler", 99
RECIPES = {
    "recipe": ConnectRecipe(),
    "no-edges": ConnectRecipe(edge_s=(0.0, 0.0)),
    "isolated": ConnectRecipe(1, 1),
    "isolated-1s": ConnectRecipe(1, 1, edge_s=(0.4, 1.0)),
    "long-pauses": ConnectRecipe(pause_s=(0.4, 1.0), edge_s=(0.3, 1.0)),
    "tight": ConnectRecipe(pause_s=(0.0, 0.05)),
    "ten-digits": ConnectRecipe(10, 10),
}
NOISES = {f"{colour}{snr}dB": (colour, snr) for colour in ("white", "pink", "brown") for snr in (10, 5)}


def coloured_noise(n: int, colour: str, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance noise whose power falls as 1/f^0 (white), 1/f (pink) or 1/f^2 (brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spectrum / f ** ({"white": 0.0, "pink": 0.5, "brown": 1.0}[colour]), n)
    return y / (np.std(y) + 1e-12)


def write_variants(fsdd: Path, out: Path, rate: int) -> dict[str, Path]:
    """Every variant's manifest under OUT_DIR (each written last, so its presence means the variant is complete)."""
    paths = {name: out / f"{name}.jsonl" for name in ["recipe", "as-recorded", "as-recorded+100ms", *list(RECIPES)[1:], *NOISES]}
    missing = [name for name in RECIPES if not paths[name].exists()]
    if missing or not paths["as-recorded"].exists() or not paths["as-recorded+100ms"].exists():
        recs = [r for r, _ in load_recordings(fsdd, rate, (SPEAKER,))]
        for name in missing:
            build_split(recs, out, name, rate, np.random.default_rng(SEED), RECIPES[name])
        for name, pad in (("as-recorded", 0), ("as-recorded+100ms", rate // 10)):
            utts = []
            for n, r in enumerate(recs):
                x = np.concatenate([np.zeros(pad, np.float32), r.samples, np.zeros(pad, np.float32)])
                rel = f"{name}/{SPEAKER}-{n:04d}.wav"
                write_wav(out / rel, x, rate)
                utts.append(Utterance(f"{name}-{n:04d}", rel, round(len(x) / rate, 4), DIGIT_WORDS[r.digit], SPEAKER))
            write_manifest(paths[name], utts)
    base = read_manifest(paths["recipe"])
    for name, (colour, snr) in NOISES.items():
        if paths[name].exists():
            continue
        rng, utts = np.random.default_rng(SEED), []
        for u in base.utterances:
            x = read_wav(base.audio_path(u), rate).astype(np.float64)
            y = x + coloured_noise(len(x), colour, rng) * np.sqrt(np.mean(x**2) / 10 ** (snr / 10))
            rel = f"{name}/{Path(u.audio_filepath).name}"
            write_wav(out / rel, np.clip(y, -1.0, 32767 / 32768).astype(np.float32), rate)
            utts.append(replace(u, audio_filepath=rel))
        write_manifest(paths[name], utts)
    return paths


def main(argv: list[str]) -> None:
    report(argv, write_variants, __doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
