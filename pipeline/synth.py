"""Offline speech: spoken digits synthesized with espeak-ng (library shipped by `espeakng-loader`).

Each synthetic "speaker" is an espeak-ng English voice with a variant, pitch, pitch
range and rate; train and test speakers are disjoint. Digits are synthesized one
word at a time, trimmed, resampled to the model rate and joined by the same
connected-digit recipe as FSDD, so the two sources give the same splits.
"""

from __future__ import annotations

import ctypes
import itertools
import logging
import multiprocessing
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import resample
from .digits import DIGIT_WORDS, ConnectRecipe, Recording, build_split, trim_silence
from .errors import DataError

log = logging.getLogger(__name__)

VOICES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan", "en-gb-x-gbcwmd")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_RATE, _PITCH, _RANGE = 1, 3, 4


@dataclass(frozen=True)
class SynthRecipe:
    train_speakers: int = 24
    test_speakers: int = 6
    takes: int = 6  # recordings per digit per speaker; take 0 is the seen-speaker test take
    train_utterances: int = 3000
    test_voices: tuple[str, ...] = ()  # voices that say no training speech; they say the `test_voices` split


@dataclass(frozen=True)
class SynthSpeaker:
    name: str
    voice: str
    pitch: int
    pitch_range: int
    rate: int


class Espeak:
    """A ctypes binding to the few espeak-ng calls we need (no maintained Python binding ships the library)."""

    def __init__(self) -> None:
        try:
            import espeakng_loader
        except ImportError:
            raise DataError(
                "synthesized speech needs the `espeakng-loader` package (pip install espeakng-loader)."
            ) from None
        self._lib = ctypes.CDLL(espeakng_loader.get_library_path())
        self._libc = ctypes.CDLL(None)
        self._libc.srand.argtypes = [ctypes.c_uint]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = self._lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise DataError("espeak-ng failed to initialize (its voice data is missing).")
        self.sample_rate = int(rate)
        self._chunks: list[np.ndarray] = []
        proto = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def on_audio(wav, n, _events):  # type: ignore[no-untyped-def]
            if n > 0:
                self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
            return 0

        self._callback = proto(on_audio)  # keep a reference: espeak holds the pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def say(self, text: str, speaker: SynthSpeaker, rate: int, pitch: int) -> np.ndarray:
        """Synthesize `text`; returns float32 samples at `self.sample_rate`."""
        if self._lib.espeak_SetVoiceByName(speaker.voice.encode()) != 0:
            raise DataError(f"espeak-ng has no voice {speaker.voice!r}.")
        self._lib.espeak_SetParameter(_RATE, rate, 0)
        self._lib.espeak_SetParameter(_PITCH, pitch, 0)
        self._lib.espeak_SetParameter(_RANGE, speaker.pitch_range, 0)
        self._chunks = []
        # espeak-ng's noise sources draw from its own generator (seeded from the clock) and from
        # libc rand(): seed both per utterance so the same recipe synthesizes the same audio
        seed = zlib.crc32(f"{text}|{speaker}|{rate}|{pitch}".encode())
        self._lib.espeak_ng_SetRandSeed(seed)
        self._libc.srand(seed)
        data = text.encode() + b"\0"
        self._lib.espeak_Synth(data, len(data), 0, 0, 0, 0, None, None)
        if not self._chunks:
            raise DataError(f"espeak-ng produced no audio for {text!r} with voice {speaker.voice!r}.")
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


def make_speakers(n: int, rng: np.random.Generator, voices: tuple[str, ...] = VOICES) -> list[SynthSpeaker]:
    """`n` voice+variant speakers of `voices` with random pitch, range and rate: distinct voice+variant pairs while
    there are enough, then each pair again (with other pitch, range and rate)."""
    combos = [f"{v}+{x}" if x else v for v, x in itertools.product(voices, VARIANTS)]
    picks = (
        rng.choice(len(combos), size=n, replace=False)
        if n <= len(combos)
        else np.resize(rng.permutation(len(combos)), n)
    )
    return [
        SynthSpeaker(
            f"synth{i:02d}",
            combos[j],
            int(rng.integers(30, 71)),
            int(rng.integers(20, 81)),
            int(rng.integers(130, 191)),
        )
        for i, j in enumerate(picks)
    ]


