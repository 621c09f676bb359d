"""Accelerator-aware training: the emulated int8 forward pass against the real int8 .tflite, and the AAT phase."""

import dataclasses

import numpy as np
import pytest

from pipeline._tf import tf
from pipeline.calibrate import CalibrationRecipe, representative_inputs
from pipeline.checkpoint import ModelCheckpoint
from pipeline.config import load_model_config
from pipeline.decode import Transducer
from pipeline.export import calibrated_ranges, convert_all
from pipeline.model import build_training_model, forward, get_params
from pipeline.parity import emulation_agreement, stream_encoder
from pipeline.quant import FLOAT, Emulated, fake_quant, int8_params, quantize_kernel, range_points
from pipeline.runtimes import LiteRTGraph
from pipeline.sparsity import tier_name
from pipeline.train import Trainer
from tests.conftest import FIXTURES

VOCAB = 5
TOKENS = np.array([[0, 1, 2, 3, 1, 4, 2]], np.int32)
CHUNKS = 3


def test_fake_quant_is_tensorflows_fakequant_grid():
    """Our rounding (per-variant ranges, used in training) equals TF's FakeQuant, whose ranges the converter adopts."""
    rng = np.random.default_rng(0)
    x = rng.normal(scale=3, size=(4000,)).astype(np.float32)
    for lo, hi in [(-3.0, 3.0), (-0.7, 5.3), (0.2, 1.0), (-2.5, -0.1), (-1e-3, 1e-3)]:
        ours = fake_quant(tf.constant(x), tf.constant(lo), tf.constant(hi)).numpy()
        theirs = tf.quantization.fake_quant_with_min_max_args(x, min(lo, 0.0), max(hi, 0.0), num_bits=8).numpy()
        np.testing.assert_allclose(ours, theirs, atol=1e-6, err_msg=f"range ({lo}, {hi})")


