"""Training features: log-mel of every training utterance (plus augmented copies), tokens, statistics."""

from __future__ import annotations

import logging
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
from .fsutil import atomic_write_bytes
from .tokenizer import CharTokenizer

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """Normalized features and token ids of a training corpus.

    feats[i]: (frames_i, n_mels) float32; labels[i]: (U_i,) int32.
    """

    feats: list[np.ndarray]
    labels: list[np.ndarray]
    normalizer: Normalizer
    tokenizer: CharTokenizer

    def save(self, path: Path) -> None:
        import io

        buf = io.BytesIO()
        np.savez(
            buf,
            feats=np.concatenate(self.feats),
            feat_len=np.array([len(f) for f in self.feats]),
            labels=np.concatenate(self.labels),
            label_len=np.array([len(x) for x in self.labels]),
            mean=np.array(self.normalizer.mean),
            std=np.array(self.normalizer.std),
            prior_frames=np.array(self.normalizer.prior_frames),
            vocab=np.array(self.tokenizer.chars),
        )
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        try:
            with np.load(path, allow_pickle=False) as z:
                fo = np.cumsum(z["feat_len"])[:-1]
                lo = np.cumsum(z["label_len"])[:-1]
                return cls(
                    list(np.split(z["feats"], fo)),
                    list(np.split(z["labels"].astype(np.int32), lo)),
                    Normalizer(tuple(z["mean"].tolist()), tuple(z["std"].tolist()), int(z["prior_frames"])),
                    CharTokenizer(tuple(z["vocab"].tolist())),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"feature cache {path} is unreadable ({exc}); delete it to rebuild.") from None


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
    copies), random gain, noise at a random SNR (white, or coloured with a random slope: `noise_slope`)."""
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


def compute_training_features(
    corpus: Corpus, cfg: ModelConfig, tokenizer: CharTokenizer, seed: int, edge_padding_samples: int = 0
) -> FeatureSet:
    """Features of every training utterance, plus `augment.copies` augmented copies each; `edge_padding_samples` zeros
    at each end of every one (after augmentation: the zeros an app adds are not recorded)."""
    fe, aug = cfg.frontend, cfg.augment
    rng = np.random.default_rng(seed)
    clean, augmented, labels = [], [], []
    for utt in tqdm(corpus.utterances, desc="features", unit="utt", leave=False):
        ids = np.array(tokenizer.encode(utt.text, where=f"transcript of utterance {utt.id}"), np.int32)
        x = read_wav(corpus.audio_path(utt), fe.sample_rate)
        _check_length(utt.id, len(x) / fe.sample_rate, fe, cfg.train.max_seconds)
        clean.append(log_mel(pad_edges(x, edge_padding_samples), fe))
        labels.append(ids)
        for _ in range(aug.copies):
            augmented.append(
                (log_mel(pad_edges(augment_waveform(x, aug, rng, fe.sample_rate), edge_padding_samples), fe), ids)
            )
    norm = Normalizer.fit(clean, fe.cmn_prior_frames)
    feats = [norm(f) for f in clean] + [norm(f) for f, _ in augmented]
    return FeatureSet(feats, labels + [ids for _, ids in augmented], norm, tokenizer)
