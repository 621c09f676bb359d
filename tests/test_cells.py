import numpy as np
import pytest

from pipeline._tf import keras, tf
from pipeline.cells import ClippedLSTM, lstm_sequence, lstm_step, variant_gram, variant_matmul


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


@pytest.mark.parametrize(
    "a_shape, b_shape",
    [((7, 3, 5), (5, 4)), ((2, 3, 5), (2, 5, 4)), ((6, 2, 3, 5), (2, 5, 4)), ((3, 5), (5, 4))],
)
def test_variant_matmul_is_tf_matmul_with_static_and_unknown_shapes(a_shape, b_shape):
    """The split and flattened products equal `tf.matmul`, whether the shapes are known when traced (split into plain
    MatMuls) or not (the fallback), and so does the recurrent-kernel gradient sum `variant_gram`."""
    rng = np.random.default_rng(3)
    a = tf.constant(rng.normal(size=a_shape).astype(np.float32))
    b = tf.constant(rng.normal(size=b_shape).astype(np.float32))
    want = tf.matmul(a, b).numpy()
    np.testing.assert_allclose(variant_matmul(a, b).numpy(), want, rtol=1e-5, atol=1e-5)
    unknown = tf.function(
        variant_matmul,
        input_signature=[tf.TensorSpec([None] * len(a_shape), tf.float32), tf.TensorSpec([None] * len(b_shape))],
    )
    np.testing.assert_allclose(unknown(a, b).numpy(), want, rtol=1e-5, atol=1e-5)
    if len(a_shape) >= 3:  # a as (T, ..., B, H), and y of its shape with N columns: sum over time and batch of a^T y
        y = tf.constant(rng.normal(size=(*a_shape[:-1], 4)).astype(np.float32))
        ref = tf.einsum("t...bh,t...bk->...hk", a, y)
        while ref.shape.rank > len(b_shape):
            ref = tf.reduce_sum(ref, 0)
        for kernel in (tf.TensorShape((*b_shape[:-1], 4)), tf.TensorShape([None] * len(b_shape))):  # split or not
            np.testing.assert_allclose(variant_gram(a, y, kernel).numpy(), ref.numpy(), rtol=1e-4, atol=1e-4)