def test_straight_through_gradient_inside_the_range_only():
    x = tf.constant([-5.0, -0.3, 0.0, 0.7, 5.0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(fake_quant(x, tf.constant(-1.0), tf.constant(1.0)))
    np.testing.assert_array_equal(tape.gradient(y, x).numpy(), [0, 1, 1, 1, 0])
    w = tf.constant(np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32))
    q = quantize_kernel(w).numpy()
    scale = np.abs(w.numpy()).max(axis=0) / 127
    np.testing.assert_allclose(q / scale, np.round(q / scale), atol=1e-3)  # on each output channel's grid
    assert np.all(np.abs(q - w.numpy()) <= scale / 2 + 1e-7)


@pytest.fixture(scope="module")
def parity():
    """A random micro model, ranges observed on random speech-like input, exported int8 with those ranges."""
    cfg = load_model_config(str(FIXTURES / "micro.toml"))
    tf.keras.utils.set_random_seed(3)
    params = get_params(build_training_model(cfg, VOCAB), cfg)
    rng = np.random.default_rng(3)
    c = cfg.chunk_feature_frames
    utts = [rng.normal(size=(c * CHUNKS, cfg.frontend.n_mels)).astype(np.float32) for _ in range(6)]
    batched = {k: tf.constant(v[None]) for k, v in params.items()}
    observe = Emulated(None)
    for u in utts:
        forward(cfg, batched, tf.constant(u[None]), tf.constant(TOKENS), observe)
    ranges = {k: np.array([float(lo[0]), float(hi[0])], np.float32) for k, (lo, hi) in observe.seen.items()}
    floats = {g: LiteRTGraph(b) for g, b in convert_all(cfg, params).items()}
    float_t = Transducer(floats["encoder"], floats["predictor"], floats["joiner"], c, cfg.encoder.stack, VOCAB, 0, 4)
    rep = representative_inputs(float_t, utts, CalibrationRecipe("test", utterances=6))
    int8 = {g: LiteRTGraph(b) for g, b in convert_all(cfg, params, rep, ranges=ranges).items()}
    emulated = Emulated({k: tf.constant(v[None]) for k, v in ranges.items()})
    enc, pred, logits = (
        t.numpy()[0, 0]
        for t in forward(cfg, batched, tf.constant(utts[0][None]), tf.constant(TOKENS), emulated, parts=True)
    )
    return cfg, params, ranges, utts[0], int8, floats, (enc, pred, logits)


def _agreement(a, b, scale):
    return float(np.mean(np.abs(a - b) <= scale * (1 + 1e-4)))


def test_every_range_point_is_observed_and_the_float_quantizer_is_the_identity(parity):
    cfg, params, ranges, feats, *_ = parity
    assert sorted(ranges) == sorted(range_points(cfg.encoder.layers))
    batched = {k: tf.constant(v[None]) for k, v in params.items()}
    a = forward(cfg, batched, tf.constant(feats[None]), tf.constant(TOKENS), FLOAT).numpy()
    b = forward(cfg, batched, tf.constant(feats[None]), tf.constant(TOKENS), Emulated(None)).numpy()
    np.testing.assert_array_equal(a, b)


def test_export_adopts_the_learned_ranges(parity):
    cfg, _, ranges, _, int8, _, _ = parity
    outs = {s.name: s for g in int8.values() for s in g.outputs}
    ins = {s.name: s for g in int8.values() for s in g.inputs}
    for name, point in [
        ("encoder_out", "enc_proj"),
        ("predictor_out", "pred_proj"),
        ("logits", "logits"),
        ("enc0_c_out", "enc0/c"),
    ]:
        scale, zp = int8_params(*ranges[point])
        assert outs[name].scale == pytest.approx(scale, rel=1e-5) and outs[name].zero_point == zp, name
    # a state leaves one chunk and enters the next on the same grid: requantizing it is exact
    for s in ("enc0_h", "enc0_c", "pred_h", "pred_c"):
        assert (ins[s].scale, ins[s].zero_point) == (outs[f"{s}_out"].scale, outs[f"{s}_out"].zero_point)
    assert (ins["encoder_frame"].scale, ins["encoder_frame"].zero_point) == (
        outs["encoder_out"].scale,
        outs["encoder_out"].zero_point,
    )


def test_emulated_forward_matches_the_int8_tflite_within_one_step(parity):
    """Encoder (streamed chunk by chunk with its state), predictor (token by token) and joiner (every frame x token)
    of the int8 artifact in LiteRT against the training-time emulation run over the whole utterance."""
    cfg, params, ranges, feats, int8, floats, (enc_e, _, _) = parity
    rates = emulation_agreement(cfg, params, ranges, int8, [(feats, list(TOKENS[0, 1:]))])
    print("agreement within one int8 step:", rates)
    assert set(rates) == {"encoder_out", "predictor_out", "logits"} and all(r >= 0.99 for r in rates.values()), rates
    # and the check has teeth: the float graphs are not within one step of the emulation
    enc_scale = {s.name: s.scale for s in int8["encoder"].outputs}["encoder_out"]
    assert _agreement(stream_encoder(floats["encoder"], feats, cfg.chunk_feature_frames), enc_e, enc_scale / 4) < 0.9


@pytest.fixture(scope="module")
def omni_ck(random_features, tmp_path_factory):
    cfg = load_model_config(str(FIXTURES / "micro.toml"))
    sp = dataclasses.replace(cfg.sparsity, tiers=(0, 50, 90), begin=0.2, end=0.6, update_every=3)
    cfg = dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, steps=20, checkpoint_every=10, batch_size=4),
        sparsity=sp,
        predictor=dataclasses.replace(cfg.predictor, embed=24, units=24),
        aat=dataclasses.replace(cfg.aat, steps=12),
    )
    result = Trainer(cfg, random_features, tmp_path_factory.mktemp("omni"), "omni").run()
    ck = ModelCheckpoint(
        cfg, result.params, random_features.tokenizer, random_features.normalizer, result.masks, result.method_meta
    )
    return dataclasses.replace(
        ck, ranges={tier_name(t): _calibrate(cfg, ck.tier_params(t), random_features.feats[:4]) for t in ck.tiers}
    )