def _say_all(jobs: list[tuple[str, SynthSpeaker, int, int]]) -> tuple[int, list[np.ndarray]]:
    engine = Espeak()
    return engine.sample_rate, [engine.say(word, spk, rate, pitch) for word, spk, rate, pitch in jobs]


def synthesize_recordings(
    speakers: list[SynthSpeaker], takes: int, sample_rate: int, rng: np.random.Generator
) -> list[tuple[Recording, int]]:
    """Every digit `takes` times per speaker, with small rate/pitch jitter per take.

    espeak-ng keeps synthesis state across utterances inside the library (a second run in
    one process sounds slightly different), so every call synthesizes in a fresh child
    process: the same recipe then gives the same audio in any process.
    """
    jobs, keys, gains = [], [], []
    for spk in speakers:
        for take in range(takes):
            for digit, word in enumerate(DIGIT_WORDS):
                rate = int(spk.rate * rng.uniform(0.9, 1.1))
                pitch = int(np.clip(spk.pitch + rng.integers(-5, 6), 0, 100))
                jobs.append((word, spk, rate, pitch))
                keys.append((spk.name, digit, take))
                gains.append(rng.uniform(-12, 0))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        engine_rate, audio = pool.apply(_say_all, (jobs,))
    out = []
    for (name, digit, take), x, gain in zip(keys, audio, gains):
        x = trim_silence(resample(x, engine_rate, sample_rate), sample_rate)
        x = x * (10 ** (gain / 20) / max(1e-6, float(np.abs(x).max())))
        out.append((Recording(name, digit, x.astype(np.float32)), take))
    return out


def prepare_synth(
    out_dir: Path, sample_rate: int, recipe: SynthRecipe, connect: ConnectRecipe, seed: int
) -> dict[str, Path]:
    """Write `train`, `test_seen`, `test_unseen` splits of synthesized connected digits."""
    rng = np.random.default_rng(seed)
    voices = tuple(v for v in VOICES if v not in recipe.test_voices)
    speakers = make_speakers(recipe.train_speakers + recipe.test_speakers, rng, voices)
    train_spk = speakers[: recipe.train_speakers]
    test_spk = [
        SynthSpeaker(f"synth-test{i:02d}", s.voice, s.pitch, s.pitch_range, s.rate)
        for i, s in enumerate(speakers[recipe.train_speakers :])
    ]
    log.info("synthesizing %d speakers x %d takes x 10 digits with espeak-ng", len(speakers), recipe.takes)
    train_recs = synthesize_recordings(train_spk, recipe.takes, sample_rate, rng)
    unseen = [r for r, _ in synthesize_recordings(test_spk, max(1, recipe.takes // 2), sample_rate, rng)]
    splits = {
        "train": build_split(
            [r for r, t in train_recs if t > 0], out_dir, "train", sample_rate, rng, connect, recipe.train_utterances
        ),
        "test_seen": build_split([r for r, t in train_recs if t == 0], out_dir, "test_seen", sample_rate, rng, connect),
        "test_unseen": build_split(unseen, out_dir, "test_unseen", sample_rate, rng, connect),
    }
    if recipe.test_voices:
        held = [
            SynthSpeaker(f"synth-{s.voice}-{i:02d}", s.voice, s.pitch, s.pitch_range, s.rate)
            for i, s in enumerate(make_speakers(recipe.test_speakers, rng, recipe.test_voices))
        ]
        recs = [r for r, _ in synthesize_recordings(held, max(1, recipe.takes // 2), sample_rate, rng)]
        splits["test_voices"] = build_split(recs, out_dir, "test_voices", sample_rate, rng, connect)
    return splits
