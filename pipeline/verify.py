"""Verification: decode with artifacts in real runtimes and score (WER with jiwer); check a device folder."""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jiwer
import numpy as np
from tqdm import tqdm

from .audio import read_wav
from .contract import graph_file
from .decode import DecodeStats, Transducer, greedy_decode
from .errors import ArtifactError, DataError
from .frontend import FrontendConfig, Normalizer, log_mel, mel_filterbank, pad_edges
from .runtimes import LiteRTGraph, TFLMGraph
from .tokenizer import CharTokenizer

if TYPE_CHECKING:
    from .corpus import Corpus


@dataclass
class Score:
    wer: float  # fraction, 0..1+
    utterances: int
    words: int
    seconds_audio: float
    seconds_compute: float
    stats: DecodeStats
    hypotheses: list[str]
    word_errors: list[int]  # per utterance: substitutions + deletions + insertions
    encoder_rtf: list[float]  # per utterance: encoder compute seconds / audio seconds
    decode_rtf: list[float]  # per utterance: whole greedy decode / audio seconds
    encoder_seconds_per_chunk: list[float]  # per utterance: mean encoder call time

    @property
    def rtf(self) -> float:
        return self.seconds_compute / max(self.seconds_audio, 1e-9)


def score(
    t: Transducer,
    tok: CharTokenizer,
    feats: list[np.ndarray],
    refs: list[str],
    seconds_audio: float,
    desc: str = "decode",
) -> Score:
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
    errors = utterance_errors(list(refs), hyps)
    words = sum(len(r.split()) for r in refs)
    return Score(
        sum(errors) / words, len(refs), words, seconds_audio, compute, stats, hyps, errors, enc_rtf, dec_rtf, per_chunk
    )


def utterance_errors(refs: list[str], hyps: list[str]) -> list[int]:
    """Word errors (substitutions + deletions + insertions) of each utterance: WER's numerator, per utterance."""
    out = []
    for r, h in zip(refs, hyps, strict=True):
        w = jiwer.process_words(r, h)
        out.append(w.substitutions + w.deletions + w.insertions)
    return out


def word_confusions(refs: list[str], hyps: list[str]) -> Counter[tuple[str, str]]:
    """How often each reference word was decoded as another: (ref, hyp) pairs from the word alignment; ("w", "") is
    w deleted, ("", "w") w inserted."""
    out: Counter[tuple[str, str]] = Counter()
    for r, h in zip(refs, hyps, strict=True):
        a = jiwer.process_words(r, h)
        ref, hyp = a.references[0], a.hypotheses[0]
        for c in a.alignments[0]:
            if c.type == "substitute":
                for k in range(c.ref_end_idx - c.ref_start_idx):
                    out[(ref[c.ref_start_idx + k], hyp[c.hyp_start_idx + k])] += 1
            elif c.type == "delete":
                out.update((w, "") for w in ref[c.ref_start_idx : c.ref_end_idx])
            elif c.type == "insert":
                out.update(("", w) for w in hyp[c.hyp_start_idx : c.hyp_end_idx])
    return out


def format_confusions(pairs: list[list[Any]]) -> str:
    """[[ref, hyp, count], ...] as "four→five 42, three→(deleted) 3"."""
    return ", ".join(f"{r or '(inserted)'}→{h or '(deleted)'} {n}" for r, h, n in pairs)


def paired_bootstrap(
    errors_a: list[int], errors_b: list[int], words: list[int], resamples: int = 10000, seed: int = 0
) -> tuple[float, float, float]:
    """WER(b) - WER(a) on the same utterances, with a 95% interval from resampling utterances (paired bootstrap).

    Whole utterances are resampled, so the interval reflects how much the difference depends on which
    utterances the test set happens to hold; an interval that spans 0 is not a measured difference.
    """
    a, b, n = (np.asarray(x, np.float64) for x in (errors_a, errors_b, words))
    if not (len(a) == len(b) == len(n)) or n.sum() <= 0:
        raise ValueError("paired_bootstrap needs equal-length error lists over a non-empty reference.")
    idx = np.random.default_rng(seed).integers(0, len(n), size=(resamples, len(n)))
    diffs = (b[idx].sum(1) - a[idx].sum(1)) / n[idx].sum(1)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float((b.sum() - a.sum()) / n.sum()), float(lo), float(hi)


def load_manifest(folder: Path) -> dict:
    """Read and schema-validate `folder/manifest.json`; `ArtifactError` on anything wrong."""
    from .manifest import validate_manifest

    path = Path(folder) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{path} does not exist (not a device artifact folder).") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path} is not readable JSON ({exc}).") from None
    validate_manifest(manifest, str(path))
    return manifest


