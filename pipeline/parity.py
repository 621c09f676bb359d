"""Parity of the int8 artifacts with the int8 emulation AAT trains through: the share of outputs within one step."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ._tf import tf
from .model import forward
from .quant import Emulated

if TYPE_CHECKING:
    from .config import ModelConfig
    from .runtimes import Graph


def stream_encoder(graph: Graph, feats: np.ndarray, chunk: int) -> np.ndarray:
    """encoder_out of every frame of `feats` (a whole number of chunks), run chunk by chunk with the state fed back."""
    state = {s.name: np.zeros(s.shape, np.float32) for s in graph.inputs if s.name != "features"}
    outs = []
    for i in range(len(feats) // chunk):
        o = graph(features=feats[None, i * chunk : (i + 1) * chunk], **state)
        state = {k: o[f"{k}_out"] for k in state}
        outs.append(o["encoder_out"][0])
    return np.concatenate(outs)


def emulation_agreement(
    cfg: ModelConfig,
    params: dict[str, np.ndarray],
    ranges: dict[str, np.ndarray],
    int8: dict[str, Graph],
    utterances: list[tuple[np.ndarray, list[int]]],
    blank: int = 0,
) -> dict[str, float]:
    """Share of int8 outputs within one int8 step of the emulation, per graph output.

    For each (normalized features, token ids) utterance: the emulated forward pass runs over the
    whole utterance (as in training); the int8 graphs run as an app runs them: the encoder chunk
    by chunk with its state fed back, the predictor token by token from the blank, the joiner on
    every (encoder frame, predictor output) pair.
    """
    vocab = params["pred_embed/embeddings"].shape[0]
    chunk = cfg.chunk_feature_frames
    batched = {k: tf.constant(v[None]) for k, v in params.items()}
    q = Emulated({k: tf.constant(np.asarray(v, np.float32)[None]) for k, v in ranges.items()})
    scale = {s.name: s.scale for g in int8.values() for s in g.outputs}
    hits = {"encoder_out": [0, 0], "predictor_out": [0, 0], "logits": [0, 0]}
    for feats, tokens in utterances:
        n = -(-len(feats) // chunk) * chunk
        padded = np.zeros((n, feats.shape[1]), np.float32)
        padded[: len(feats)] = feats
        pred_in = np.array([[blank, *tokens]], np.int32)
        enc_e, pred_e, logits_e = (
            t.numpy()[0, 0]
            for t in forward(cfg, batched, tf.constant(padded[None]), tf.constant(pred_in), q, parts=True)
        )
        enc = stream_encoder(int8["encoder"], padded, chunk)
        pr = int8["predictor"]
        state = {s.name: np.zeros(s.shape, np.float32) for s in pr.inputs if s.name != "token"}
        pred = []
        for k in pred_in[0]:
            o = pr(token=np.eye(vocab, dtype=np.float32)[k][None], **state)
            state = {s: o[f"{s}_out"] for s in state}
            pred.append(o["predictor_out"][0])
        pred = np.stack(pred)
        jo = int8["joiner"]
        logits = np.stack(
            [
                [jo(encoder_frame=enc[t][None], predictor_out=pred[u][None])["logits"][0] for u in range(len(pred))]
                for t in range(len(enc))
            ]
        )
        for name, got, want in (
            ("encoder_out", enc, enc_e),
            ("predictor_out", pred, pred_e),
            ("logits", logits, logits_e),
        ):
            hits[name][0] += int(np.sum(np.abs(got - want) <= scale[name] * (1 + 1e-4)))
            hits[name][1] += got.size
    return {k: h / max(n, 1) for k, (h, n) in hits.items()}
