"""WAV reading and writing (stdlib `wave`, PCM only) with one clear error per bad file."""
from __future__ import annotations

import io
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from .errors import DataError
from .fsutil import atomic_write_bytes


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling of float samples from `src_rate` to `dst_rate` Hz."""
    if src_rate == dst_rate:
        return x.astype(np.float32)
    ratio = Fraction(dst_rate, src_rate).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def read_wav(path: Path, sample_rate: int, *, allow_resample: bool = True, mix_stereo: bool = False) -> np.ndarray:
    """Read a PCM WAV file as mono float32 in [-1, 1] at `sample_rate` Hz.

    Raises `DataError` naming the file for: missing/unreadable file, non-WAV content,
    truncated or empty data, non-PCM encodings, more than one channel (unless
    `mix_stereo`), or a different sample rate when `allow_resample` is false.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"audio file {path} does not exist.") from None
    except OSError as exc:
        raise DataError(f"audio file {path} cannot be read ({exc.strerror}).") from None
    try:
        with wave.open(io.BytesIO(raw), "rb") as wf:
            channels, width, rate, n = wf.getnchannels(), wf.getsampwidth(), wf.getframerate(), wf.getnframes()
            data = wf.readframes(n)
    except (wave.Error, EOFError, ValueError) as exc:
        raise DataError(f"audio file {path} is not a valid PCM WAV file ({exc}).") from None
    if width not in (1, 2, 4) or rate <= 0 or channels <= 0:
        raise DataError(f"audio file {path} has an unsupported format ({width * 8}-bit, {rate} Hz, {channels} channels); use 8/16/32-bit PCM.")
    frames = len(data) // (width * channels)
    if frames == 0:
        raise DataError(f"audio file {path} holds no samples.")
    if frames < n:
        raise DataError(f"audio file {path} is truncated: header says {n} samples, file holds {frames}.")
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
    x = np.frombuffer(data[: frames * width * channels], dtype=dtype).astype(np.float32)
    x = (x - 128.0) / 128.0 if width == 1 else x / float(2 ** (8 * width - 1))
    x = x.reshape(frames, channels)
    if channels > 1 and not mix_stereo:
        raise DataError(f"audio file {path} has {channels} channels; the pipeline needs mono audio (mix_stereo, or `--mix-stereo` where a command offers it, averages the channels).")
    x = x.mean(axis=1)
    if rate != sample_rate:
        if not allow_resample:
            raise DataError(f"audio file {path} is {rate} Hz but the model expects {sample_rate} Hz (resampling is off).")
        x = resample(x, rate, sample_rate)
    return x.astype(np.float32)


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """Mono float samples in [-1, 1] → 16-bit PCM WAV bytes."""
    pcm = np.clip(np.round(np.asarray(samples) * 32767.0), -32768, 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(sample_rate)
        wf.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: Path, samples: np.ndarray, sample_rate: int) -> None:
    atomic_write_bytes(Path(path), wav_bytes(samples, sample_rate))
