import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.frontend import FrontendConfig, Normalizer, log_mel, mel_filterbank, pad_edges


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


def _utterances(prior_frames: int = 0):
    rng = np.random.default_rng(2)
    feats = [
        rng.normal(3, 2, size=(int(rng.integers(20, 120)), 40)).astype(np.float32)
        + rng.normal(0, 1.5, size=40).astype(np.float32)
        for _ in range(12)
    ]  # each utterance with its own static offset per bin, as a speaker or a microphone gives
    return feats, Normalizer.fit(feats, prior_frames)


def test_streaming_mean_normalization_looks_only_backwards():
    feats, norm = _utterances(prior_frames=30)
    whole = norm(feats[0])
    for k in (1, 7, 8, 50):  # what a streaming app has computed after k frames
        np.testing.assert_allclose(norm(feats[0][:k]), whole[:k], atol=1e-6)


def test_streaming_mean_normalization_fits_unit_variance_and_removes_a_static_offset():
    feats, norm = _utterances(prior_frames=30)
    assert Normalizer.from_dict(norm.to_dict()) == norm and norm.prior_frames == 30
    np.testing.assert_allclose(np.concatenate([norm(f) for f in feats]).std(0), 1, atol=0.02)
    x = feats[0]
    shifted = norm(x + 2.0)[-20:] - norm(x)[-20:]  # the offset's share left after len(x) frames: P / (P + t + 1)
    t = np.arange(len(x) - 20, len(x))[:, None]
    np.testing.assert_allclose(shifted, 2.0 / np.asarray(norm.std) * 30 / (30 + t + 1), rtol=1e-4)
    global_only = Normalizer.fit(feats)
    np.testing.assert_allclose(
        global_only(x + 2.0) - global_only(x), np.broadcast_to(2.0 / np.asarray(global_only.std), x.shape), rtol=1e-4
    )


@pytest.mark.parametrize(("prior_frames", "edge"), [(0, 0), (25, 0), (25, 800)])
def test_the_manifest_frontend_formula_gives_the_reference_features(prior_frames, edge, tone_wav):
    from dataclasses import replace

    from examples.streaming_decoder import Frontend
    from pipeline.audio import read_wav
    from pipeline.config import load_model_config
    from pipeline.manifest import frontend_section

    cfg = load_model_config("tiny")
    cfg = replace(cfg, frontend=replace(cfg.frontend, cmn_prior_frames=prior_frames))
    x = read_wav(tone_wav, cfg.frontend.sample_rate)
    norm = Normalizer.fit([log_mel(x, cfg.frontend) + 1.0, log_mel(x[::-1].copy(), cfg.frontend)], prior_frames)
    section = frontend_section(cfg, norm, edge, "why")
    assert section["cmn_prior_frames"] == prior_frames and section["edge_padding_samples"] == edge
    client = Frontend(section)  # the example decoder's frontend, from the manifest's section alone
    whole = np.concatenate([client.accept(x[:1000]), client.accept(x[1000:1003]), client.accept(x[1003:], last=True)])
    np.testing.assert_allclose(whole, norm(log_mel(pad_edges(x, edge), cfg.frontend)), atol=1e-4)
