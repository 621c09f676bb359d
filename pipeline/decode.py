"""Greedy streaming RNN-T decoding over three graphs: the loop the manifest describes to app teams.

state  = zeros for every encoder and predictor state input
pred   = predictor(one_hot(blank), state)            # start symbol is blank
for each chunk of `chunk_feature_frames` normalized frames (last chunk zero-padded):
    enc, enc_state = encoder(chunk, enc_state)
    for each of its encoder frames that covers real audio (ceil(frames / stack) in all):
        repeat at most `max_symbols_per_frame` times:
            k = argmax(joiner(enc_frame, pred))
            if k == blank: break
            emit k; pred, pred_state = predictor(one_hot(k), pred_state)
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .runtimes import Graph


@dataclass
class Transducer:
    """Three graphs plus the facts the decode loop needs (all recorded in the manifest)."""

    encoder: Graph
    predictor: Graph
    joiner: Graph
    chunk_feature_frames: int
    stack: int
    vocab_size: int
    blank_id: int
    max_symbols_per_frame: int
    hop_seconds: float = 0.01  # feature hop, for per-second-of-audio figures

    def zero_states(self, graph: Graph) -> dict[str, np.ndarray]:
        return {s.name: np.zeros(s.shape, np.float32) for s in graph.inputs if s.name.endswith(("_h", "_c"))}

    def one_hot(self, k: int) -> np.ndarray:
        v = np.zeros((1, self.vocab_size), np.float32)
        v[0, k] = 1.0
        return v


@dataclass
class DecodeStats:
    """Invocation counts (for per-second-of-audio cost estimates)."""

    utterances: int = 0
    feature_frames: int = 0
    encoder_calls: int = 0
    predictor_calls: int = 0
    joiner_calls: int = 0
    encoder_seconds: float = 0.0
    decode_seconds: float = 0.0

    def add(self, other: DecodeStats) -> None:
        for k in vars(self):
            setattr(self, k, getattr(self, k) + getattr(other, k))


@dataclass
class Hypothesis:
    tokens: list[int] = field(default_factory=list)
    stats: DecodeStats = field(default_factory=DecodeStats)


def _run_predictor(t: Transducer, token: int, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    out = t.predictor(token=t.one_hot(token), **state)
    return out["predictor_out"], {k: out[f"{k}_out"] for k in state}


def greedy_decode(t: Transducer, feats: np.ndarray) -> Hypothesis:
    """Decode normalized features (frames, n_mels) float32; returns token ids and call counts."""
    t_start = time.perf_counter()
    hyp = Hypothesis()
    st = hyp.stats
    st.utterances, st.feature_frames = 1, len(feats)
    c = t.chunk_feature_frames
    n_chunks = max(1, math.ceil(len(feats) / c))
    padded = np.zeros((n_chunks * c, feats.shape[1]), np.float32)
    padded[: len(feats)] = feats
    valid = math.ceil(len(feats) / t.stack)
    enc_state = t.zero_states(t.encoder)
    pred_state = t.zero_states(t.predictor)
    pred, pred_state = _run_predictor(t, t.blank_id, pred_state)
    st.predictor_calls += 1
    done = 0
    for i in range(n_chunks):
        t_enc = time.perf_counter()
        out = t.encoder(features=padded[None, i * c : (i + 1) * c], **enc_state)
        st.encoder_seconds += time.perf_counter() - t_enc
        st.encoder_calls += 1
        enc_state = {k: out[f"{k}_out"] for k in enc_state}
        for frame in out["encoder_out"][0]:
            if done == valid:
                break
            done += 1
            for _ in range(t.max_symbols_per_frame):
                logits = t.joiner(encoder_frame=frame[None], predictor_out=pred)["logits"][0]
                st.joiner_calls += 1
                k = int(np.argmax(logits))
                if k == t.blank_id:
                    break
                hyp.tokens.append(k)
                pred, pred_state = _run_predictor(t, k, pred_state)
                st.predictor_calls += 1
    st.decode_seconds = time.perf_counter() - t_start
    return hyp
