import numpy as np
import pytest

from pipeline._tf import keras, tf
from pipeline.cells import ClippedLSTM, lstm_sequence, lstm_step


def _pair(units=6, clip=None):
    x = np.random.default_rng(0).normal(0, 2, size=(2, 9, 5)).astype(np.float32)
    ours = ClippedLSTM(units, clip)
    ours.build(x.shape)
    ref = keras.layers.LSTM(units, return_sequences=True)
    ref.build(x.shape)
    w = [
        np.random.default_rng(i).normal(0, 0.8, size=v.shape).astype(np.float32)
        for i, v in enumerate(ref.get_weights())
    ]
    ref.set_weights(w)
    ours.set_weights(w)
    return x, ours, ref


def test_unclipped_layer_equals_keras_lstm():
    x, ours, ref = _pair()
    np.testing.assert_allclose(ours(x).numpy(), ref(x).numpy(), atol=1e-5)


def test_cell_clip_bounds_the_state_and_changes_the_output():
    x, ours, ref = _pair(clip=0.5)
    h, c = tf.zeros([2, 6]), tf.zeros([2, 6])
    xw = tf.einsum("btd,dk->tbk", x, ours.kernel) + ours.bias
    for t in range(x.shape[1]):
        h, c = lstm_step(xw[t], h, c, lambda s: tf.matmul(s, ours.recurrent_kernel), 0.5)
        assert np.all(np.abs(c.numpy()) <= 0.5 + 1e-6)
    assert not np.allclose(ours(x).numpy(), ref(x).numpy(), atol=1e-3)


def test_config_round_trip_keeps_every_field():
    layer = ClippedLSTM(7, 2.5, name="enc0")
    again = ClippedLSTM.from_config(layer.get_config())
    assert (again.units, again.cell_clip, again.name) == (7, 2.5, "enc0")


def _scanned(xw, rk, clip):
    """Every (h, c) of `lstm_step` scanned over xw, the gradient left to autograd."""
    zeros = tf.zeros(tf.concat([tf.shape(xw)[1:-1], [rk.shape[-2]]], 0))
    return tf.scan(
        lambda c, x: lstm_step(x, c[0], c[1], lambda s: tf.matmul(s, rk), clip), xw, initializer=(zeros, zeros)
    )


@pytest.mark.parametrize("clip", [None, 0.6])
@pytest.mark.parametrize("leading", [(3,), (2, 3)])  # (B,) as in the Keras layer; (K, B) as in a tier-batched pass
def test_lstm_sequence_matches_the_scanned_step_in_value_and_gradient(clip, leading):
    """The hand-written backpropagation against autograd through `lstm_step`, with the clip active on part of the
    states (clip 0.6 with inputs of scale 2) so its zero-gradient region is exercised too."""
    rng = np.random.default_rng(7)
    h = 5
    xw = tf.constant(rng.normal(0, 2, size=(8, *leading, 4 * h)).astype(np.float32))
    rk = tf.constant(rng.normal(0, 0.7, size=(*leading[:-1], h, 4 * h)).astype(np.float32))
    w = tf.constant(rng.normal(size=(8, *leading, h)).astype(np.float32))  # a loss that weighs every output
    results = []
    for f in (lstm_sequence, lambda *a: _scanned(*a)[0]):
        with tf.GradientTape() as tape:
            tape.watch([xw, rk])
            y = f(xw, rk, clip)
            loss = tf.reduce_sum(tf.sin(3 * y) * w)
        results.append((y.numpy(), *[g.numpy() for g in tape.gradient(loss, [xw, rk])]))
    if clip:
        assert (
            0.05 < np.mean(np.abs(_scanned(xw, rk, None)[1].numpy()) > clip) < 0.95
        )  # the clip bites on part of the states
    for ours, ref in zip(*results):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)
