"""The exported streaming graphs compute the same function as the trained model."""

import numpy as np
import pytest

from pipeline.config import load_model_config
from pipeline.errors import ArtifactError
from pipeline.model import (
    build_encoder_export,
    build_joiner_export,
    build_predictor_export,
    build_training_model,
    check_params,
    encoder_state_names,
    get_params,
    param_shapes,
    set_params,
)
from tests.conftest import FIXTURES

VOCAB = 7


@pytest.fixture(scope="module")
def trained():
    cfg = load_model_config(str(FIXTURES / "micro.toml"))
    model = build_training_model(cfg, VOCAB)
    rng = np.random.default_rng(0)
    params = {k: rng.normal(0, 0.3, size=v.shape).astype(np.float32) for k, v in get_params(model, cfg).items()}
    set_params(model, cfg, params)
    return cfg, model, params


def test_params_have_the_documented_shapes(trained):
    cfg, _, params = trained
    assert {k: v.shape for k, v in params.items()} == param_shapes(cfg, VOCAB)
    check_params(cfg, VOCAB, params, "test")


def test_checkpoint_from_another_config_is_refused(trained):
    cfg, _, params = trained
    bad = dict(params)
    bad["enc0/kernel"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ArtifactError, match="another model config"):
        check_params(cfg, VOCAB, bad, "ckpt")


def test_streaming_encoder_chunks_equal_full_sequence_lstm(trained):
    cfg, model, params = trained
    from pipeline._tf import keras

    n_chunks = 3
    feats = (
        np.random.default_rng(1)
        .normal(size=(1, n_chunks * cfg.chunk_feature_frames, cfg.frontend.n_mels))
        .astype(np.float32)
    )
    enc_proj = keras.Model(model.inputs[0], model.get_layer("enc_proj").output)
    want = enc_proj(feats).numpy()[0]
    export = build_encoder_export(cfg, params)
    state = [np.zeros((1, cfg.encoder.units), np.float32) for _ in encoder_state_names(cfg)]
    got = []
    for i in range(n_chunks):
        out = export([feats[:, i * cfg.chunk_feature_frames : (i + 1) * cfg.chunk_feature_frames], *state])
        got.append(out[0].numpy()[0])
        state = [s.numpy() for s in out[1:]]
    np.testing.assert_allclose(np.concatenate(got), want, atol=1e-5)


def test_predictor_and_joiner_steps_equal_training_graph(trained):
    cfg, model, params = trained
    from pipeline._tf import keras

    tokens = np.array([[0, 3, 1, 5]], np.int32)
    pred_model = keras.Model(model.inputs[1], model.get_layer("pred_proj").output)
    want = pred_model(tokens).numpy()[0]
    export = build_predictor_export(cfg, params)
    h = c = np.zeros((1, cfg.predictor.units), np.float32)
    for u, tok in enumerate(tokens[0]):
        out, h, c = export([np.eye(VOCAB, dtype=np.float32)[tok][None], h, c])
        np.testing.assert_allclose(out.numpy()[0], want[u], atol=1e-5)

    feats = np.random.default_rng(2).normal(size=(1, cfg.chunk_feature_frames, cfg.frontend.n_mels)).astype(np.float32)
    logits = model([feats, tokens]).numpy()[0]  # (T, U+1, V)
    enc = keras.Model(model.inputs[0], model.get_layer("enc_proj").output)(feats).numpy()[0]
    joiner = build_joiner_export(cfg, params)
    np.testing.assert_allclose(joiner([enc[2][None], want[1][None]]).numpy()[0], logits[2, 1], atol=1e-5)
