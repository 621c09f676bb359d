"""Sparsity tiers: nested masks, exact tier sparsity, pruned weights stay zero, methods train."""

import dataclasses

import numpy as np
import pytest

from pipeline._tf import tf
from pipeline.checkpoint import ModelCheckpoint
from pipeline.config import load_model_config
from pipeline.errors import ConfigError
from pipeline.methods import make_method
from pipeline.sparsity import SparsityConfig, block_sparsity, nested_masks, tier_masks, tier_name
from pipeline.train import Trainer
from tests.conftest import FIXTURES

TIERS = (0, 50, 80, 90)


@pytest.fixture(scope="module")
def data(random_features):
    return random_features


def _cfg(steps=20, **sparsity):
    cfg = load_model_config(str(FIXTURES / "micro.toml"))
    sp = dataclasses.replace(cfg.sparsity, tiers=TIERS, begin=0.2, end=0.6, update_every=3, **sparsity)
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(cfg.train, steps=steps, checkpoint_every=10, batch_size=4),
        sparsity=sp,
        predictor=dataclasses.replace(cfg.predictor, embed=24, units=24),
    )  # every kernel spans several (16, 1) blocks


@pytest.mark.parametrize("block", [(1, 1), (16, 1), (4, 2)])
def test_masks_are_nested_and_exact(block):
    w = np.random.default_rng(1).normal(size=(120, 512)).astype(np.float32)
    masks = nested_masks(w, {t: t / 100 for t in TIERS}, block)
    for lo, hi in zip(TIERS, TIERS[1:]):
        assert not np.any(masks[hi] & ~masks[lo]), f"tier {hi} keeps a weight tier {lo} pruned"
    for t in TIERS:
        assert abs((1 - masks[t].mean()) - t / 100) <= 0.005
        if block != (1, 1):  # whole blocks are pruned: every block is all kept or all pruned
            bi, bo = block
            m = np.pad(masks[t], [(0, -120 % bi), (0, -512 % bo)], mode="edge")
            b = m.reshape(m.shape[0] // bi, bi, m.shape[1] // bo, bo)
            assert np.all(b.all(axis=(1, 3)) | ~b.any(axis=(1, 3)))


def test_unknown_tier_and_bad_method_are_config_errors():
    cfg = _cfg()
    with pytest.raises(ConfigError, match="unknown sparsity tier 60"):
        make_method("tfmot", cfg, 5, 10, 60)
    with pytest.raises(ConfigError, match="unknown training method"):
        make_method("magic", cfg, 5, 10, None)
    with pytest.raises(ConfigError, match="pass --tier"):
        make_method("csp", cfg, 5, 10, None)
    with pytest.raises(ConfigError, match="spans only one block"):
        make_method("tfmot", dataclasses.replace(cfg, predictor=dataclasses.replace(cfg.predictor, embed=8)), 5, 10, 80)
    with pytest.raises(ConfigError, match="strictly increasing"):
        SparsityConfig(tiers=(50, 0))


def _check_tier(params, masks, tier, sp=SparsityConfig()):
    """Prunable weights have the tier's sparsity (+-0.5%) and are zero wherever the mask prunes."""
    pruned = {k: v * masks[k] for k, v in params.items() if k in masks}
    total = sum(v.size for v in pruned.values())
    zeros = sum(int(np.sum(~masks[k])) for k in pruned)
    assert abs(zeros / total - tier / 100) <= 0.005, f"tier {tier}: sparsity {zeros / total:.4f}"
    assert set(masks) == {k for k in params if sp.prunes(k)}


def test_omni_trains_all_tiers_with_nested_masks_and_round_trips(data, tmp_path):
    cfg = _cfg()
    result = Trainer(cfg, data, tmp_path / "w", "omni").run()
    assert set(result.masks) == {tier_name(t) for t in TIERS}
    for lo, hi in zip(TIERS, TIERS[1:]):
        for k in result.masks[tier_name(lo)]:
            assert not np.any(result.masks[tier_name(hi)][k] & ~result.masks[tier_name(lo)][k])
    for t in TIERS:
        _check_tier(result.params, result.masks[tier_name(t)], t)
    ck = ModelCheckpoint(cfg, result.params, data.tokenizer, data.normalizer, result.masks, {"method": "omni"})
    ck.save(tmp_path / "ck")
    back = ModelCheckpoint.load(tmp_path / "ck", expect=cfg)
    assert back.meta["method"] == "omni"
    for t in TIERS:
        for k, m in result.masks[tier_name(t)].items():
            np.testing.assert_array_equal(back.masks[tier_name(t)][k], m)
    for k, v in result.params.items():
        np.testing.assert_array_equal(back.params[k], v)


@pytest.mark.parametrize("method", ["tfmot", "csp"])
def test_per_tier_methods_reach_the_tier_and_keep_pruned_weights_zero(data, tmp_path, method):
    cfg = _cfg()
    result = Trainer(cfg, data, tmp_path / "w", method, 80).run()
    masks = result.masks[tier_name(80)]
    assert set(masks) == {k for k in result.params if cfg.sparsity.prunes(k)}
    for k, m in masks.items():
        assert np.all(result.params[k][~m] == 0), f"{method}: pruned weights of {k} are not zero"
        if method == "tfmot":  # TFMOT counts blocks (a partial edge block as a whole one), per layer
            blocks = -(-m.shape[0] // 16) * m.shape[1]
            assert abs(block_sparsity(m, cfg.sparsity.block) - 0.8) <= max(0.005, 0.5 / blocks), k
    if method == "csp":
        _check_tier(result.params, masks, 80)


def test_omni_resume_restores_masks(data, tmp_path):
    cfg = _cfg()
    straight = Trainer(cfg, data, tmp_path / "a", "omni").run()
    Trainer(cfg, data, tmp_path / "b", "omni").run(until=10)  # interrupted after the step-10 checkpoint
    resumed = Trainer(cfg, data, tmp_path / "b", "omni").run(resume=True)
    for t in TIERS:
        for k, m in straight.masks[tier_name(t)].items():
            np.testing.assert_array_equal(resumed.masks[tier_name(t)][k], m)
    for k, v in straight.params.items():
        np.testing.assert_allclose(resumed.params[k], v, atol=1e-5)


def test_tier_masks_cover_every_prunable_parameter():
    rng = np.random.default_rng(2)
    params = {
        "enc0/kernel": rng.normal(size=(40, 64)),
        "enc0/bias": rng.normal(size=(64,)),
        "pred_embed/embeddings": rng.normal(size=(5, 8)),
        "joint_out/kernel": rng.normal(size=(32, 12)),
    }
    assert set(tier_masks(params, {90: 0.9}, SparsityConfig())[90]) == {
        "enc0/kernel"
    }  # the output layer stays dense by default
    assert set(tier_masks(params, {90: 0.9}, SparsityConfig(dense_layers=()))[90]) == {
        "enc0/kernel",
        "joint_out/kernel",
    }


@pytest.mark.parametrize("method", ["omni", "tfmot"])
def test_dense_layers_stay_dense_and_can_be_pruned_when_asked(data, tmp_path, method):
    cfg = _cfg(steps=12)
    result = Trainer(cfg, data, tmp_path / "a", method, None if method == "omni" else 90).run()
    assert all("joint_out/kernel" not in m for m in result.masks.values())
    assert np.count_nonzero(result.params["joint_out/kernel"]) == result.params["joint_out/kernel"].size
    cfg = _cfg(steps=12, dense_layers=("enc_proj",))
    result = Trainer(cfg, data, tmp_path / "b", method, None if method == "omni" else 90).run()
    masks = result.masks[tier_name(90)]
    assert "joint_out/kernel" in masks and "enc_proj/kernel" not in masks
    assert np.count_nonzero(result.params["enc_proj/kernel"]) == result.params["enc_proj/kernel"].size


def test_a_checkpoint_from_before_dense_layers_keeps_every_kernel_pruned(data, tmp_path):
    import json

    cfg = _cfg(steps=12, dense_layers=())
    result = Trainer(cfg, data, tmp_path / "w", "omni").run()
    ModelCheckpoint(cfg, result.params, data.tokenizer, data.normalizer, result.masks, {"method": "omni"}).save(
        tmp_path / "ck"
    )
    info = json.loads((tmp_path / "ck" / "model.json").read_text())
    del info["config"]["sparsity"]["dense_layers"]
    (tmp_path / "ck" / "model.json").write_text(json.dumps(info))
    back = ModelCheckpoint.load(tmp_path / "ck")
    assert back.config.sparsity.dense_layers == () and back.config.sparsity.prunes("joint_out/kernel")
    assert "joint_out/kernel" in back.masks[tier_name(90)]


def test_dense_layers_must_name_layers_with_kernels():
    cfg = _cfg()
    with pytest.raises(ConfigError, match="pred_embed, joint"):
        dataclasses.replace(cfg, sparsity=dataclasses.replace(cfg.sparsity, dense_layers=("pred_embed", "joint")))


@pytest.mark.parametrize("per_step", [1, 2, 3, 4])
def test_omni_trains_every_tier_and_always_the_sparsest(per_step):
    from pipeline.methods import OmniMethod

    cfg = _cfg()
    cfg = dataclasses.replace(cfg, sparsity=dataclasses.replace(cfg.sparsity, tiers_per_step=per_step))
    m = OmniMethod(cfg, 5, 100, None)
    picks = [m.select_tiers(s) for s in range(200)]
    assert all(len(p) == min(per_step, len(TIERS)) for p in picks)
    assert set().union(*map(set, picks)) == set(range(len(TIERS))), "a tier is never trained"
    if per_step >= 2:
        assert all(len(TIERS) - 1 in p for p in picks)
    if per_step >= 3:
        assert all(0 in p for p in picks)


@pytest.mark.parametrize("method,tier", [("dense", None), ("tfmot", 80), ("omni", None), ("csp", 80)])
def test_auxiliary_ctc_head_trains_resumes_and_stays_out_of_the_checkpoint(data, tmp_path, method, tier):
    """train.ctc_weight adds the CTC loss of a training-only head: the first step's loss grows by it, the head
    learns and is restored on resume, and the trained parameters are exactly the exported model's."""
    from pipeline.model import check_params
    from tests.test_train import _args

    cfg = _cfg()
    aux = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, ctc_weight=0.5))
    plain, with_ctc = Trainer(cfg, data, tmp_path / "p", method, tier), Trainer(aux, data, tmp_path / "a", method, tier)
    b = with_ctc.batcher.batch(0)
    extra = with_ctc.method.before_step(0, len(b.frames))
    head0 = with_ctc.method.ctc_head.get_weights()[0].copy()
    assert plain.method.ctc_head is None
    assert (
        float(with_ctc._train_step(*_args(b, 0), *extra))
        > float(plain._train_step(*_args(b, 0), *plain.method.before_step(0, len(b.frames)))) + 0.1
    )
    assert not np.allclose(with_ctc.method.ctc_head.get_weights()[0], head0)  # the head got a gradient
    straight = Trainer(aux, data, tmp_path / "s", method, tier).run()
    check_params(aux, data.tokenizer.size, straight.params, "trained")  # no ctc_head among them
    Trainer(aux, data, tmp_path / "r", method, tier).run(until=10)
    resumed = Trainer(aux, data, tmp_path / "r", method, tier).run(resume=True)
    for k, v in straight.params.items():
        np.testing.assert_allclose(resumed.params[k], v, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("method,tier", [("dense", None), ("omni", None), ("csp", 80)])
def test_first_label_onset_restriction_reaches_every_loss_path(data, tmp_path, method, tier):
    """train.first_label_onset leaves alignments out of the RNN-T loss, so the first step's loss grows (same weights,
    same batch) and stays finite, in each method's loss path (Method.loss, the tier-batched one, CSP's)."""
    from tests.test_train import _args

    cfg = _cfg()
    restricted = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, first_label_onset=0.9))
    plain, onset = (
        Trainer(cfg, data, tmp_path / "p", method, tier),
        Trainer(restricted, data, tmp_path / "o", method, tier),
    )
    b = onset.batcher.batch(0)
    free = float(plain._train_step(*_args(b, 0), *plain.method.before_step(0, len(b.frames))))
    got = float(onset._train_step(*_args(b, 0), *onset.method.before_step(0, len(b.frames))))
    assert np.isfinite(got) and got > free + 1e-3
    with pytest.raises(ConfigError, match="first_label_onset"):
        dataclasses.replace(cfg.train, first_label_onset=1.0)


