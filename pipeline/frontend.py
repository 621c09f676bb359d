"""Log-mel frontend: the NumPy reference implementation used at training and verification.

The same function is specified field by field in the manifest (including the mel
filterbank matrix itself), so an app team can reimplement it exactly:

    x      = [0]*E + pcm_int16 / 32768 + [0]*E       (mono, `sample_rate` Hz; E: the manifest's edge_padding_samples,
    pad_edges)
    frame  = x[i*hop : i*hop + win]                   (no padding, no centering)
    spec   = |rfft(frame * hann_periodic(win), n_fft)|^2
    mel    = filterbank @ spec                        (n_mels x (n_fft/2+1), HTK mel, triangles)
    logmel = log(max(mel, log_floor))
    feat   = (logmel - mean) / std                    (per mel bin, from the training set)

With `cmn_prior_frames` = P > 0 the mean is also the utterance's own, as it streams in (cepstral
mean normalization with the training mean as a prior worth P frames; frames t = 0, 1, ... of the utterance):

    m_t    = (P * mean + logmel_0 + ... + logmel_t) / (P + t + 1)
    feat_t = (logmel_t - m_t) / std                   (std: of logmel_t - m_t over the training set)

Frames are computed independently and the running mean looks only backwards, so streaming (chunk
by chunk) and whole-utterance features are identical.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from .tomlconf import check


@dataclass(frozen=True)
class FrontendConfig:
    sample_rate: int = 8000
    win_ms: float = 25.0
    hop_ms: float = 10.0
    n_fft: int = 256
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 4000.0
    log_floor: float = 1e-6
    # per-utterance streaming mean normalization: 0 = off (the training set's mean only); P > 0 = subtract the running
    # mean of the utterance so far, with the training mean counted as P frames (see the module docstring); 100 frames
    # = 1 s, which makes the model robust to input gain and microphone colour
    cmn_prior_frames: int = 100

    def __post_init__(self) -> None:
        check(self.sample_rate >= 4000, f"field `sample_rate` must be >= 4000 Hz, got {self.sample_rate}.")
        check(self.win_samples <= self.n_fft, f"window of {self.win_samples} samples exceeds n_fft={self.n_fft}.")
        check(self.hop_samples >= 1, f"field `hop_ms` gives an empty hop ({self.hop_ms} ms).")
        check(
            0 <= self.fmin < self.fmax <= self.sample_rate / 2,
            f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin}, fmax={self.fmax}.",
        )
        check(
            1 <= self.n_mels <= self.n_fft // 2, f"field `n_mels` must be in 1..{self.n_fft // 2}, got {self.n_mels}."
        )
        check(self.log_floor > 0, f"field `log_floor` must be > 0, got {self.log_floor}.")
        check(
            0 <= self.cmn_prior_frames <= 100_000,
            f"field `cmn_prior_frames` must be in 0..100000, got {self.cmn_prior_frames}.",
        )

    @property
    def win_samples(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    @property
    def hop_samples(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for `num_samples` samples (0 if shorter than one window)."""
        if num_samples < self.win_samples:
            return 0
        return 1 + (num_samples - self.win_samples) // self.hop_samples


def hann_periodic(n: int) -> np.ndarray:
    """Periodic Hann window of length n, float64."""
    return 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: FrontendConfig) -> np.ndarray:
    """HTK-mel triangular filters, shape (n_mels, n_fft//2 + 1), float64, peak 1."""
    bins_hz = np.arange(cfg.n_fft // 2 + 1) * cfg.sample_rate / cfg.n_fft
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.float64(cfg.fmin)), _hz_to_mel(np.float64(cfg.fmax)), cfg.n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins_hz[None, :] - lo) / (mid - lo)
    down = (hi - bins_hz[None, :]) / (hi - mid)
    fb = np.maximum(0.0, np.minimum(up, down))
    fb.setflags(write=False)
    return fb


# the decode contract's zeros at each end of the project's own corpora (stages.edge_padding_samples)
EDGE_PADDING_MS = 100


def edge_padding_default(fe: FrontendConfig) -> int:
    """EDGE_PADDING_MS in samples at `fe`'s rate."""
    return fe.sample_rate * EDGE_PADDING_MS // 1000


