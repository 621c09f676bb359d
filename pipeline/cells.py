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


def lstm_step(
    xw: tf.Tensor,
    h: tf.Tensor,
    c: tf.Tensor,
    recurrent: Any,
    cell_clip: float | None,
    q: Quant = FLOAT,
    layer: str = "",
) -> tuple[tf.Tensor, tf.Tensor]:
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


# Variants of the weights (omni's subnets) batched in one pass, up to this many, are multiplied one by one.
_SPLIT_VARIANTS = 8


def variant_matmul(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """`tf.matmul(a, b)` for the LSTM's products: b (H, N) shared by every leading axis of a (..., M, H), or
    b (K, H, N), the K variants of a weight, with a (..., K, M, H).

    The same products as `tf.matmul`, as plain 2-D MatMuls: TF's CPU BatchMatMul runs products of this size 2-3.5x
    slower than MatMuls of the same work (a (80, 16, 128) @ (128, 512) product 5.4 ms against 2.6 ms flattened; a
    recurrent step of 2 variants x 8 rows 2.8x slower than the two products apart). So the leading axes of `a` fold
    into its rows, and a K known when the graph is traced splits into K products. Anything else: `tf.matmul`.
    """
    n = b.shape[-1]
    if b.shape.rank == 2 and a.shape.rank is not None and a.shape[-1] is not None:
        rows = tf.matmul(tf.reshape(a, [-1, a.shape[-1]]), b)
        return tf.reshape(rows, tf.concat([tf.shape(a)[:-1], [n if n is not None else tf.shape(b)[-1]]], 0))
    k = b.shape[0]
    if (
        b.shape.rank == 3
        and k is not None
        and k <= _SPLIT_VARIANTS
        and a.shape.rank is not None
        and a.shape.rank >= 3
        and a.shape[-3] == k
    ):
        return tf.stack([variant_matmul(a[..., i, :, :], b[i]) for i in range(k)], axis=-3)
    return tf.matmul(a, b)


def variant_gram(a: tf.Tensor, b: tf.Tensor, kernel: tf.TensorShape) -> tf.Tensor:
    """The sum over every axis but the last and the variant axis of a^T b, shaped like the weight the products used
    (static shape `kernel`): a (T, ..., B, H) and b (T, ..., B, N) -> (H, N) for a kernel (H, N), or (K, H, N) for a
    kernel (K, H, N) where the ... ends in K (the gradient of the recurrent kernel, summed over time, batch and any
    axis the kernel was broadcast over). A K known at trace time, on axis 1 of `a`, splits into K plain MatMuls."""
    rank, k = kernel.rank, kernel[0]
    if rank == 3 and a.shape.rank == 4 and k is not None and a.shape[1] == k and k <= _SPLIT_VARIANTS:
        return tf.stack([variant_gram(a[:, i], b[:, i], kernel[1:]) for i in range(k)])
    if rank == 2:
        return tf.matmul(tf.reshape(a, [-1, a.shape[-1]]), tf.reshape(b, [-1, b.shape[-1]]), transpose_a=True)
    d = tf.einsum("t...bh,t...bk->...hk", a, b)
    while d.shape.rank > rank:  # leading axes of h that the kernel was broadcast over
        d = tf.reduce_sum(d, 0)
    return d


def lstm_sequence(xw: tf.Tensor, recurrent: tf.Tensor, cell_clip: float | None) -> tf.Tensor:
    """`lstm_step` in float over a whole sequence from zero state, with hand-written backpropagation through time.

    xw: (T, ..., 4H) time-major input projections; recurrent: the recurrent kernel, (H, 4H) or with the
    leading axes of `h` that `tf.matmul` batches over. Returns every h, (T, ..., H).

    The forward pass is a scan of `lstm_step` itself; the gradient of that scan, taken by autograd, runs
    several times the ops per step of this one and was most of a training step on CPU. The backward pass
    recomputes the gates of every step at once from the saved h and c (outside the loop), so only the
    recurrence itself runs step by step. The cell clip passes gradient where the cell state was inside the
    clip range, as `tf.clip_by_value` does (tests/test_cells.py checks values and gradients against autograd).
    """
    xw = tf.convert_to_tensor(xw)
    recurrent = tf.convert_to_tensor(recurrent)
    units = recurrent.shape[-2]

    @tf.custom_gradient
    def run(xw: tf.Tensor, recurrent: tf.Tensor):  # noqa: ANN202
        zeros = tf.zeros(tf.concat([tf.shape(xw)[1:-1], [units]], 0), xw.dtype)
        hs, cs = tf.scan(
            lambda carry, x: lstm_step(x, carry[0], carry[1], lambda h: variant_matmul(h, recurrent), cell_clip),
            xw,
            initializer=(zeros, zeros),
        )

        def grad(dhs: tf.Tensor):  # noqa: ANN202
            h_prev = tf.concat([zeros[None], hs[:-1]], 0)
            c_prev = tf.concat([zeros[None], cs[:-1]], 0)
            i, f, g, o = tf.split(xw + variant_matmul(h_prev, recurrent), 4, axis=-1)
            i, f, g, o = tf.sigmoid(i), tf.sigmoid(f), tf.tanh(g), tf.sigmoid(o)
            inside = tf.cast(tf.abs(f * c_prev + i * g) <= cell_clip, xw.dtype) if cell_clip else tf.ones_like(cs)
            tc = tf.tanh(cs)
            rt = tf.linalg.matrix_transpose(recurrent)

            def back(carry: tuple, t: tuple) -> tuple:
                dh_next, dc_next = carry[0], carry[1]
                dy, i_, f_, g_, o_, tc_, inside_, c_prev_ = t
                dh = dy + dh_next
                dc = (dh * o_ * (1 - tc_ * tc_) + dc_next) * inside_
                dz = tf.concat(
                    [
                        dc * g_ * i_ * (1 - i_),
                        dc * c_prev_ * f_ * (1 - f_),
                        dc * i_ * (1 - g_ * g_),
                        dh * tc_ * o_ * (1 - o_),
                    ],
                    -1,
                )
                return variant_matmul(dz, rt), dc * f_, dz

            _, _, dz = tf.scan(
                back,
                (dhs, i, f, g, o, tc, inside, c_prev),
                initializer=(zeros, zeros, tf.zeros_like(xw[0])),
                reverse=True,
            )
            return dz, variant_gram(h_prev, dz, recurrent.shape)  # sum over time and batch of h_{t-1}^T dz_t

        return hs, grad

    return run(xw, recurrent)


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
        return tf.transpose(lstm_sequence(xw, self.recurrent_kernel, self.cell_clip), [1, 0, 2])

    def get_prunable_weights(self) -> list[tf.Variable]:
        return [self.kernel, self.recurrent_kernel]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "units": self.units, "cell_clip": self.cell_clip}