def test_pad_edges_moves_the_first_label_onset_past_the_leading_zeros(data, tmp_path):
    """With `train.pad_edges` the onset search skips the encoder frames that hold the contract's zeros (100 ms: 10
    feature frames, 4 encoder frames of 3): an utterance whose loudest start is in them gets its onset after them."""
    import tensorflow as tf

    cfg = _cfg()
    padded = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, first_label_onset=0.3, pad_edges=True))
    plain = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, first_label_onset=0.3))
    x = np.full((1, 30, cfg.frontend.n_mels), -2.0, np.float32)
    x[0, :3] = 5.0  # loud in the first encoder frame, inside the zeros' frames
    x[0, 20:] = 4.0
    frames = tf.constant([10], tf.int32)
    onset = {
        name: int(Trainer(c, data, tmp_path / name, "dense").method._first_emit(tf.constant(x), frames)[0])
        for name, c in (("plain", plain), ("padded", padded))
    }
    assert onset == {"plain": 0, "padded": 20 // 3}


def test_layer_wise_sampling_keeps_the_sandwich_and_mixes_tiers_across_layers():
    """sampling = "layer": every step trains the densest and the sparsest subnet first, then subnets whose pruned
    layers draw their tiers independently (every tier reaches every layer), all on the same rows of the batch."""
    from pipeline.methods import OmniMethod

    cfg = _cfg(sampling="layer", tiers_per_step=4)
    m = OmniMethod(cfg, 5, 100, None)
    assert len(m.layers) >= 3
    steps = [m.before_step(s, 8) for s in range(60)]
    for sel, idx in steps:
        assert sel.shape == (4, len(m.layers)) and idx.shape == (4, 4)
        assert np.all(sel[0] == 0) and np.all(sel[1] == len(TIERS) - 1)
        assert all(np.array_equal(idx[0], r) for r in idx), "subnets of one step train on different rows"
    drawn = np.concatenate([sel[2:] for sel, _ in steps])
    assert all(set(drawn[:, j]) == set(range(len(TIERS))) for j in range(len(m.layers)))
    assert any(len(set(row)) > 1 for row in drawn), "no subnet mixed tiers across layers"
    again = OmniMethod(cfg, 5, 100, None).before_step(7, 8)  # the same subnets on every worker and on resume
    np.testing.assert_array_equal(again[0], steps[7][0])
    np.testing.assert_array_equal(again[1], steps[7][1])


def test_a_layer_wise_subnet_takes_each_layers_own_tier_mask(data):
    from pipeline.methods import OmniMethod

    cfg = _cfg(sampling="layer")
    m = OmniMethod(cfg, 5, 100, None)
    m.update_masks(100)  # every tier at its final sparsity
    mix = np.array([[i % len(TIERS) for i in range(len(m.layers))]], np.int32)
    params = m._tier_params(tf.constant(mix))
    for n in m.pruned:
        tier = mix[0, m.layers.index(n.split("/")[0])]
        np.testing.assert_array_equal(params[n][0].numpy(), m.var(n).numpy() * m.mask(n)[tier].numpy())


def test_in_place_distillation_adds_the_kl_to_the_densest_subnet_and_trains(data, tmp_path):
    """distill > 0 adds the sparser subnets' lattice KL to the densest's: on the first step of the same batch the
    loss grows (no subnet equals the densest once masks prune), and a run of it trains with nested masks."""
    plain, distilled = _cfg(sampling="layer", tiers_per_step=3), _cfg(sampling="layer", tiers_per_step=3, distill=1.0)
    losses = []
    for cfg in (plain, distilled):
        t = Trainer(cfg, data, tmp_path / f"w{len(losses)}", "omni")
        t.method.update_masks(20)
        b = t.batcher.batch(0)
        extra = t.method.before_step(1, len(b.frames))
        losses.append(float(t.method.loss(b.feats, b.pred_in, b.labels, b.frames, b.label_lengths, *extra)))
    assert losses[1] > losses[0] + 1e-3
    result = Trainer(distilled, data, tmp_path / "run", "omni").run()
    for t in TIERS:
        _check_tier(result.params, result.masks[tier_name(t)], t)
    assert np.all(np.isfinite(np.concatenate([v.ravel() for v in result.params.values()])))


def test_distillation_needs_the_densest_subnet_every_step():
    with pytest.raises(ConfigError, match="needs the densest tier every step"):
        SparsityConfig(distill=0.5, tiers_per_step=2)
    with pytest.raises(ConfigError, match="`tiers_per_step` must be >= 2"):
        SparsityConfig(sampling="layer", tiers_per_step=1)
    with pytest.raises(ConfigError, match="tier or layer"):
        SparsityConfig(sampling="block")