def check_folder(folder: Path) -> dict:
    """The manifest of a device folder, checked against its schema, its own graphs and its integrity digests
    (`contract.check_device_folder`)."""
    from .contract import check_device_folder

    manifest = load_manifest(folder)
    check_device_folder(folder, manifest)
    return manifest


def transducer_from_manifest(
    folder: Path, manifest: dict, runtime: str
) -> tuple[Transducer, FrontendConfig, Normalizer, CharTokenizer]:
    """Everything needed to decode, built from the manifest alone (runtime: litert | tflm, or "litert tier N" |
    "tflm tier N": a tier of a switchable package)."""
    fe = manifest["frontend"]
    cfg = FrontendConfig(
        sample_rate=fe["sample_rate"],
        win_ms=fe["win_samples"] * 1000 / fe["sample_rate"],
        hop_ms=fe["hop_samples"] * 1000 / fe["sample_rate"],
        n_fft=fe["n_fft"],
        n_mels=fe["n_mels"],
        fmin=fe["fmin"],
        fmax=fe["fmax"],
        log_floor=fe["log_floor"],
    )
    if not np.allclose(mel_filterbank(cfg), np.array(fe["mel_filterbank"]), atol=1e-6):
        raise ArtifactError(f"{folder}: the manifest's mel filterbank differs from the one its parameters define.")
    graphs: dict[str, Any] = {}
    xnnpack = manifest["model"]["sparsity"]["litert_op_resolver"] == "BUILTIN"
    engine, tier = parse_runtime(runtime)
    for name, g in manifest["graphs"].items():
        data = tier_graph(folder, manifest, tier, name)
        graphs[name] = (
            TFLMGraph(data, g["tflm_arena_bytes"], f"graphs.{name}" + (f" at tier {tier}" if tier is not None else ""))
            if engine == "tflm"
            else LiteRTGraph(data, manifest["target"]["threads"], xnnpack)
        )
    st, dec, tok = manifest["streaming"], manifest["decode"], manifest["tokenizer"]
    t = Transducer(
        graphs["encoder"],
        graphs["predictor"],
        graphs["joiner"],
        st["chunk_feature_frames"],
        st["stack"],
        len(tok["vocab"]),
        tok["blank_id"],
        dec["max_symbols_per_frame"],
        fe["hop_samples"] / fe["sample_rate"],
    )
    return (
        t,
        cfg,
        Normalizer(tuple(fe["mean"]), tuple(fe["std"]), int(fe["cmn_prior_frames"])),
        CharTokenizer.from_dict(tok),
    )


def parse_runtime(runtime: str) -> tuple[str, int | None]:
    """("litert" | "tflm", tier or None) of a runtime name: litert, tflm, or "<runtime> tier N" (a tier of a switchable
    package)."""
    engine, _, tier = runtime.partition(" tier ")
    if engine not in ("litert", "tflm") or (tier and not tier.isdigit()):
        raise ValueError(f"unknown runtime {runtime!r}")
    return engine, int(tier) if tier else None


def tier_graph(folder: Path, manifest: dict, tier: int | None, graph: str) -> bytes:
    """The bytes of `graph` at `tier` of a switchable package (the base graph patched), or the shipped graph when
    `tier` is None."""
    from .switching import apply_patch

    where = str(Path(folder) / "manifest.json")
    base = graph_file(folder, manifest["graphs"][graph], f"graphs.{graph}", where).read_bytes()
    if tier is None:
        return base
    entry = next(t for t in manifest["switching"]["tiers"] if t["tier"] == tier)
    if entry["patches"] is None:
        return base
    patch = graph_file(folder, entry["patches"][graph], f"switching tier {tier} patches.{graph}", where)
    return apply_patch(base, patch.read_bytes(), str(patch))


def manifest_edge_padding(manifest: dict) -> int:
    """The zeros the manifest's frontend adds at each end of an utterance's audio."""
    return int(manifest["frontend"]["edge_padding_samples"])


def manifest_features(manifest: dict, fe: FrontendConfig, norm: Normalizer, corpus: Corpus) -> list[np.ndarray]:
    """Normalized features of `corpus` as the manifest's frontend presents them to the model (its edge padding
    included).
    """
    from .features import utterance_features

    return [norm(f) for f in utterance_features(corpus, fe, edge_padding_samples=manifest_edge_padding(manifest))]


