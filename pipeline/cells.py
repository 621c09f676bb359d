"""The LSTM the project trains and exports: Keras LSTM math plus an optional cell-state clip.

Why our own layer: the int8 export quantizes the cell state `c` per tensor, and an
unclipped LSTM lets `c` drift to +-40 on long utterances, so one int8 step is ~0.3 and
rounding errors compound through the recurrence. Clipping `c` to +-`cell_clip` (as
TFLite's own LSTM op allows) bounds the range the converter has to cover. The same
`lstm_step` runs in training (over whole sequences) and in the exported graphs (one
chunk, unrolled), so they compute one function.

Weights and gate order are Keras's: kernel (in, 4H), recurrent_kernel (H, 4H), bias (4H),
gates i, f, g, o; the forget-gate bias starts at 1.
"""
from __future__ import annotations

from typing import Any

import tensorflow_model_optimization as tfmot

from ._tf import keras, tf
from .quant import FLOAT, Quant


def lstm_step(xw: tf.Tensor, h: tf.Tensor, c: tf.Tensor, recurrent: Any, cell_clip: float | None, q: Quant = FLOAT,
              layer: str = "") -> tuple[tf.Tensor, tf.Tensor]:
    """One step given the input projection `xw = x @ kernel + bias` (B, 4H); `recurrent(h)` = h @ recurrent_kernel.

    `q` rounds each op's output where the int8 graph does (quant.py); `layer` names its range points.
    """
    z = q.act(f"{layer}/z", xw + q.act(f"{layer}/rh", recurrent(h)))
    i, f, g, o = tf.split(z, 4, axis=-1)
    c = q.act(f"{layer}/fc", q.sigmoid(f) * c) + q.act(f"{layer}/ig", q.sigmoid(i) * q.tanh(g))
    if cell_clip:
        c = tf.clip_by_value(c, -cell_clip, cell_clip)
    c = q.act(f"{layer}/c", c)
    h = q.act(f"{layer}/h", q.sigmoid(o) * q.tanh(c))
    return h, c


class ClippedLSTM(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    """Unidirectional LSTM over (B, T, D) → (B, T, H), zero initial state, optional cell clip."""

    def __init__(self, units: int, cell_clip: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.units = int(units)
        self.cell_clip = float(cell_clip) if cell_clip else None

    def build(self, input_shape: Any) -> None:
        d, h = int(input_shape[-1]), self.units

        def bias_init(shape: Any, dtype: Any = None) -> tf.Tensor:
            return tf.concat([tf.zeros([h]), tf.ones([h]), tf.zeros([2 * h])], 0)

        self.kernel = self.add_weight("kernel", (d, 4 * h), initializer="glorot_uniform")
        self.recurrent_kernel = self.add_weight("recurrent_kernel", (h, 4 * h), initializer="orthogonal")
        self.bias = self.add_weight("bias", (4 * h,), initializer=bias_init)
        super().build(input_shape)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        xw = tf.einsum("btd,dk->tbk", inputs, self.kernel) + self.bias  # time-major for scan
        batch = tf.shape(inputs)[0]
        zeros = tf.zeros([batch, self.units], inputs.dtype)

        def step(carry: tuple[tf.Tensor, tf.Tensor], x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return lstm_step(x, carry[0], carry[1], lambda s: tf.matmul(s, self.recurrent_kernel), self.cell_clip)

        hs, _ = tf.scan(step, xw, initializer=(zeros, zeros))
        return tf.transpose(hs, [1, 0, 2])

    def get_prunable_weights(self) -> list[tf.Variable]:
        return [self.kernel, self.recurrent_kernel]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "cell_clip": self.cell_clip}
