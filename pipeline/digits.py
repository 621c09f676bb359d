"""Connected-digit utterances built from isolated digit recordings.

Shared by the FSDD recipe and the synthesized-speech recipe: one speaker's recordings
are concatenated with short random pauses (low-level noise, never digital silence).
Every draw comes from one seeded generator, so a recipe is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import write_wav
from .corpus import Utterance, write_manifest

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@dataclass(frozen=True)
class Recording:
    speaker: str
    digit: int
    samples: np.ndarray  # (n,) float32 at the recipe's sample rate


@dataclass(frozen=True)
class ConnectRecipe:
    min_digits: int = 1
    max_digits: int = 6
    pause_s: tuple[float, float] = (0.05, 0.3)
    edge_s: tuple[float, float] = (0.05, 0.25)
    noise_dbfs: float = -60.0


def _pause(rng: np.random.Generator, sr: int, span: tuple[float, float], noise_dbfs: float) -> np.ndarray:
    n = int(rng.uniform(*span) * sr)
    return (rng.standard_normal(n) * 10 ** (noise_dbfs / 20)).astype(np.float32)


def connect(recs: list[Recording], rng: np.random.Generator, sr: int, recipe: ConnectRecipe) -> tuple[np.ndarray, str]:
    """Concatenate `recs` (one speaker) with random pauses; returns (samples, transcript)."""
    parts = [_pause(rng, sr, recipe.edge_s, recipe.noise_dbfs)]
    for i, r in enumerate(recs):
        if i:
            parts.append(_pause(rng, sr, recipe.pause_s, recipe.noise_dbfs))
        parts.append(r.samples)
    parts.append(_pause(rng, sr, recipe.edge_s, recipe.noise_dbfs))
    x = np.concatenate(parts)
    x = x + (rng.standard_normal(len(x)) * 10 ** (recipe.noise_dbfs / 20)).astype(np.float32)
    return np.clip(x, -1, 1).astype(np.float32), " ".join(DIGIT_WORDS[r.digit] for r in recs)


def _groups(items: list[Recording], rng: np.random.Generator, recipe: ConnectRecipe) -> list[list[Recording]]:
    """Split a shuffled list into consecutive groups of random size (each item used once)."""
    order = rng.permutation(len(items))
    out, i = [], 0
    while i < len(order):
        k = int(rng.integers(recipe.min_digits, recipe.max_digits + 1))
        out.append([items[j] for j in order[i : i + k]])
        i += k
    return out


def build_split(
    recordings: list[Recording],
    out_dir: Path,
    name: str,
    sr: int,
    rng: np.random.Generator,
    recipe: ConnectRecipe,
    num_utterances: int | None = None,
) -> Path:
    """Write `<out_dir>/<name>/*.wav` and `<out_dir>/<name>.jsonl`; returns the manifest path.

    With `num_utterances=None` every recording is used exactly once (test splits);
    otherwise `num_utterances` utterances are drawn, cycling through each speaker's
    recordings in fresh random orders (training splits).
    """
    by_speaker: dict[str, list[Recording]] = {}
    for r in recordings:
        by_speaker.setdefault(r.speaker, []).append(r)
    speakers = sorted(by_speaker)
    groups: list[list[Recording]] = []
    if num_utterances is None:
        for spk in speakers:
            groups.extend(_groups(by_speaker[spk], rng, recipe))
    else:
        pools = {spk: [] for spk in speakers}
        for n in range(num_utterances):
            spk = speakers[n % len(speakers)]
            if not pools[spk]:
                pools[spk] = _groups(by_speaker[spk], rng, recipe)
            groups.append(pools[spk].pop())
    utts = []
    for n, group in enumerate(groups):
        x, text = connect(group, rng, sr, recipe)
        uid = f"{name}-{n:05d}-{group[0].speaker}"
        rel = f"{name}/{uid}.wav"
        write_wav(out_dir / rel, x, sr)
        utts.append(Utterance(uid, rel, round(len(x) / sr, 4), text, group[0].speaker))
    manifest = out_dir / f"{name}.jsonl"
    write_manifest(manifest, utts)
    return manifest


def speech_span(x: np.ndarray, sr: int, threshold_db: float = -35.0, margin_s: float = 0.02) -> tuple[int, int]:
    """[start, end) of the samples between the first and last 10 ms whose energy is within `threshold_db` of the
    peak, widened by `margin_s` on each side."""
    hop = max(1, sr // 100)
    n = len(x) // hop
    if n == 0:
        return 0, len(x)
    energy = 10 * np.log10(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(energy > energy.max() + threshold_db)[0]
    margin = int(margin_s * sr)
    return max(0, loud[0] * hop - margin), min(len(x), (loud[-1] + 1) * hop + margin)


def trim_silence(x: np.ndarray, sr: int, threshold_db: float = -35.0, margin_s: float = 0.02) -> np.ndarray:
    """Trim leading/trailing samples whose 10 ms energy is `threshold_db` below the peak."""
    start, end = speech_span(x, sr, threshold_db, margin_s)
    return x[start:end]
