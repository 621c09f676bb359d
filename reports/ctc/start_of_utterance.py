"""Where a tiny model's word errors are, and what it predicts before the first word (reports/ctc/README.md).

    python reports/ctc/start_of_utterance.py DIST CHECKPOINT CORPUS.jsonl [--limit N]

DIST: a device folder (`dist/watch`), decoded in LiteRT, int8. CHECKPOINT: the training checkpoint it was
exported from (`<work-dir>/cache/train/<key>/checkpoint`). CORPUS: a test manifest (`<work-dir>/cache/data/<key>/test_seen.jsonl`).
Prints the word error rate by word position (utterances whose hypothesis has as many words as the reference),
the most frequent errors, and, from the float model, p(blank) in the first frames at the first label (u = 0).
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

import jiwer
import numpy as np

from pipeline._tf import tf
from pipeline.checkpoint import ModelCheckpoint
from pipeline.corpus import read_manifest
from pipeline.features import utterance_features
from pipeline.model import forward
from pipeline.verify import load_manifest, score, transducer_from_manifest


def error_counts(refs: list[str], hyps: list[str]) -> collections.Counter:
    """'ref->hyp' substitutions, 'ref->_' deletions, '_->hyp' insertions."""
    out: collections.Counter = collections.Counter()
    for r, h in zip(refs, hyps, strict=True):
        rw, hw = r.split(), h.split()
        for c in jiwer.process_words(r, h if hw else "<empty>").alignments[0]:
            a, b = rw[c.ref_start_idx:c.ref_end_idx], hw[c.hyp_start_idx:c.hyp_end_idx]
            if c.type == "substitute":
                out.update(f"{x}->{y}" for x, y in zip(a, b))
            elif c.type == "delete":
                out.update(f"{x}->_" for x in a)
            elif c.type == "insert":
                out.update(f"_->{y}" for y in b)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dist", type=Path)
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("corpus", type=Path)
    ap.add_argument("--limit", type=int, default=56)
    a = ap.parse_args()

    corpus = read_manifest(a.corpus)
    sub = type(corpus)(corpus.utterances[:a.limit], corpus.root)
    refs = [u.text for u in sub.utterances]
    t, fe, norm, tok = transducer_from_manifest(a.dist, load_manifest(a.dist), "litert")
    feats = [norm(f) for f in utterance_features(sub, fe)]  # the manifest's frontend and statistics: the checkpoint's
    s = score(t, tok, feats, refs, 1.0)
    wrong, total = collections.Counter(), collections.Counter()
    for r, h in zip(refs, s.hypotheses, strict=True):
        if len(r.split()) == len(h.split()):
            for i, (x, y) in enumerate(zip(r.split(), h.split())):
                total[i] += 1
                wrong[i] += x != y
    print(f"int8 WER {s.wer:.3f} on {len(refs)} utterances")
    print("word errors by position (same-length hypotheses):", ", ".join(f"{i}: {wrong[i]}/{total[i]}" for i in sorted(total)))
    print("most frequent errors:", error_counts(refs, s.hypotheses).most_common(8))

    ck = ModelCheckpoint.load(a.checkpoint)
    params = {k: tf.constant(v[None]) for k, v in ck.params.items()}
    stack = ck.config.encoder.stack
    rows = []
    for u, f in zip(sub.utterances[:8], feats):
        f = f[: len(f) // stack * stack]
        pred_in = np.array([[tok.blank_id, *tok.encode(u.text)]], np.int32)
        logits = forward(ck.config, params, tf.constant(f[None]), tf.constant(pred_in)).numpy()[0, 0]  # (T, U+1, V)
        rows.append(tf.nn.softmax(logits[:6, 0]).numpy()[:, tok.blank_id])
    print("float p(blank) at the first label (u = 0), stacked frames 0..5, mean of 8 utterances:", np.round(np.mean(rows, axis=0), 3))


if __name__ == "__main__":
    main()