def _calibrate(cfg, params, utts):
    """What stage_aat does before AAT: each tier's ranges from the converter's calibration (float graphs streamed over
    `utts`).
    """
    floats = {g: LiteRTGraph(b) for g, b in convert_all(cfg, params).items()}
    vocab = params["pred_embed/embeddings"].shape[0]
    t = Transducer(
        floats["encoder"],
        floats["predictor"],
        floats["joiner"],
        cfg.chunk_feature_frames,
        cfg.encoder.stack,
        vocab,
        0,
        4,
    )
    return calibrated_ranges(
        cfg, params, representative_inputs(t, utts, CalibrationRecipe("test", utterances=len(utts)))
    )


def test_calibrated_ranges_are_the_ranges_the_converter_calibrates(parity):
    """AAT starts where post-training quantization is: a point naming one tensor gets the converter's exact int8
    scale and zero point; a point naming several (unrolled steps, a state in and out) gets a range covering each of
    them ("union") or the average of their ranges ("mean", inside the union)."""
    cfg, params, *_ = parity
    rng = np.random.default_rng(5)
    utts = [
        rng.normal(size=(cfg.chunk_feature_frames * CHUNKS, cfg.frontend.n_mels)).astype(np.float32) for _ in range(4)
    ]
    floats = {g: LiteRTGraph(b) for g, b in convert_all(cfg, params).items()}
    t = Transducer(
        floats["encoder"],
        floats["predictor"],
        floats["joiner"],
        cfg.chunk_feature_frames,
        cfg.encoder.stack,
        VOCAB,
        0,
        4,
    )
    rep = representative_inputs(t, utts, CalibrationRecipe("test", utterances=4))
    union = calibrated_ranges(cfg, params, rep)
    assert sorted(union) == sorted(range_points(cfg.encoder.layers)) and all(lo < hi for lo, hi in union.values())
    ptq = {g: LiteRTGraph(b) for g, b in convert_all(cfg, params, rep).items()}
    specs = {
        (s.name, io): s for g in ptq.values() for io, group in (("in", g.inputs), ("out", g.outputs)) for s in group
    }
    for name, io, point in [("logits", "out", "logits"), ("features", "in", "features")]:
        scale, zp = int8_params(*union[point])
        assert specs[(name, io)].scale == pytest.approx(scale, rel=1e-5) and specs[(name, io)].zero_point == zp, name
    for name, point in [
        ("enc0_h", "enc0/h"),
        ("enc0_c", "enc0/c"),
        ("pred_h", "pred_lstm/h"),
        ("pred_c", "pred_lstm/c"),
    ]:
        tensors = []
        for n, io in ((name, "in"), (f"{name}_out", "out")):
            s = specs[(n, io)]
            tensors.append(
                ((-128 - s.zero_point) * s.scale, (127 - s.zero_point) * s.scale, s.scale)
            )  # the tensor's int8 range
        for lo, hi, step in tensors:
            assert union[point][0] <= lo + step and union[point][1] >= hi - step, (name, union[point], (lo, hi))


def test_aat_starts_from_the_calibrated_ranges_and_keeps_them(omni_ck, random_features, tmp_path):
    cfg = omni_ck.config
    frozen = dataclasses.replace(cfg, aat=dataclasses.replace(cfg.aat, steps=2))
    run = Trainer(frozen, random_features, tmp_path / "c", "aat", init=omni_ck).run()
    for t, r in omni_ck.ranges.items():
        for p, v in r.items():
            np.testing.assert_array_equal(run.ranges[t][p], v)
    assert run.method_meta["aat"]["ranges"] == "calibrated, frozen"
    from pipeline.errors import InternalError

    with pytest.raises(InternalError, match="calibrated ranges of every tier"):
        Trainer(
            frozen,
            random_features,
            tmp_path / "x",
            "aat",
            init=dataclasses.replace(omni_ck, ranges={"tier00": omni_ck.ranges["tier00"]}),
        )


