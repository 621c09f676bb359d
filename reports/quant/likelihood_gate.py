"""A finer held-out measure for the [aat] gate, tried on a `bench quant` work dir's cached exports: the log-likelihood
of the split's transcripts under each tier's int8 graphs (PTQ and AAT), scored in LiteRT over the whole RNN-T lattice.

    python reports/quant/likelihood_gate.py WORK_DIR

WER on the 200-word test_seen moves in whole words, so the `significant` gate cannot see a gain of a few words
(reports/quant/README.md, sessions 16-17). The log-likelihood moves with every utterance. Rule tried (fixed before any
run): ship AAT where its transcripts' negative log-likelihood per word on the gate's split is lower than PTQ's with
the whole 95% paired-bootstrap interval below 0, and its WER there (the cached gate's) is not higher. One JSON line per
tier the bench's gate decided on.
"""
import json
import math
import sys
from pathlib import Path

import numpy as np

from pipeline.build import GRAPHS, PreparedData, _eval_sets, _transducer
from pipeline.cache import StageCache
from pipeline.checkpoint import ModelCheckpoint
from pipeline.data import DataSource
from pipeline.decode import Transducer, _run_predictor
from pipeline._tf import tf
from pipeline.rnnt_loss import rnnt_log_likelihood
from pipeline.runtimes import LiteRTGraph
from pipeline.verify import paired_bootstrap

SPLITS = ("test_seen", "test_unseen", "synth/test_seen", "synth/test_unseen")


def log_likelihood(t: Transducer, feats: np.ndarray, labels: list[int]) -> float:
    """log p(labels | feats) under the three graphs: the streaming encoder over the padded chunks (as greedy_decode
    runs it), the predictor over the label prefixes, the joiner at every lattice point, then the training loss's
    forward recursion (rnnt_loss.rnnt_log_likelihood, tested against a brute-force reference)."""
    c = t.chunk_feature_frames
    n_chunks = max(1, math.ceil(len(feats) / c))
    padded = np.zeros((n_chunks * c, feats.shape[1]), np.float32)
    padded[: len(feats)] = feats
    state = t.zero_states(t.encoder)
    enc = []
    for i in range(n_chunks):
        out = t.encoder(features=padded[None, i * c : (i + 1) * c], **state)
        state = {k: out[f"{k}_out"] for k in state}
        enc.extend(out["encoder_out"][0])
    enc = enc[: math.ceil(len(feats) / t.stack)]
    pstate = t.zero_states(t.predictor)
    preds = []
    for token in [t.blank_id, *labels]:
        p, pstate = _run_predictor(t, token, pstate)
        preds.append(p)
    logits = np.array([[t.joiner(encoder_frame=frame[None], predictor_out=p)["logits"][0] for p in preds] for frame in enc], np.float32)
    ll = rnnt_log_likelihood(tf.constant(logits[None]), tf.constant([labels], tf.int32), tf.constant([len(enc)], tf.int32),
                             tf.constant([len(labels)], tf.int32), t.blank_id)
    return float(ll.numpy()[0])


def main() -> None:
    work = Path(sys.argv[1])
    cache = work / "cache"
    stages, store = [json.loads(p.read_text()) for p in (cache / "export").glob("*/stage.json")], StageCache(cache)
    exports = {json.dumps(s["inputs"], sort_keys=True): store.folder("export", s["key"]) for s in stages}
    data = max((cache / "data").iterdir(), key=lambda d: d.stat().st_mtime)
    corpus = PreparedData(DataSource("fsdd", ""), data, {}, {s: data / f"{s}.jsonl" for s in SPLITS})
    ck = ModelCheckpoint.load(next((cache / "aat").glob("*/checkpoint")))  # the config, tokenizer and normalizer
    rows = []
    for p in (cache / "aat_gate").glob("*/stage.json"):
        stage = json.loads(p.read_text())
        inputs, gate = stage["inputs"], stage["summary"]
        split = inputs["split"]
        feats, refs, _ = _eval_sets(corpus, ck, only=split)[split]
        labels = [ck.tokenizer.encode(r) for r in refs]
        words = [len(r.split()) for r in refs]
        nll = {}
        for name in ("ptq", "aat"):
            graphs = exports[json.dumps(inputs[name], sort_keys=True)] / "int8"
            t = _transducer(ck.config, ck.tokenizer, {g: LiteRTGraph((graphs / f"{g}.tflite").read_bytes()) for g in GRAPHS})
            nll[name] = [-log_likelihood(t, f, y) for f, y in zip(feats, labels, strict=True)]
        diff, lo, hi = paired_bootstrap(nll["ptq"], nll["aat"], words)
        rows.append({"tier": inputs["ptq"]["tier"], "split": split, "words": sum(words),
                     "nll_per_word_ptq": round(sum(nll["ptq"]) / sum(words), 4), "nll_per_word_aat": round(sum(nll["aat"]) / sum(words), 4),
                     "aat_minus_ptq": round(diff, 4), "interval95": [round(lo, 4), round(hi, 4)],
                     "shipped": "aat" if hi < 0 and gate["aat_minus_ptq"] <= 0 else "ptq", "wer_gate": gate})
    for row in sorted(rows, key=lambda r: r["tier"]):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
