"""Audio reading (libsndfile via `soundfile`) and 16-bit WAV writing, with one clear error per bad file."""

from __future__ import annotations

import io
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

from .errors import DataError, host_error
from .fsutil import atomic_write_bytes


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Polyphase resampling of float samples from `src_rate` to `dst_rate` Hz."""
    if src_rate == dst_rate:
        return x.astype(np.float32)
    ratio = Fraction(dst_rate, src_rate).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


MIN_SAMPLE_RATE = 4000  # Hz: below this a file holds no usable speech band (telephone speech is 8,000 Hz)


def _wav_data_problem(raw: bytes, size: int | None = None) -> str | None:
    """What is wrong with a RIFF/WAVE file's chunk layout (a cut header, fewer sample bytes than its `data` chunk
    declares), or None; `raw` may be the file's first bytes only, `size` its length. libsndfile decodes what a truncated
    file holds without saying so; a corpus file cut short is corrupt, so it is refused here."""
    size = len(raw) if size is None else size
    if size < 12 or raw[8:12] != b"WAVE":
        return f"its RIFF header is cut short or not WAVE ({len(raw)} bytes)"
    pos = 12
    while pos + 8 <= len(raw):
        cid, n = raw[pos : pos + 4], int.from_bytes(raw[pos + 4 : pos + 8], "little")
        if cid == b"data":
            have = size - pos - 8
            if n not in (0, 0xFFFFFFFF) and have < n:  # 0 / all ones: written by a streaming writer, length unknown
                return f"it is truncated: its header says {n:,} bytes of samples, the file holds {have:,}"
            return None
        pos += 8 + n + (n & 1)
    return "its header is cut short (no `data` chunk)"


def _load(path: Path, limit: int | None = None) -> bytes:
    """The file's bytes (its first `limit` bytes), refused with a sentence naming what is wrong: missing, a folder,
    empty, a cut or truncated WAV; a file the machine cannot read is a `HostError`."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            data = fh.read() if limit is None else fh.read(limit)
    except FileNotFoundError:
        raise DataError(f"audio file {path} does not exist.") from None
    except IsADirectoryError:
        raise DataError(f"audio file {path} is a folder, not a file.") from None
    except OSError as exc:
        raise host_error("read the audio file", path, exc) from None
    if size == 0:
        raise DataError(f"audio file {path}: 0 bytes, not a WAV file.")
    problem = _wav_data_problem(data, size) if data[:4] in (b"RIFF", b"RIFX") else None
    if problem:
        raise DataError(f"audio file {path} is not a valid WAV file: {problem}.")
    return data


def _info(path: Path, source: object, head: bytes) -> object:
    """libsndfile's header of `source` (the file, or its bytes), refused if it is not audio, holds no samples or is
    sampled below `MIN_SAMPLE_RATE`."""
    import soundfile

    try:
        info = soundfile.info(source)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if head[:4] not in (b"RIFF", b"RIFX"):
            raise DataError(
                f"audio file {path} is not a WAV file, nor another format libsndfile reads (FLAC, OGG, ...): it "
                f"starts with {head[:8]!r}."
            ) from None
        detail = str(exc).rsplit(": ", 1)[-1].rstrip(".")
        if "SF_INFO" in detail:
            detail = "its header gives a sample rate of 0 Hz or no channels"
        raise DataError(f"audio file {path} cannot be decoded as a WAV file: {detail}.") from None
    if info.samplerate < MIN_SAMPLE_RATE:
        raise DataError(
            f"audio file {path} is sampled at {info.samplerate} Hz; the pipeline reads audio at {MIN_SAMPLE_RATE:,} "
            "Hz or more."
        )
    if info.frames == 0:
        raise DataError(f"audio file {path} holds no samples.")
    return info


def check_audio(path: Path) -> None:
    """The checks of `read_wav` that need only a file's header (missing, empty, not audio, a cut or truncated WAV, no
    samples, too low a sample rate), for checking a whole corpus before any work."""
    path = Path(path)
    _info(path, str(path), _load(path, 1 << 16))


def read_wav(path: Path, sample_rate: int, *, allow_resample: bool = True, mix_stereo: bool = False) -> np.ndarray:
    """Read an audio file (WAV of any integer or float encoding, or any format libsndfile reads, e.g. FLAC) as mono
    float32 in [-1, 1] at `sample_rate` Hz; integer PCM is scaled by 1 / 2^(bits - 1), float kept as it is.

    Raises `DataError` naming the file and what is wrong with it (`_load`, `_info`), more than one channel (unless
    `mix_stereo`: the channels are averaged), or another sample rate when `allow_resample` is false (else polyphase
    resampling, `resample`); a file the machine cannot read is a `HostError`.
    """
    import soundfile

    path = Path(path)
    raw = _load(path)
    _info(path, io.BytesIO(raw), raw)
    try:
        x, rate = soundfile.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise DataError(f"audio file {path} cannot be decoded: {str(exc).rsplit(': ', 1)[-1].rstrip('.')}.") from None
    frames, channels = x.shape
    if frames == 0:
        raise DataError(f"audio file {path} holds no samples.")
    if channels > 1 and not mix_stereo:
        raise DataError(
            f"audio file {path} has {channels} channels; the pipeline needs mono audio (mix_stereo, or `--mix-stereo` "
            "where a command offers it, averages the channels)."
        )
    x = x.mean(axis=1)
    if rate != sample_rate:
        if not allow_resample:
            raise DataError(
                f"audio file {path} is {rate} Hz but the model expects {sample_rate} Hz (resampling is off)."
            )
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
