import dataclasses

import numpy as np
import pytest

from pipeline.config import load_model_config
from pipeline.train import Batcher, Trainer
from tests.conftest import FIXTURES


@pytest.fixture(scope="module")
def data(random_features):
    return random_features


def _with_train(cfg, **kw):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **kw))


def _cfg(steps=12, every=6):
    return _with_train(
        load_model_config(str(FIXTURES / "micro.toml")), steps=steps, checkpoint_every=every, batch_size=4
    )


def test_batches_are_a_function_of_seed_and_step(data):
    a, b = Batcher(data, 4, 3, seed=5), Batcher(data, 4, 3, seed=5)
    for step in (0, 7, 13):
        x, y = a.batch(step), b.batch(step)
        assert np.array_equal(x.feats, y.feats) and np.array_equal(x.labels, y.labels)
        assert x.feats.shape[1] % 3 == 0 and np.all(x.pred_in[:, 0] == 0)


def test_loss_falls(data, tmp_path):
    cfg = _cfg(steps=40, every=40)
    t = Trainer(cfg, data, tmp_path)
    first = t._train_step(*_args(t.batcher.batch(0), 0)).numpy()
    result = t.run()
    assert result.final_loss < first


def _args(b, step):
    from pipeline._tf import tf

    return b.feats, b.pred_in, b.labels, b.frames, b.label_lengths, tf.constant(step, tf.int64)


def test_resumed_run_ends_where_an_uninterrupted_run_ends(data, tmp_path):
    straight = Trainer(_cfg(), data, tmp_path / "a").run()
    Trainer(_cfg(), data, tmp_path / "b", steps=6).run()  # stops at the step-6 checkpoint
    resumed_trainer = Trainer(_cfg(), data, tmp_path / "b")
    assert resumed_trainer.restore() == 6
    resumed = Trainer(_cfg(), data, tmp_path / "b").run(resume=True)
    for k in straight.params:
        np.testing.assert_allclose(resumed.params[k], straight.params[k], atol=1e-5, err_msg=k)
    # the smoothed loss it records is the one the uninterrupted run records, not one restarted at the resume step
    assert resumed.final_loss == pytest.approx(straight.final_loss, rel=1e-5)


def test_channel_and_warp_augmentation_are_per_utterance_constant_over_time_and_seeded():
    from pipeline._tf import tf
    from pipeline.config import AugmentConfig
    from pipeline.train import spec_augment

    x = tf.constant(np.tile(np.linspace(-1, 1, 40, dtype=np.float32), (3, 7, 1)))
    off = AugmentConfig(time_masks=0, freq_masks=0)
    np.testing.assert_array_equal(spec_augment(x, off, tf.constant(5, tf.int64)).numpy(), x.numpy())
    on = AugmentConfig(time_masks=0, freq_masks=0, freq_warp=0.1, channel_sigma=0.3)
    y = spec_augment(x, on, tf.constant(5, tf.int64)).numpy()
    np.testing.assert_allclose(y, y[:, :1, :].repeat(7, axis=1), atol=1e-6)  # one response per utterance, all frames
    assert not np.allclose(y[0], y[1]) and not np.allclose(y, x.numpy())
    np.testing.assert_array_equal(y, spec_augment(x, on, tf.constant(5, tf.int64)).numpy())


def test_reverberation_keeps_level_and_length_and_decays_by_60_db_in_rt60():
    from pipeline.features import reverberate

    rng = np.random.default_rng(3)
    x = np.zeros(8000, np.float32)
    x[100] = 1.0
    y = reverberate(x, 0.3, 8000, rng)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-4)
    assert (
        np.abs(y[:100]).max() < 1e-6 < abs(y[100])
    )  # causal: nothing before the impulse (FFT rounding aside), the direct sound at it
    energy = y**2
    assert energy[100 + 2400 + 80 :].sum() < 1e-5 * energy.sum() < energy[100 + 80 : 100 + 800].sum()  # gone after rt60


def test_reverberation_draws_nothing_when_off_so_existing_recipes_keep_their_copies():
    from pipeline.config import AugmentConfig
    from pipeline.features import augment_waveform

    x = np.random.default_rng(0).standard_normal(4000).astype(np.float32) * 0.1
    rng = np.random.default_rng(9)
    plain = AugmentConfig(trim_prob=0.0, noise_slope=(0.0, 0.0))  # white noise, no cut: the draws before either existed
    for _ in range(4):
        augment_waveform(x, plain, rng, 8000)
    # the generator's next draw after four such copies, as the code before `reverb_prob` existed left it
    assert rng.random() == 0.17109409213349913
    on = augment_waveform(
        x, AugmentConfig(reverb_prob=1.0, noise_prob=0.0, speed=(1.0,), gain_db=(0.0, 0.0)), rng, 8000
    )
    assert on.shape == x.shape and not np.allclose(on, x)
    with pytest.raises(Exception, match="rt60_s"):
        AugmentConfig(rt60_s=(0.5, 0.1))