def test_aat_fine_tunes_every_tier_keeps_masks_and_round_trips_ranges(omni_ck, random_features, tmp_path):
    cfg = omni_ck.config
    result = Trainer(cfg, random_features, tmp_path / "w", "aat", init=omni_ck).run()
    assert result.method_meta["method"] == "omni" and result.method_meta["aat"]["steps"] == 12
    assert set(result.ranges) == {tier_name(t) for t in (0, 50, 90)}
    for t in (0, 50, 90):
        masks = result.masks[tier_name(t)]
        for k, m in masks.items():
            np.testing.assert_array_equal(m, omni_ck.masks[tier_name(t)][k])  # masks stay as trained
        tier_params = {k: v * masks[k] if k in masks else v for k, v in result.params.items()}
        assert all(np.all(tier_params[k][~m] == 0) for k, m in masks.items())
        r = result.ranges[tier_name(t)]
        assert set(r) == set(range_points(cfg.encoder.layers)) and all(
            np.isfinite(v).all() and v[0] < v[1] for v in r.values()
        )
    # tiers see different activations, so they keep different ranges; and the weights moved
    assert not np.allclose(result.ranges["tier00"]["enc0/h"], result.ranges["tier90"]["enc0/h"])
    assert any(not np.allclose(result.params[k], omni_ck.params[k]) for k in result.params if cfg.sparsity.prunes(k))
    ck = ModelCheckpoint(
        cfg, result.params, omni_ck.tokenizer, omni_ck.normalizer, result.masks, result.method_meta, result.ranges
    )
    ck.save(tmp_path / "ck")
    back = ModelCheckpoint.load(tmp_path / "ck", expect=cfg)
    for t, r in result.ranges.items():
        for k, v in r.items():
            np.testing.assert_array_equal(back.ranges[t][k], v)
    assert back.tier_ranges(90) is not None and back.meta["aat"]["steps"] == 12


def test_aat_resume_restores_ranges(omni_ck, random_features, tmp_path):
    cfg = omni_ck.config
    straight = Trainer(cfg, random_features, tmp_path / "a", "aat", init=omni_ck).run()
    Trainer(cfg, random_features, tmp_path / "b", "aat", init=omni_ck).run(until=10)
    resumed = Trainer(cfg, random_features, tmp_path / "b", "aat", init=omni_ck).run(resume=True)
    for t, r in straight.ranges.items():
        for k, v in r.items():
            np.testing.assert_allclose(resumed.ranges[t][k], v, rtol=1e-4, atol=1e-5)


def test_corrupt_ranges_in_a_checkpoint_are_refused(omni_ck, tmp_path):
    from pipeline.errors import ArtifactError

    bad = {tier_name(50): {p: np.array([1.0, -1.0], np.float32) for p in range_points(omni_ck.config.encoder.layers)}}
    dataclasses.replace(omni_ck, ranges=bad).save(tmp_path / "ck")
    with pytest.raises(ArtifactError, match="not a finite"):
        ModelCheckpoint.load(tmp_path / "ck")


def test_aat_fine_tunes_the_sparsest_and_a_sampled_tier_or_the_configured_number(omni_ck, random_features, tmp_path):
    cfg = omni_ck.config
    assert cfg.aat.tiers_per_step == 2  # the sparsest tier every step plus one sampled tier, as omni trains
    default = Trainer(cfg, random_features, tmp_path / "a", "aat", init=omni_ck)
    picked = [default.method.before_step(step, cfg.train.batch_size) for step in range(12)]
    assert all(
        len(sel) == 2 and sel[-1] == 2 and idx.shape == (2, round(cfg.aat.tier_batch * cfg.train.batch_size))
        for sel, idx in picked
    )
    assert {int(sel[0]) for sel, _ in picked} == {0, 1}
    three = Trainer(
        dataclasses.replace(cfg, aat=dataclasses.replace(cfg.aat, tiers_per_step=3)),
        random_features,
        tmp_path / "b",
        "aat",
        init=omni_ck,
    )
    for step in range(5):  # three tiers held, three per step: all of them
        assert three.method.before_step(step, cfg.train.batch_size)[0].tolist() == [0, 1, 2]


