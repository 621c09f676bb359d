"""Are a recipe's unseen-speaker errors the same on every training seed? A majority vote over device folders.

    python reports/ctc/seed_vote.py TEST.jsonl DIST_FOLDER DIST_FOLDER DIST_FOLDER [...]

Decodes TEST.jsonl with each folder's int8 graphs in LiteRT (through the manifest alone) and prints each folder's
WER, the WER of a per-utterance majority vote (the transcript at least half of the folders agree on, else the first
folder's), the utterances every folder gets wrong, and the most frequent word substitutions summed over the folders.
If the vote is hardly better than the folders, their errors are shared: the seed (the recipe's noise) is not what
limits the recipe, and averaging or distilling seeds cannot buy much.
"""
from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import jiwer

import pipeline  # noqa: F401  (environment: legacy Keras, oneDNN off)
from pipeline.corpus import read_manifest
from pipeline.verify import load_manifest, manifest_features, score, transducer_from_manifest, utterance_errors


def substitutions(ref: str, hyp: str) -> list[tuple[str, str]]:
    out = jiwer.process_words(ref, hyp)
    r, h = ref.split(), hyp.split()
    return [(r[a.ref_start_idx + k], h[a.hyp_start_idx + k]) for a in out.alignments[0] if a.type == "substitute"
            for k in range(a.ref_end_idx - a.ref_start_idx)]


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit(__doc__)
    corpus, folders = read_manifest(Path(argv[0])), [Path(a) for a in argv[1:]]
    refs = [u.text for u in corpus.utterances]
    words = sum(len(r.split()) for r in refs)
    hyps, total = [], 0
    for folder in folders:
        manifest = load_manifest(folder)
        t, fe, norm, tok = transducer_from_manifest(folder, manifest, "litert")
        feats = manifest_features(manifest, fe, norm, corpus)
        s = score(t, tok, feats, refs, sum(u.duration for u in corpus.utterances))
        hyps.append(s.hypotheses)
        total += sum(s.word_errors)
        print(f"{folder}: {100 * s.wer:.1f}%")
    vote = []
    for hs in zip(*hyps):
        best, n = Counter(hs).most_common(1)[0]
        vote.append(best if 2 * n >= len(hs) else hs[0])
    print(f"majority vote of {len(folders)}: {100 * sum(utterance_errors(refs, vote)) / words:.1f}%")
    print(f"utterances wrong in every folder: {sum(all(h[i] != r for h in hyps) for i, r in enumerate(refs))} of {len(refs)}")
    subs = Counter(p for hs in hyps for r, h in zip(refs, hs) for p in substitutions(r, h))
    print(f"word errors summed over the folders: {total}; most frequent substitutions (reference -> hypothesis): "
          + ", ".join(f"{a} -> {b} {n}" for (a, b), n in subs.most_common(6)))


if __name__ == "__main__":
    main(sys.argv[1:])
