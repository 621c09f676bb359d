import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.frontend import FrontendConfig, Normalizer, log_mel, mel_filterbank


def test_filterbank_triangles_cover_the_band():
    fe = FrontendConfig()
    fb = mel_filterbank(fe)
    assert fb.shape == (fe.n_mels, fe.n_fft // 2 + 1)
    assert np.all(fb >= 0) and np.all(fb.max(axis=1) > 0.5)
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0)


def test_frames_are_independent_so_streaming_equals_whole_utterance():
    fe = FrontendConfig()
    x = np.random.default_rng(0).normal(size=8000).astype(np.float32) * 0.1
    whole = log_mel(x, fe)
    assert whole.shape == (fe.num_frames(8000), fe.n_mels)
    # frames 10..19 from a slice that starts at frame 10's first sample
    part = log_mel(x[10 * fe.hop_samples : 19 * fe.hop_samples + fe.win_samples], fe)
    np.testing.assert_allclose(part, whole[10:20], rtol=1e-5, atol=1e-5)


def test_tone_energy_lands_in_the_right_mel_bin():
    fe = FrontendConfig()
    t = np.arange(4000) / fe.sample_rate
    feats = log_mel(np.sin(2 * np.pi * 1000 * t), fe)
    fb = mel_filterbank(fe)
    want = np.argmax(fb[:, int(round(1000 * fe.n_fft / fe.sample_rate))])
    assert abs(int(np.argmax(feats.mean(0))) - int(want)) <= 1


def test_short_input_gives_no_frames():
    assert log_mel(np.zeros(10), FrontendConfig()).shape == (0, 40)


def test_normalizer_round_trip_and_unit_statistics():
    rng = np.random.default_rng(1)
    feats = [rng.normal(3, 2, size=(50, 40)).astype(np.float32) for _ in range(4)]
    norm = Normalizer.fit(feats)
    assert Normalizer.from_dict(norm.to_dict()) == norm
    z = np.concatenate([norm(f) for f in feats])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)


def test_bad_frontend_values_are_refused():
    with pytest.raises(ConfigError, match="fmax"):
        FrontendConfig(fmax=9000)
    with pytest.raises(ConfigError, match="n_fft"):
        FrontendConfig(win_ms=50)
