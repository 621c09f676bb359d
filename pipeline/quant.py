"""The int8 TFLite kernels, emulated in the float graph (accelerator-aware training, AAT).

The exported graphs (model.py) run as int8 FULLY_CONNECTED / ADD / MUL / LOGISTIC /
TANH kernels. Each kernel computes on dequantized inputs and rounds its output onto the
output tensor's int8 grid, so emulating it means rounding the float op's output onto
the same grid:

- weights: per output channel, symmetric, narrow range: `s = max|w| / 127`, `w ~ round(w/s) s`
  (what the converter does to every FC kernel; the int32 bias is left exact);
- activations: per tensor, asymmetric, on the grid TF's FakeQuant nudges a (min, max)
  range to (zero exactly representable) -- the grid the converter turns into int8
  scale / zero point;
- LOGISTIC and TANH outputs: the fixed grids of the int8 kernels, 1/256 on [0, 1) and
  1/128 on [-1, 1);
- the recurrent state: `h` and `c` are quantized where they are produced, and the state
  inputs of the exported graphs carry the same ranges, so passing a state from one chunk
  to the next loses nothing more than inside a chunk.

Rounding has a straight-through gradient inside the range and none outside (what
`tf.quantization.fake_quant_*` does). One quantizer object (`Quant`) is threaded
through `lstm_step`, `model.forward` and the export graphs, so the points where
training rounds and the tensors the converter quantizes are the same by construction:

- `Quant`: float, identity (training without AAT, float export);
- `Emulated`: the training emulation; ranges are tensors with a leading axis K (one
  row per variant in a tier-batched pass) and it records the min/max each point saw,
  which the AAT method folds into the ranges (running min/max, or a moving average);
- `Exported`: `tf.quantization.fake_quant_with_min_max_args` with the learned ranges in
  the export graphs: the converter takes those ranges for the int8 tensors instead of
  calibrating them (tests/test_quant.py checks the resulting scales and the output);
- `Tap`: export graphs exposing every range point's tensors, to read the ranges the
  converter's calibration gives them (where AAT starts, `export.calibrated_ranges`).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._tf import tf

QMIN, QMAX = 0, 255  # FakeQuant's 8-bit grid; TFLite int8 = grid - 128
LSTM_POINTS = ("xw", "rh", "z", "fc", "ig", "c", "h")  # input FC, recurrent FC, gates, f*c, i*g, cell, hidden
STEP_POINTS = LSTM_POINTS[1:]  # the ones inside the time step (xw is computed for the whole sequence)
TOKEN_RANGE = (0.0, 1.0)  # the predictor's one-hot input: exact on the int8 grid
MIN_WIDTH = 1e-6  # a range never collapses to a point


def range_points(layers: int) -> list[str]:
    """Every activation tensor whose int8 range AAT learns, for an encoder of `layers` LSTM layers."""
    pts = ["features"]
    for i in range(layers):
        pts += [f"enc{i}/{p}" for p in LSTM_POINTS]
    pts += ["enc_proj", "pred_embed", *[f"pred_lstm/{p}" for p in LSTM_POINTS], "pred_proj", "joint_sum", "logits"]
    return pts


def nudged(lo: tf.Tensor, hi: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """(nudged min, nudged max, scale) of an 8-bit range, as TF's FakeQuant computes them."""
    lo = tf.minimum(lo, 0.0)  # the range always holds 0 (the converter needs an exact zero)
    hi = tf.maximum(tf.maximum(hi, 0.0), lo + MIN_WIDTH)
    scale = (hi - lo) / (QMAX - QMIN)
    zp_from_min = QMIN - lo / scale
    zp = tf.clip_by_value(tf.floor(zp_from_min + 0.5), QMIN, QMAX)  # std::round, zp_from_min >= 0
    return (QMIN - zp) * scale, (QMAX - zp) * scale, scale


