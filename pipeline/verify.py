"""Decode a test set with a transducer in a real runtime and score it (WER with jiwer)."""
from __future__ import annotations

import time
from dataclasses import dataclass

import jiwer
import numpy as np
from tqdm import tqdm

from .decode import DecodeStats, Transducer, greedy_decode
from .tokenizer import CharTokenizer


@dataclass
class Score:
    wer: float  # fraction, 0..1+
    utterances: int
    words: int
    seconds_audio: float
    seconds_compute: float
    stats: DecodeStats
    hypotheses: list[str]
    encoder_rtf: list[float]  # per utterance: encoder compute seconds / audio seconds
    decode_rtf: list[float]  # per utterance: whole greedy decode / audio seconds
    encoder_seconds_per_chunk: list[float]  # per utterance: mean encoder call time

    @property
    def rtf(self) -> float:
        return self.seconds_compute / max(self.seconds_audio, 1e-9)


def score(t: Transducer, tok: CharTokenizer, feats: list[np.ndarray], refs: list[str], seconds_audio: float, desc: str = "decode") -> Score:
    """Greedy-decode every utterance (features already normalized) and compute WER."""
    hyps, stats = [], DecodeStats()
    enc_rtf, dec_rtf, per_chunk = [], [], []
    t0 = time.perf_counter()
    for f in tqdm(feats, desc=desc, unit="utt", leave=False):
        h = greedy_decode(t, f)
        hyps.append(tok.decode(h.tokens))
        stats.add(h.stats)
        audio = max(len(f), 1) * t.hop_seconds
        enc_rtf.append(h.stats.encoder_seconds / audio)
        dec_rtf.append(h.stats.decode_seconds / audio)
        per_chunk.append(h.stats.encoder_seconds / max(h.stats.encoder_calls, 1))
    compute = time.perf_counter() - t0
    wer = float(jiwer.wer(list(refs), hyps))
    return Score(wer, len(refs), sum(len(r.split()) for r in refs), seconds_audio, compute, stats, hyps, enc_rtf, dec_rtf, per_chunk)
