import numpy as np

from pipeline._tf import keras, tf
from pipeline.cells import ClippedLSTM, lstm_step


def _pair(units=6, clip=None):
    x = np.random.default_rng(0).normal(0, 2, size=(2, 9, 5)).astype(np.float32)
    ours = ClippedLSTM(units, clip)
    ours.build(x.shape)
    ref = keras.layers.LSTM(units, return_sequences=True)
    ref.build(x.shape)
    w = [np.random.default_rng(i).normal(0, 0.8, size=v.shape).astype(np.float32) for i, v in enumerate(ref.get_weights())]
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