def fake_quant(x: tf.Tensor, lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
    """Round `x` onto the int8 grid of range (lo, hi) (broadcast against x); straight-through gradient inside it."""
    nmin, nmax, scale = nudged(lo, hi)
    clamped = tf.clip_by_value(x, nmin, nmax)
    q = tf.floor((clamped - nmin) / scale + 0.5) * scale + nmin
    return clamped + tf.stop_gradient(q - clamped)


def _grid(x: tf.Tensor, step: float, qmin: int, qmax: int) -> tf.Tensor:
    q = tf.clip_by_value(tf.round(x / step), qmin, qmax) * step
    return x + tf.stop_gradient(q - x)


def quantize_kernel(w: tf.Tensor) -> tf.Tensor:
    """Per-output-channel symmetric narrow-range int8 (the last axis is the output channel, -2 the input)."""
    scale = tf.maximum(tf.reduce_max(tf.abs(w), axis=-2, keepdims=True) / 127.0, 1e-12)
    q = tf.clip_by_value(tf.round(w / scale), -127.0, 127.0) * scale
    return w + tf.stop_gradient(q - w)


class Quant:
    """Float: every hook is the identity (the plain sigmoid / tanh)."""

    records = False  # whether `seen` collects the min/max of every activation point

    def act(self, name: str, x: tf.Tensor) -> tf.Tensor:
        return x

    def sigmoid(self, x: tf.Tensor) -> tf.Tensor:
        return tf.sigmoid(x)

    def tanh(self, x: tf.Tensor) -> tf.Tensor:
        return tf.tanh(x)

    def kernel(self, w: tf.Tensor) -> tf.Tensor:
        return w

    def child(self) -> Quant:
        """The quantizer a loop body uses (Emulated records what the body saw separately)."""
        return self

    def observe(self, seen: dict[str, tuple[tf.Tensor, tf.Tensor]]) -> None:
        return None


FLOAT = Quant()


class Emulated(Quant):
    """Training emulation. `ranges`: point → (K, 2) tensor (min, max per variant); None = observe only
    (float forward that records ranges: the calibration that starts AAT)."""

    records = True

    def __init__(self, ranges: dict[str, tf.Tensor] | None) -> None:
        self.ranges = ranges
        self.seen: dict[str, tuple[tf.Tensor, tf.Tensor]] = {}

    def _record(self, name: str, x: tf.Tensor) -> None:
        axes = list(range(1, x.shape.rank))
        self.observe({name: (tf.stop_gradient(tf.reduce_min(x, axes)), tf.stop_gradient(tf.reduce_max(x, axes)))})

    def act(self, name: str, x: tf.Tensor) -> tf.Tensor:
        self._record(name, x)
        if self.ranges is None:
            return x
        r = self.ranges[name]
        shape = tf.concat([tf.shape(r)[:1], tf.ones([x.shape.rank - 1], tf.int32)], 0)
        return fake_quant(x, tf.reshape(r[:, 0], shape), tf.reshape(r[:, 1], shape))

    def sigmoid(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.sigmoid(x)
        return y if self.ranges is None else _grid(y, 1 / 256, 0, 255)

    def tanh(self, x: tf.Tensor) -> tf.Tensor:
        y = tf.tanh(x)
        return y if self.ranges is None else _grid(y, 1 / 128, -128, 127)

    def kernel(self, w: tf.Tensor) -> tf.Tensor:
        return w if self.ranges is None else quantize_kernel(w)

    def child(self) -> Emulated:
        return Emulated(self.ranges)

    def observe(self, seen: dict[str, tuple[tf.Tensor, tf.Tensor]]) -> None:
        for name, (lo, hi) in seen.items():
            if name in self.seen:
                lo, hi = tf.minimum(lo, self.seen[name][0]), tf.maximum(hi, self.seen[name][1])
            self.seen[name] = (lo, hi)


class Exported(Quant):
    """Export graphs: FakeQuant ops with constant learned ranges, which the int8 converter adopts."""

    def __init__(self, ranges: dict[str, Iterable[float]]) -> None:
        self.ranges = {k: (float(v[0]), float(v[1])) for k, v in ranges.items()}  # type: ignore[index]
        self.ranges.setdefault("token", TOKEN_RANGE)

    def act(self, name: str, x: tf.Tensor) -> tf.Tensor:
        lo, hi = self.ranges[name]
        lo = min(lo, 0.0)
        return tf.quantization.fake_quant_with_min_max_args(x, lo, max(hi, 0.0, lo + MIN_WIDTH), num_bits=8)


class Tap(Quant):
    """Export graphs that expose their range points: `taps[point]` = every tensor the point names
    (each unrolled step of a chunk, a state entering and leaving...). See `export.calibrated_ranges`."""

    def __init__(self) -> None:
        self.taps: dict[str, list[tf.Tensor]] = {}

    def act(self, name: str, x: tf.Tensor) -> tf.Tensor:
        self.taps.setdefault(name, []).append(x)
        return x


def int8_params(lo: float, hi: float) -> tuple[float, int]:
    """(scale, int8 zero point) of the tensor a range becomes in the .tflite."""
    nmin, _, scale = (float(t) for t in nudged(tf.constant(lo, tf.float32), tf.constant(hi, tf.float32)))
    return scale, int(round(QMIN - nmin / scale)) - 128
