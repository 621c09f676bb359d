import wave

import numpy as np
import pytest

from pipeline.audio import read_wav, wav_bytes, write_wav
from pipeline.errors import DataError


def test_write_then_read_round_trips(tmp_path):
    x = (np.random.default_rng(0).uniform(-0.5, 0.5, 1000)).astype(np.float32)
    write_wav(tmp_path / "a.wav", x, 8000)
    np.testing.assert_allclose(read_wav(tmp_path / "a.wav", 8000), x, atol=1 / 32767)


def test_other_rate_is_resampled_or_refused(tone_wav):
    x16 = read_wav(tone_wav, 16000)
    assert abs(len(x16) - 8000) <= 2
    with pytest.raises(DataError, match="8000 Hz but the model expects 16000 Hz"):
        read_wav(tone_wav, 16000, allow_resample=False)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_wav(tmp_path / "nope.wav", 8000)


def test_text_file_named_wav(tmp_path):
    p = tmp_path / "fake.wav"
    p.write_text("hello, I am not audio")
    with pytest.raises(DataError, match="is not a WAV file"):
        read_wav(p, 8000)


def test_truncated_wav(tmp_path, tone_wav):
    p = tmp_path / "cut.wav"
    p.write_bytes(tone_wav.read_bytes()[:1000])
    with pytest.raises(DataError, match="truncated"):
        read_wav(p, 8000)


def test_empty_wav(tmp_path):
    p = tmp_path / "empty.wav"
    p.write_bytes(wav_bytes(np.zeros(0), 8000))
    with pytest.raises(DataError, match="no samples"):
        read_wav(p, 8000)


def test_stereo_is_refused_unless_mixing(tmp_path):
    p = tmp_path / "stereo.wav"
    with wave.open(str(p), "wb") as wf:
        wf.setnchannels(2)
        wf.setsampwidth(2)
        wf.setframerate(8000)
        wf.writeframes(np.zeros(200, "<i2").tobytes())
    with pytest.raises(DataError, match="2 channels"):
        read_wav(p, 8000)
    assert read_wav(p, 8000, mix_stereo=True).shape == (100,)


def test_a_folder_named_like_audio(tmp_path):
    p = tmp_path / "dir.wav"
    p.mkdir()
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_wav(p, 8000)