def test_an_aat_recipe_file_replaces_the_configs_aat_section(omni_ck, tmp_path):
    from pipeline.config import load_aat_config
    from pipeline.errors import ArtifactError, ConfigError

    good = tmp_path / "low_lr.toml"
    good.write_text("[aat]\nlearning_rate = 2e-5\ntiers_per_step = 1\ntier_batch = 1.0\n")
    recipe = load_aat_config(good)
    assert (recipe.learning_rate, recipe.tiers_per_step, recipe.tier_batch, recipe.steps) == (
        2e-5,
        1,
        1.0,
        400,
    )  # unset: defaults
    for text, message in [
        ("[aat]\nlearning_rate = 2.0\n", "learning_rate"),
        ("[aat]\nlr = 1e-4\n", "lr"),
        ("[aat]\ndistill = 1.5\n", "distill"),
        ('[aat]\ngate = "maybe"\n', "gate"),
        ('[aat]\ngate_split = "train"\n', "gate_split"),
        ("[train]\nsteps = 3\n", "exactly one \\[aat\\] table, not train"),
        ("[aat\n", "not valid TOML"),
    ]:
        (tmp_path / "bad.toml").write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_aat_config(tmp_path / "bad.toml")
    # the fine-tuning stage accepts a checkpoint trained with another [aat] section, and nothing else that differs
    omni_ck.save(tmp_path / "ck")
    cfg = omni_ck.config
    tuned = dataclasses.replace(cfg, aat=recipe)
    with pytest.raises(ArtifactError, match="different config"):
        ModelCheckpoint.load(tmp_path / "ck", expect=tuned)
    assert ModelCheckpoint.load(tmp_path / "ck", expect=tuned, ignore=("aat",)).config == cfg
    other = dataclasses.replace(tuned, train=dataclasses.replace(cfg.train, seed=cfg.train.seed + 1))
    with pytest.raises(ArtifactError, match="different config"):
        ModelCheckpoint.load(tmp_path / "ck", expect=other, ignore=("aat",))


def test_lattice_kl_sums_valid_nodes_of_the_teachers_kl_and_only_the_student_gets_gradients():
    from pipeline.rnnt_loss import lattice_kl

    rng = np.random.default_rng(3)
    teacher, student = (rng.normal(size=(3, 6, 4, 5)).astype(np.float32) for _ in range(2))
    frames, lengths = np.array([6, 2, 4], np.int32), np.array([3, 0, 2], np.int32)
    logp = lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))  # noqa: E731
    kl = (np.exp(logp(teacher)) * (logp(teacher) - logp(student))).sum(-1)
    want = np.mean([kl[b, : frames[b], : lengths[b] + 1].sum() for b in range(3)])
    t, s = tf.constant(teacher), tf.Variable(student)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(t)
        got = lattice_kl(t, s, tf.constant(frames), tf.constant(lengths))
    assert float(got) == pytest.approx(want, rel=1e-5)
    assert tape.gradient(got, t) is None and np.abs(tape.gradient(got, s).numpy()).sum() > 0
    assert float(lattice_kl(t, tf.constant(teacher), tf.constant(frames), tf.constant(lengths))) == pytest.approx(
        0.0, abs=1e-6
    )


def test_distillation_pulls_toward_the_checkpoint_itself(omni_ck, random_features, tmp_path):
    """With distill = 1 the only target is the checkpoint's own float output: the float control starts at its target
    (loss 0 up to rounding; Adam still turns rounding-sized gradients into lr-sized steps, so the weights drift by
    ~lr), while the int8-emulated model starts away from it and is trained toward it."""
    cfg = omni_ck.config
    only = dataclasses.replace(cfg, aat=dataclasses.replace(cfg.aat, steps=3, distill=1.0))
    control = Trainer(only, random_features, tmp_path / "f", "finetune", init=omni_ck).run()
    aat = Trainer(only, random_features, tmp_path / "a", "aat", init=omni_ck).run()
    print("final loss: float control", control.final_loss, "AAT", aat.final_loss)
    assert abs(control.final_loss) < 1e-3 and aat.final_loss > 100 * max(abs(control.final_loss), 1e-6)
    assert aat.method_meta["aat"]["distill"] == 1.0 and control.method_meta["float_finetune"]["distill"] == 1.0
    assert any(not np.allclose(aat.params[k], omni_ck.params[k]) for k in omni_ck.params if cfg.sparsity.prunes(k))