def pad_edges(samples: np.ndarray, n: int) -> np.ndarray:
    """`samples` with `n` zeros before and after: the manifest's `frontend.edge_padding_samples`, the first step of
    decoding (a model trained on utterances with quiet at each end loses the first and last words of audio that starts
    or stops with speech)."""
    if n <= 0:
        return samples
    pad = np.zeros(n, samples.dtype)
    return np.concatenate([pad, samples, pad])


def log_mel(samples: np.ndarray, cfg: FrontendConfig) -> np.ndarray:
    """Log-mel features of float samples in [-1, 1].

    samples: (num_samples,) float; returns (num_frames, n_mels) float32, not normalized.
    """
    x = np.asarray(samples, dtype=np.float64)
    n = cfg.num_frames(len(x))
    if n == 0:
        return np.zeros((0, cfg.n_mels), np.float32)
    idx = np.arange(cfg.win_samples)[None, :] + cfg.hop_samples * np.arange(n)[:, None]
    frames = x[idx] * hann_periodic(cfg.win_samples)[None, :]
    spec = np.abs(np.fft.rfft(frames, n=cfg.n_fft, axis=1)) ** 2
    mel = spec @ mel_filterbank(cfg).T
    return np.log(np.maximum(mel, cfg.log_floor)).astype(np.float32)


@dataclass(frozen=True)
class Normalizer:
    """Per-mel-bin mean and standard deviation from the training features, and the streaming mean's prior weight in
    frames (0: no per-utterance mean; see the module docstring)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    prior_frames: int = 0

    @classmethod
    def fit(cls, feats: Iterable[np.ndarray] | Callable[[], Iterable[np.ndarray]], prior_frames: int = 0) -> Normalizer:
        """Statistics of un-normalized log-mel utterances `feats` ((frames, n_mels) each): the mean, then the standard
        deviation of what is left after subtracting it (the streaming mean, with `prior_frames`), so features come out
        with unit variance per bin.

        `feats` may be a function that returns a fresh iterable of them (read from disk, say): it is then read three
        times and never held in memory. Either way the result is, to the bit, NumPy's mean and std over the
        concatenation of every utterance (sums accumulate row after row, in float64, as NumPy's axis-0 sums do)."""
        again = feats if callable(feats) else (lambda: feats)

        def rows() -> Iterator[np.ndarray]:
            return (np.asarray(f, np.float64) for f in again() if len(f))

        frames, total = 0, None
        for f in rows():
            frames, total = frames + len(f), _accumulate(total, f)
        if total is None:
            raise ValueError("no frames to fit the normalization on")
        mean = total / frames

        def centred() -> Iterator[np.ndarray]:
            return (_minus_running_mean(f, mean, prior_frames) if prior_frames else f for f in rows())

        total = None
        for c in centred():
            total = _accumulate(total, c)
        c_mean = total / frames
        total = None
        for c in centred():
            total = _accumulate(total, (c - c_mean) ** 2)
        std = np.sqrt(total / frames)
        return cls(tuple(map(float, mean)), tuple(map(float, np.maximum(std, 1e-3))), prior_frames)

    def __call__(self, feats: np.ndarray) -> np.ndarray:
        """(frames, n_mels) un-normalized log-mel of one utterance from its first frame → normalized float32."""
        if not self.prior_frames:  # in float32, as before the running mean existed (the same features to the bit)
            return ((feats - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)).astype(np.float32)
        centred = _minus_running_mean(
            np.asarray(feats, np.float64), np.asarray(self.mean, np.float64), self.prior_frames
        )
        return (centred / np.asarray(self.std, np.float64)).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": list(self.mean), "std": list(self.std), "prior_frames": self.prior_frames}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Normalizer:
        return cls(tuple(map(float, d["mean"])), tuple(map(float, d["std"])), int(d.get("prior_frames", 0)))


def _accumulate(total: np.ndarray | None, rows: np.ndarray) -> np.ndarray:
    """`total` plus the rows of `rows` added one after another (NumPy's order for an axis-0 sum), so a sum over many
    arrays equals the sum over their concatenation to the bit."""
    return np.add.reduce(rows if total is None else np.concatenate([total[None], rows]), axis=0)


def _minus_running_mean(x: np.ndarray, mean: np.ndarray, prior_frames: int) -> np.ndarray:
    """x - m_t per frame t of one utterance (module docstring), `prior_frames` > 0. float64 in and out."""
    t = np.arange(1, len(x) + 1, dtype=np.float64)[:, None]
    return x - (prior_frames * mean + np.cumsum(x, axis=0)) / (prior_frames + t)