def test_requantized_copies_take_few_levels_of_one_step():
    from pipeline.config import AugmentConfig
    from pipeline.features import augment_waveform

    x = np.sin(np.arange(4000) * 0.05).astype(np.float32) * 0.3
    clean = dict(trim_prob=0.0, noise_prob=0.0, speed=(1.0,), gain_db=(0.0, 0.0))
    on = augment_waveform(x, AugmentConfig(quantize_prob=1.0, **clean), np.random.default_rng(1), 8000)
    levels = np.unique(on)
    assert 2 * 16 <= len(levels) <= 2 * 128 + 1  # the peak spans 16..128 steps each side of zero
    assert np.allclose(np.diff(levels), np.diff(levels)[0], rtol=1e-3)  # one step size
    assert 0 < np.max(np.abs(on - x)) <= np.max(np.abs(x)) / 16 / 2 + 1e-6  # at most half a step from the input
    # off (the default), it draws nothing: test_reverberation_draws_nothing_when_off_... pins the generator's state


def test_trimmed_copies_start_or_stop_with_the_speech():
    from pipeline.config import AugmentConfig
    from pipeline.features import augment_waveform

    quiet = lambda seed: np.random.default_rng(seed).standard_normal(2000).astype(np.float32) * 1e-3  # noqa: E731
    speech = np.random.default_rng(1).standard_normal(4000).astype(np.float32) * 0.1
    x = np.concatenate([quiet(0), speech, quiet(2)])
    rng, aug = np.random.default_rng(3), AugmentConfig(trim_prob=1.0, speed=(1.0,), gain_db=(0.0, 0.0), noise_prob=0.0)
    lengths = {len(augment_waveform(x, aug, rng, 8000)) for _ in range(30)}
    assert lengths == {6000, 4000}  # one edge cut (the lead or the tail) or both, never the speech
    np.testing.assert_array_equal(augment_waveform(speech, aug, rng, 8000), speech)


def test_coloured_noise_has_the_slope_asked_for_and_white_keeps_its_draws():
    from pipeline.config import AugmentConfig
    from pipeline.features import augment_waveform, coloured_noise

    def octave_ratio(y):  # power per Hz at 200-400 Hz over 1600-3200 Hz (8 kHz): 8^slope
        p = np.abs(np.fft.rfft(y)) ** 2
        f = np.fft.rfftfreq(len(y), 1 / 8000)
        return p[(f >= 200) & (f < 400)].mean() / p[(f >= 1600) & (f < 3200)].mean()

    rng = np.random.default_rng(0)
    for slope in (0.0, 1.0, 2.0):
        y = coloured_noise(80000, slope, rng)
        assert abs(np.std(y) - 1) < 1e-6
        assert abs(np.log(octave_ratio(y)) / np.log(8) - slope) < 0.1
    x = np.random.default_rng(1).standard_normal(8000).astype(np.float32) * 0.1
    aug = dict(speed=(1.0,), gain_db=(0.0, 0.0), noise_prob=1.0, noise_snr_db=(0.0, 0.0), trim_prob=0.0)
    white = augment_waveform(x, AugmentConfig(**aug, noise_slope=(0.0, 0.0)), np.random.default_rng(5), 8000)
    rng = np.random.default_rng(
        5
    )  # white noise draws what it drew before the slope existed: speed, gain, coin, SNR, noise
    rng.choice((1.0,)), rng.uniform(0.0, 0.0), rng.random(), rng.uniform(0.0, 0.0)
    expected = x + rng.standard_normal(len(x)).astype(np.float32) * np.sqrt(np.mean(x**2) + 1e-10)
    np.testing.assert_allclose(white, np.clip(expected, -1, 1), atol=1e-6)
    brown = augment_waveform(x, AugmentConfig(**aug, noise_slope=(2.0, 2.0)), np.random.default_rng(5), 8000)
    assert octave_ratio(brown - x) > 8**1.8 and abs(np.mean((brown - x) ** 2) / np.mean(x**2) - 1) < 0.05  # 0 dB SNR
    with pytest.raises(Exception, match="noise_slope"):
        AugmentConfig(noise_slope=(2.0, 1.0))


def test_pad_edges_gives_every_training_copy_the_decode_contracts_zeros_after_augmentation(tmp_path):
    from pipeline.audio import write_wav
    from pipeline.corpus import Utterance, read_manifest, write_manifest
    from pipeline.features import compute_training_features
    from pipeline.tokenizer import CharTokenizer

    cfg = load_model_config(str(FIXTURES / "micro.toml"))
    x = np.random.default_rng(0).standard_normal(6000).astype(np.float32) * 0.1
    write_wav(tmp_path / "a.wav", x, cfg.frontend.sample_rate)
    write_manifest(tmp_path / "m.jsonl", [Utterance("a", "a.wav", 0.75, "one", "s")])
    corpus, tok = read_manifest(tmp_path / "m.jsonl"), CharTokenizer(tuple("one "))
    plain, padded = (compute_training_features(corpus, cfg, tok, 0, edge) for edge in (0, 800))
    hop = cfg.frontend.hop_samples
    assert (
        len(plain.feats) == len(padded.feats) == 1 + cfg.augment.copies
    )  # the same copies (the same draws), each padded
    for a, b in zip(plain.feats, padded.feats):
        assert len(b) == len(a) + 2 * 800 // hop
    assert padded.normalizer.mean[0] < plain.normalizer.mean[0]  # the zeros are in the statistics: the mean is lower
