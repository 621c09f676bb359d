"""Training features: log-mel of every training utterance (plus augmented copies), tokens, statistics."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve, resample_poly
from tqdm import tqdm

from .audio import read_wav
from .config import AugmentConfig, ModelConfig
from .corpus import Corpus
from .digits import speech_span
from .errors import ArtifactError, DataError
from .frontend import FrontendConfig, Normalizer, log_mel, pad_edges
from .fsutil import atomic_write_bytes, atomic_write_json
from .tokenizer import CharTokenizer

log = logging.getLogger(__name__)


# training utterances per features shard (each with its augmented copies); an interrupted features stage resumes from
# the last complete shard
SHARD_UTTERANCES = 512
FEATURES_FORMAT = 1


@dataclass
class FeatureSet:
    """Normalized features and token ids of a training corpus, in memory (tests, small corpora).

    feats[i]: (frames_i, n_mels) float32; labels[i]: (U_i,) int32.
    """

    feats: list[np.ndarray]
    labels: list[np.ndarray]
    normalizer: Normalizer
    tokenizer: CharTokenizer

    def __len__(self) -> int:
        return len(self.feats)

    @property
    def lengths(self) -> np.ndarray:
        """(rows,) frames of each row."""
        return np.array([len(f) for f in self.feats], np.int64)

    def rows(self, idx: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The normalized features and token ids of rows `idx`."""
        return [self.feats[i] for i in idx], [self.labels[i] for i in idx]