def verify_dist(folder: Path, corpus_path: Path | None = None, limit: int = 5) -> dict[str, Any]:
    """Check a device folder: schema, hashes, graphs load and decode in their runtimes.

    Decodes the first `limit` utterances of `corpus_path` (JSONL) when given; otherwise
    the held-out utterances named in no file are unavailable, so only loading is checked.
    Returns {runtime: WER or None}.
    """
    from .corpus import read_manifest

    manifest = check_folder(folder)
    engines = ["litert"] + (["tflm"] if manifest["target"]["runtime"] == "tflm" else [])
    runtimes = list(engines)
    sw = manifest.get("switching")
    for tier in [t["tier"] for t in sw["tiers"] if t["tier"] != sw["base_tier"]] if sw else []:
        runtimes += [f"{e} tier {tier}" for e in engines]  # every other tier of a switchable package, patched
    result: dict[str, Any] = {}
    feats = None  # the same frontend for every runtime: computed once
    for rt in runtimes:
        t, fe, norm, tok = transducer_from_manifest(folder, manifest, rt)
        if corpus_path is None:
            greedy_decode(t, np.zeros((t.chunk_feature_frames, fe.n_mels), np.float32))
            result[rt] = None
            continue
        if feats is None:
            corpus = read_manifest(corpus_path)
            sub = type(corpus)(corpus.utterances[:limit], corpus.root)
            feats = manifest_features(manifest, fe, norm, sub)
        s = score(
            t,
            tok,
            feats,
            [u.text for u in sub.utterances],
            sum(u.duration for u in sub.utterances),
            desc=f"verify {rt}",
        )
        result[rt] = s.wer
        if rt.startswith("litert") and sw:
            check_switching_runtime(folder, manifest, rt, sub, fe, s.hypotheses)
    return result


def check_switching_runtime(
    folder: Path, manifest: dict, runtime: str, corpus: Corpus, fe: FrontendConfig, expected: list[str]
) -> None:
    """The tier `runtime` names, decoded by the runtime app teams copy (examples/streaming_decoder.py,
    `SwitchableDecoder`, patching the base graphs itself), gives `expected`, the pipeline's words for that tier's
    graphs; `ArtifactError` naming the tier and the first utterance that differs."""
    from .switching import load_example_decoder

    example = load_example_decoder()
    sw = manifest["switching"]
    tier = parse_runtime(runtime)[1]
    tier = sw["base_tier"] if tier is None else tier
    decoder = example.SwitchableDecoder(folder)
    for u, want in zip(corpus.utterances, expected, strict=True):
        decoder.reset()
        decoder.set_tier(tier)
        decoder.accept(read_wav(corpus.audio_path(u), fe.sample_rate))
        got = decoder.finish()
        if got != want:
            raise ArtifactError(
                f"{folder}: tier {tier} decoded by the switching runtime (examples/streaming_decoder.py) gives "
                f"{got!r} for {corpus.audio_path(u)}, its standalone graphs {want!r}."
            )


@dataclass
class Transcript:
    path: Path
    text: str
    seconds: float  # audio, at the model's sample rate
    compute_seconds: float  # frontend + greedy decode


def transcribe(
    folder: Path, wavs: list[Path], runtime: str = "litert", mix_stereo: bool = False, edge_padding: bool = True
) -> list[Transcript]:
    """Transcribe WAV files with a device folder's graphs, through its manifest alone (what an app does).

    The folder is checked first (schema, every sha256); every file is read before any is decoded, so a bad file
    stops the command before it prints anything. Files at another sample rate are resampled to the model's. The
    frontend's `edge_padding_samples` zeros at both ends of each file are added as its formula says
    (`edge_padding=False`:
    without them, to see what they do).
    """
    folder = Path(folder)
    manifest = check_folder(folder)
    if runtime == "tflm" and any("tflm_arena_bytes" not in g for g in manifest["graphs"].values()):
        raise ArtifactError(
            f"{folder} is built for {manifest['target']['runtime']}, not TFLM: its manifest has no TFLM arena sizes."
        )
    t, fe, norm, tok = transducer_from_manifest(folder, manifest, runtime)
    audio = []
    for path in wavs:
        x = read_wav(Path(path), fe.sample_rate, mix_stereo=mix_stereo)
        if len(x) < fe.win_samples:
            raise DataError(f"audio file {path} is shorter than one analysis window ({fe.win_ms:g} ms).")
        audio.append(x)
    edge = manifest_edge_padding(manifest) if edge_padding else 0
    out = []
    for path, x in zip(wavs, audio, strict=True):
        t0 = time.perf_counter()
        hyp = greedy_decode(t, norm(log_mel(pad_edges(x, edge), fe)))
        out.append(Transcript(Path(path), tok.decode(hyp.tokens), len(x) / fe.sample_rate, time.perf_counter() - t0))
    return out