class FeatureShards:
    """Training features on disk, read a batch at a time, so memory does not grow with the corpus.

    A folder of shards, each `NNNNN.f32` (the un-normalized log-mel frames of its rows, float32, one after another),
    `NNNNN.i32` (their token ids) and `NNNNN.json` (each row's global index, frames and tokens; written last, so a
    shard with its `.json` is complete), and `index.json` (the normalization, the vocabulary, the shards). Rows are
    normalized as they are read. Raw arrays rather than TFRecord: the length-bucketed batches (`train.Batcher`) take
    any row at any step, which needs random access by row; TFRecord is read in sequence only.

    Row order: rows 0..N-1 are the N clean utterances, row N + i * copies + c is copy c of utterance i.
    """

    def __init__(self, folder: Path, normalizer: Normalizer, tokenizer: CharTokenizer, n_mels: int, table: np.ndarray):
        self.folder, self.normalizer, self.tokenizer, self.n_mels = Path(folder), normalizer, tokenizer, n_mels
        self.table = table  # (rows, 5) int64: shard, frame offset, frames, token offset, tokens

    def __len__(self) -> int:
        return len(self.table)

    @property
    def lengths(self) -> np.ndarray:
        return self.table[:, 2]

    def rows(self, idx: Sequence[int]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        feats, labels = [], []
        for i in idx:
            shard, _, _, token, tokens = (int(v) for v in self.table[i])
            feats.append(self.normalizer(self._frames(i)))
            labels.append(self._read(f"{shard:05d}.i32", np.int32, tokens, token))
        return feats, labels

    def _frames(self, row: int) -> np.ndarray:
        """The un-normalized (frames, n_mels) features of `row`."""
        shard, frame, frames, _, _ = (int(v) for v in self.table[row])
        x = self._read(f"{shard:05d}.f32", np.float32, frames * self.n_mels, frame * self.n_mels)
        return x.reshape(frames, self.n_mels)

    def _read(self, name: str, dtype: type, count: int, offset: int) -> np.ndarray:
        path = self.folder / name
        try:
            x = np.fromfile(path, dtype, count=count, offset=offset * np.dtype(dtype).itemsize)
        except OSError as exc:
            raise ArtifactError(
                f"feature shard {path} is unreadable ({exc}); delete {self.folder} to rebuild."
            ) from None
        if len(x) != count:
            raise ArtifactError(f"feature shard {path} is truncated; delete {self.folder} to rebuild.")
        return x

    def clean_rows(self, utterances: int) -> Iterator[np.ndarray]:
        """The un-normalized clean features of the first `utterances` rows, one after another."""
        return (self._frames(i) for i in range(utterances))

    def in_memory(self) -> FeatureSet:
        """Every row read into a `FeatureSet` (for small corpora and tests)."""
        feats, labels = self.rows(range(len(self)))
        return FeatureSet(feats, labels, self.normalizer, self.tokenizer)

    @classmethod
    def load(cls, folder: Path) -> FeatureShards:
        folder = Path(folder)
        try:
            index = json.loads((folder / "index.json").read_text())
            if index.get("format") != FEATURES_FORMAT:
                raise ValueError(f"format {index.get('format')}, expected {FEATURES_FORMAT}")
            table = _table(folder, index["shards"], index["rows"])
            return cls(
                folder,
                Normalizer.from_dict(index["normalizer"]),
                CharTokenizer(tuple(index["vocab"])),
                int(index["n_mels"]),
                table,
            )
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ArtifactError(f"feature cache {folder} is unreadable ({exc}); delete it to rebuild.") from None


def _table(folder: Path, shards: int, rows: int) -> np.ndarray:
    """The row table of `shards` complete shards in `folder` (FeatureShards.table), global row order."""
    table = np.full((rows, 5), -1, np.int64)
    for shard in range(shards):
        meta = json.loads((folder / f"{shard:05d}.json").read_text())
        r = np.asarray(meta["rows"], np.int64).reshape(-1, 3)  # global row, frames, tokens
        table[r[:, 0]] = np.stack(
            [np.full(len(r), shard), np.cumsum(r[:, 1]) - r[:, 1], r[:, 1], np.cumsum(r[:, 2]) - r[:, 2], r[:, 2]], 1
        )
    if (table[:, 0] < 0).any():
        raise ValueError(f"{int((table[:, 0] < 0).sum())} rows are in no shard")
    return table


def reverberate(x: np.ndarray, rt60: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """`x` in a synthetic room: the direct sound plus a diffuse tail of Gaussian noise decaying by 60 dB in `rt60`
    seconds, starting 2-10 ms after it; the result has the input's RMS and length."""
    n = max(2, int(rt60 * sample_rate))
    delay = int(rng.uniform(0.002, 0.010) * sample_rate)
    t = np.arange(n)
    tail = rng.standard_normal(n) * np.exp(-6.9078 * t / n)  # ln(1000) = 6.9078: -60 dB at t = n
    h = np.zeros(delay + n)
    h[0] = 1.0
    h[delay:] += tail * np.sqrt(
        10 ** (rng.uniform(-6.0, 6.0) / 10) / np.sum(tail**2)
    )  # direct-to-reverberant ratio -6..+6 dB
    y = fftconvolve(x, h)[: len(x)]
    return (y * np.sqrt((np.mean(x**2) + 1e-12) / (np.mean(y**2) + 1e-12))).astype(np.float32)


def coloured_noise(n: int, slope: float, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of zero-mean, unit-power noise whose power falls as 1/f^`slope` (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0
    spectrum[0] = 0.0  # no DC: the power asked for is all in the noise
    y = np.fft.irfft(spectrum / f ** (slope / 2), n)
    return y / (np.std(y) + 1e-12)


def augment_waveform(x: np.ndarray, aug: AugmentConfig, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """Edges cut at the speech (a share of the copies), speed perturbation (resampling), reverberation (a share of the
    copies), random gain, noise at a random SNR (white, or coloured with a random slope: `noise_slope`), coarse
    requantization (a share of the copies: `quantize_prob`)."""
    if aug.trim_prob and rng.random() < aug.trim_prob:
        start, end = speech_span(x, sample_rate, margin_s=0.0)
        cut = int(rng.integers(3))  # 0: the lead, 1: the tail, 2: both
        x = x[start if cut != 1 else 0 : end if cut != 0 else len(x)]
    speed = float(rng.choice(aug.speed))
    if speed != 1.0:
        r = Fraction(speed).limit_denominator(20)
        x = resample_poly(x, r.denominator, r.numerator).astype(np.float32)
    if aug.reverb_prob and rng.random() < aug.reverb_prob:
        x = reverberate(x, float(rng.uniform(*aug.rt60_s)), sample_rate, rng)
    x = x * 10 ** (rng.uniform(*aug.gain_db) / 20)
    if rng.random() < aug.noise_prob:
        power = float(np.mean(x**2)) + 1e-10
        snr = rng.uniform(*aug.noise_snr_db)
        lo, hi = aug.noise_slope
        # white noise draws from the generator as before the slope existed, so earlier configurations keep their copies
        noise = (
            rng.standard_normal(len(x)).astype(np.float32)
            if hi == 0
            else coloured_noise(len(x), rng.uniform(lo, hi), rng).astype(np.float32)
        )
        x = x + noise * np.sqrt(power / 10 ** (snr / 10))
    if aug.quantize_prob and rng.random() < aug.quantize_prob:  # drawn only when on: other recipes keep their copies
        step = (float(np.max(np.abs(x))) + 1e-9) / np.exp(rng.uniform(np.log(16), np.log(128)))
        x = np.round(x / step) * step
    return np.clip(x, -1, 1).astype(np.float32)


def utterance_features(
    corpus: Corpus, fe: FrontendConfig, max_seconds: float | None = None, edge_padding_samples: int = 0
) -> list[np.ndarray]:
    """Un-normalized log-mel of each utterance in `corpus` (no augmentation), `edge_padding_samples` zeros added at
    each end of its audio first (the decode contract's edge padding: `pad_edges`)."""
    out = []
    for utt in corpus.utterances:
        x = read_wav(corpus.audio_path(utt), fe.sample_rate)
        _check_length(utt.id, len(x) / fe.sample_rate, fe, max_seconds)
        out.append(log_mel(pad_edges(x, edge_padding_samples), fe))
    return out


def _check_length(uid: str, seconds: float, fe: FrontendConfig, max_seconds: float | None) -> None:
    if max_seconds is not None and seconds > max_seconds:
        raise DataError(
            f"utterance {uid} lasts {seconds:.1f} s, longer than the model's limit of {max_seconds:.1f} s "
            "(train.max_seconds)."
        )
    if seconds * 1000 < fe.win_ms:
        raise DataError(f"utterance {uid} is shorter than one analysis window ({fe.win_ms} ms).")


def write_training_features(
    corpus: Corpus,
    cfg: ModelConfig,
    tokenizer: CharTokenizer,
    seed: int,
    folder: Path,
    edge_padding_samples: int = 0,
    shard_utterances: int = SHARD_UTTERANCES,
    stop_after_shards: int | None = None,
) -> FeatureShards | None:
    """Write the features of every training utterance, plus `augment.copies` augmented copies each, as shards in
    `folder` (`FeatureShards`); `edge_padding_samples` zeros at each end of every one (after augmentation: the zeros an
    app adds are not recorded). Memory holds one shard at a time.

    Resumes: shards already complete in `folder` are kept, and the augmentation's random generator continues from the
    state saved with the last of them, so the result is the same as an uninterrupted run's. `stop_after_shards`:
    return None after writing that many shards (as an interruption would)."""
    fe, aug = cfg.frontend, cfg.augment
    folder.mkdir(parents=True, exist_ok=True)
    utts = corpus.utterances
    n, copies = len(utts), aug.copies
    shards = max(1, math.ceil(n / shard_utterances))
    rng = np.random.default_rng(seed)
    done = 0
    while done < shards and (folder / f"{done:05d}.json").exists():
        done += 1
    if done:
        rng.bit_generator.state = json.loads((folder / f"{done - 1:05d}.json").read_text())["rng_after"]
        log.info("features: resuming after %d of %d shards", done, shards)
    with tqdm(total=n, initial=min(n, done * shard_utterances), desc="features", unit="utt", leave=False) as bar:
        for shard in range(done, shards):
            if stop_after_shards is not None and shard >= stop_after_shards:
                return None
            rows, feats, labels = [], [], []
            for i in range(shard * shard_utterances, min(n, (shard + 1) * shard_utterances)):
                utt = utts[i]
                ids = np.array(tokenizer.encode(utt.text, where=f"transcript of utterance {utt.id}"), np.int32)
                x = read_wav(corpus.audio_path(utt), fe.sample_rate)
                _check_length(utt.id, len(x) / fe.sample_rate, fe, cfg.train.max_seconds)
                versions = [x] + [augment_waveform(x, aug, rng, fe.sample_rate) for _ in range(copies)]
                for c, y in enumerate(versions):
                    f = log_mel(pad_edges(y, edge_padding_samples), fe)
                    rows.append((i if c == 0 else n + i * copies + c - 1, len(f), len(ids)))
                    feats.append(f)
                    labels.append(ids)
                bar.update(1)
            atomic_write_bytes(folder / f"{shard:05d}.f32", np.concatenate(feats).astype(np.float32).tobytes())
            atomic_write_bytes(folder / f"{shard:05d}.i32", np.concatenate(labels).astype(np.int32).tobytes())
            atomic_write_json(
                folder / f"{shard:05d}.json", {"rows": [list(r) for r in rows], "rng_after": rng.bit_generator.state}
            )
    rows_total = n * (1 + copies)
    table = _table(folder, shards, rows_total)
    partial = FeatureShards(folder, Normalizer((), ()), tokenizer, fe.n_mels, table)
    norm = Normalizer.fit(lambda: partial.clean_rows(n), fe.cmn_prior_frames)
    atomic_write_json(
        folder / "index.json",
        {
            "format": FEATURES_FORMAT,
            "utterances": n,
            "copies": copies,
            "rows": rows_total,
            "shards": shards,
            "n_mels": fe.n_mels,
            "normalizer": norm.to_dict(),
            "vocab": list(tokenizer.chars),
        },
    )
    return FeatureShards(folder, norm, tokenizer, fe.n_mels, table)


def compute_training_features(
    corpus: Corpus, cfg: ModelConfig, tokenizer: CharTokenizer, seed: int, edge_padding_samples: int = 0
) -> FeatureSet:
    """`write_training_features` into a temporary folder, every row read back into memory (tests, small corpora)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shards = write_training_features(corpus, cfg, tokenizer, seed, Path(tmp), edge_padding_samples)
        assert shards is not None
        return shards.in_memory()
