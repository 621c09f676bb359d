"""Streaming RNN-T: a training graph and three export graphs sharing one set of parameters.

Training runs `ClippedLSTM` layers over whole utterances. Export uses the same
`lstm_step` written from `Dense` + sigmoid/tanh + multiply/add, unrolled over one chunk,
with the recurrent state as explicit inputs and outputs: it converts to int8
FULLY_CONNECTED/LOGISTIC/TANH/MUL/ADD (docs/design.md: the Keras LSTM with
`initial_state` crashes the int8 converter), runs in LiteRT and TFLM and maps onto
the Ethos-U NPU. `tests/test_model.py` proves both compute the same function.

Parameters are a flat dict `name -> np.ndarray`, the names being

    enc{i}/kernel (in, 4H)  enc{i}/recurrent_kernel (H, 4H)  enc{i}/bias (4H,)   gate order i, f, g, o
    enc_proj/kernel (H, D)  enc_proj/bias (D,)
    pred_embed/embeddings (V, E)
    pred_lstm/kernel, pred_lstm/recurrent_kernel, pred_lstm/bias
    pred_proj/kernel (P, D) pred_proj/bias (D,)
    joint_out/kernel (D, V) joint_out/bias (V,)
"""

from __future__ import annotations

import numpy as np

from ._tf import keras, tf
from .cells import ClippedLSTM, lstm_sequence, lstm_step, variant_matmul
from .config import LSTM_WEIGHTS, ModelConfig
from .errors import ArtifactError
from .quant import FLOAT, STEP_POINTS, Quant


def layer_names(cfg: ModelConfig) -> dict[str, tuple[str, ...]]:
    """Every parameterized layer of the model and the weight names it holds, in order."""
    return cfg.layer_weights()


def param_shapes(cfg: ModelConfig, vocab_size: int) -> dict[str, tuple[int, ...]]:
    e, p, d = cfg.encoder, cfg.predictor, cfg.joiner.dim
    shapes: dict[str, tuple[int, ...]] = {}
    din = e.stack * cfg.frontend.n_mels
    for i in range(e.layers):
        shapes.update(
            {
                f"enc{i}/kernel": (din, 4 * e.units),
                f"enc{i}/recurrent_kernel": (e.units, 4 * e.units),
                f"enc{i}/bias": (4 * e.units,),
            }
        )
        din = e.units
    shapes.update(
        {
            "enc_proj/kernel": (e.units, d),
            "enc_proj/bias": (d,),
            "pred_embed/embeddings": (vocab_size, p.embed),
            "pred_lstm/kernel": (p.embed, 4 * p.units),
            "pred_lstm/recurrent_kernel": (p.units, 4 * p.units),
            "pred_lstm/bias": (4 * p.units,),
            "pred_proj/kernel": (p.units, d),
            "pred_proj/bias": (d,),
            "joint_out/kernel": (d, vocab_size),
            "joint_out/bias": (vocab_size,),
        }
    )
    return shapes


def check_params(cfg: ModelConfig, vocab_size: int, params: dict[str, np.ndarray], source: str) -> None:
    """Raise `ArtifactError` unless `params` has exactly the shapes `cfg` needs."""
    want = param_shapes(cfg, vocab_size)
    for name, shape in want.items():
        if name not in params:
            raise ArtifactError(f"{source}: parameter {name} is missing; the checkpoint is from another model config.")
        if tuple(params[name].shape) != shape:
            raise ArtifactError(
                f"{source}: parameter {name} has shape {tuple(params[name].shape)}, config {cfg.name!r} needs "
                f"{shape}; the checkpoint is from another model config."
            )
    extra = sorted(set(params) - set(want))
    if extra:
        raise ArtifactError(f"{source}: unexpected parameter {extra[0]}; the checkpoint is from another model config.")


# ---------------------------------------------------------------------------------------
# Training graph


def stack_frames(feats: tf.Tensor, stack: int) -> tf.Tensor:
    """(B, T, M) → (B, T/stack, stack*M); T must be a multiple of `stack`."""
    m = feats.shape[-1]
    return tf.reshape(feats, [tf.shape(feats)[0], -1, stack * m])


def build_training_model(cfg: ModelConfig, vocab_size: int, encoder_out: bool = False) -> keras.Model:
    """Inputs: features (B, T, n_mels) float32 with T a multiple of `stack`;
    predictor input (B, U+1) int32 = [blank, y1..yU]. Output: logits (B, T/stack, U+1, V);
    with `encoder_out`, [logits, encoder output (B, T/stack, D)] (for an auxiliary encoder loss).
    """
    e, p = cfg.encoder, cfg.predictor
    feats = keras.Input((None, cfg.frontend.n_mels), name="features")
    pred_in = keras.Input((None,), dtype="int32", name="pred_in")
    x = stack_frames(feats, e.stack)
    for i in range(e.layers):
        x = ClippedLSTM(e.units, e.cell_clip, name=f"enc{i}")(x)
    enc = keras.layers.Dense(cfg.joiner.dim, name="enc_proj")(x)
    y = keras.layers.Embedding(vocab_size, p.embed, name="pred_embed")(pred_in)
    y = ClippedLSTM(p.units, p.cell_clip, name="pred_lstm")(y)
    pred = keras.layers.Dense(cfg.joiner.dim, name="pred_proj")(y)
    joint = tf.tanh(enc[:, :, None, :] + pred[:, None, :, :])
    logits = keras.layers.Dense(vocab_size, name="joint_out")(joint)
    return keras.Model([feats, pred_in], [logits, enc] if encoder_out else logits, name=f"rnnt_{cfg.name}")


def get_params(model: keras.Model, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """Flat parameter dict of a (stripped, unwrapped) training model."""
    out = {}
    for lname, wnames in layer_names(cfg).items():
        weights = model.get_layer(lname).get_weights()
        if len(weights) != len(wnames):
            raise ArtifactError(f"layer {lname} holds {len(weights)} weights, expected {len(wnames)}.")
        out.update({f"{lname}/{w}": np.asarray(v, np.float32) for w, v in zip(wnames, weights)})
    return out


def set_params(model: keras.Model, cfg: ModelConfig, params: dict[str, np.ndarray]) -> None:
    for lname, wnames in layer_names(cfg).items():
        model.get_layer(lname).set_weights([params[f"{lname}/{w}"] for w in wnames])


# ---------------------------------------------------------------------------------------
# Export graphs (batch 1, explicit state)


def _cell_layers(params: dict[str, np.ndarray], lname: str) -> tuple[keras.layers.Dense, keras.layers.Dense]:
    k, rk, b = (params[f"{lname}/{w}"] for w in LSTM_WEIGHTS)
    dx = keras.layers.Dense(k.shape[1], name=f"{lname}_input_fc")
    dh = keras.layers.Dense(rk.shape[1], use_bias=False, name=f"{lname}_recurrent_fc")
    dx.build((None, k.shape[0]))
    dh.build((None, rk.shape[0]))
    dx.set_weights([k, b])
    dh.set_weights([rk])
    return dx, dh


def _dense(
    params: dict[str, np.ndarray], lname: str, kernel_key: str = "kernel", use_bias: bool = True
) -> keras.layers.Dense:
    k = params[f"{lname}/{kernel_key}"]
    d = keras.layers.Dense(k.shape[1], use_bias=use_bias, name=lname)
    d.build((None, k.shape[0]))
    d.set_weights([k, params[f"{lname}/bias"]] if use_bias else [k])
    return d


def encoder_state_names(cfg: ModelConfig) -> list[str]:
    return [f"enc{i}_{s}" for i in range(cfg.encoder.layers) for s in ("h", "c")]


PREDICTOR_STATE_NAMES = ["pred_h", "pred_c"]


def build_encoder_export(cfg: ModelConfig, params: dict[str, np.ndarray], q: Quant = FLOAT) -> keras.Model:
    """Inputs: features (1, chunk*stack, n_mels), then per layer h and c (1, H).
    Outputs: encoder_out (1, chunk, D), then the new h and c per layer. `q`: learned int8 ranges (quant.Exported)."""
    e = cfg.encoder
    feats = keras.Input((cfg.chunk_feature_frames, cfg.frontend.n_mels), batch_size=1, name="features")
    states = [keras.Input((e.units,), batch_size=1, name=n) for n in encoder_state_names(cfg)]
    x = tf.reshape(q.act("features", feats), [1, e.chunk_frames, e.stack * cfg.frontend.n_mels])
    new_states = []
    for i in range(e.layers):
        dx, dh = _cell_layers(params, f"enc{i}")
        xw = q.act(f"enc{i}/xw", dx(x))  # one FC for the whole chunk: (1, chunk, 4H), one bias tensor per layer
        h, c = q.act(f"enc{i}/h", states[2 * i]), q.act(f"enc{i}/c", states[2 * i + 1])
        outs = []
        for t in range(e.chunk_frames):
            h, c = lstm_step(xw[:, t], h, c, dh, e.cell_clip or None, q, f"enc{i}")
            outs.append(h)
        x = tf.stack(outs, axis=1)
        new_states += [h, c]
    enc = q.act("enc_proj", _dense(params, "enc_proj")(x))
    return keras.Model([feats, *states], [enc, *new_states], name="encoder")


def build_predictor_export(cfg: ModelConfig, params: dict[str, np.ndarray], q: Quant = FLOAT) -> keras.Model:
    """Inputs: token one-hot (1, V) (the last emitted token; blank at start), pred_h, pred_c (1, P).
    Outputs: predictor_out (1, D), new pred_h, pred_c."""
    vocab = params["pred_embed/embeddings"].shape[0]
    onehot = keras.Input((vocab,), batch_size=1, name="token")
    h0 = keras.Input((cfg.predictor.units,), batch_size=1, name="pred_h")
    c0 = keras.Input((cfg.predictor.units,), batch_size=1, name="pred_c")
    embed = _dense(params, "pred_embed", kernel_key="embeddings", use_bias=False)
    dx, dh = _cell_layers(params, "pred_lstm")
    xw = q.act("pred_lstm/xw", dx(q.act("pred_embed", embed(q.act("token", onehot)))))
    h, c = lstm_step(
        xw, q.act("pred_lstm/h", h0), q.act("pred_lstm/c", c0), dh, cfg.predictor.cell_clip or None, q, "pred_lstm"
    )
    out = q.act("pred_proj", _dense(params, "pred_proj")(h))
    return keras.Model([onehot, h0, c0], [out, h, c], name="predictor")


def build_joiner_export(cfg: ModelConfig, params: dict[str, np.ndarray], q: Quant = FLOAT) -> keras.Model:
    """Inputs: encoder frame (1, D), predictor output (1, D). Output: logits (1, V)."""
    d = cfg.joiner.dim
    enc = keras.Input((d,), batch_size=1, name="encoder_frame")
    pred = keras.Input((d,), batch_size=1, name="predictor_out")
    joint = q.act("joint_sum", q.act("enc_proj", enc) + q.act("pred_proj", pred))
    logits = q.act("logits", _dense(params, "joint_out")(tf.tanh(joint)))
    return keras.Model([enc, pred], logits, name="joiner")


# ---------------------------------------------------------------------------------------
# Functional training graph over a leading tier axis


def _lstm_seq(
    x: tf.Tensor,
    kernel: tf.Tensor,
    recurrent: tf.Tensor,
    bias: tf.Tensor,
    units: int,
    cell_clip: float | None,
    q: Quant = FLOAT,
    layer: str = "",
) -> tf.Tensor:
    """x (K, B, T, D), kernel (K, D, 4H), recurrent (K, H, 4H), bias (K, 4H) → (K, B, T, H)."""
    xw = q.act(f"{layer}/xw", tf.einsum("kbtd,kdh->kbth", x, q.kernel(kernel)) + bias[:, None, None, :])
    xw = tf.transpose(xw, [2, 0, 1, 3])  # time-major for scan
    recurrent = q.kernel(recurrent)
    if q is FLOAT:  # nothing to round or record: the sequence with hand-written backpropagation (cells.lstm_sequence)
        return tf.transpose(lstm_sequence(xw, recurrent, cell_clip), [1, 2, 0, 3])
    k = tf.shape(x)[0]
    zeros = tf.zeros(tf.stack([k, tf.shape(x)[1], units]), x.dtype)
    # what each step's quantizer saw (min/max per variant) rides in the scan carry
    names = [f"{layer}/{p}" for p in STEP_POINTS] if q.records else []
    inf = tf.fill(tf.reshape(k, [1]), np.float32(np.inf))
    seen0 = {n: (inf, -inf) for n in names}

    def step(carry: tuple, xt: tf.Tensor) -> tuple:
        h, c, seen = carry
        sub = q.child()
        h, c = lstm_step(xt, h, c, lambda s: variant_matmul(s, recurrent), cell_clip, sub, layer)
        if names:
            seen = {n: (tf.minimum(seen[n][0], sub.seen[n][0]), tf.maximum(seen[n][1], sub.seen[n][1])) for n in names}
        return h, c, seen

    hs, _, seen = tf.scan(step, xw, initializer=(zeros, zeros, seen0))
    q.observe({n: (lo[-1], hi[-1]) for n, (lo, hi) in seen.items()})
    return tf.transpose(hs, [1, 2, 0, 3])


def forward(
    cfg: ModelConfig,
    params: dict[str, tf.Tensor],
    feats: tf.Tensor,
    pred_in: tf.Tensor,
    q: Quant = FLOAT,
    parts: bool = False,
) -> tf.Tensor | tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """The training model as a function of its parameters, each with a leading axis K.

    K variants of the weights (sparsity tiers, fake-quantized copies...) run on the same
    batch in one pass: the op count is that of one model, so K variants cost far less
    than K passes. feats (B, T, n_mels) and pred_in (B, U+1) shared by the K variants, or
    (K, B, T, n_mels) and (K, B, U+1), one batch each → logits (K, B, T/stack, U+1, V);
    with `parts`, (encoder out (K, B, T/stack, D), predictor out (K, B, U+1, D), logits).
    `q` emulates the int8 kernels (quant.Emulated) where the export graphs run them.
    Equals `build_training_model` for K = 1 and float `q` (`tests/test_model.py`).
    """
    e, p = cfg.encoder, cfg.predictor
    k = tf.shape(params["enc0/kernel"])[0]
    if feats.shape.rank == 3:  # one batch shared by the K variants
        feats = tf.broadcast_to(feats[None], tf.concat([[k], tf.shape(feats)], 0))
        pred_in = tf.broadcast_to(pred_in[None], tf.concat([[k], tf.shape(pred_in)], 0))
    shape = tf.shape(feats)
    x = tf.reshape(q.act("features", feats), [shape[0], shape[1], -1, e.stack * cfg.frontend.n_mels])
    for i in range(e.layers):
        x = _lstm_seq(
            x,
            params[f"enc{i}/kernel"],
            params[f"enc{i}/recurrent_kernel"],
            params[f"enc{i}/bias"],
            e.units,
            e.cell_clip or None,
            q,
            f"enc{i}",
        )
    enc = q.act(
        "enc_proj",
        tf.einsum("kbth,khd->kbtd", x, q.kernel(params["enc_proj/kernel"])) + params["enc_proj/bias"][:, None, None, :],
    )
    y = q.act(
        "pred_embed", tf.gather(q.kernel(params["pred_embed/embeddings"]), pred_in, axis=1, batch_dims=1)
    )  # (K, B, U+1, E)
    y = _lstm_seq(
        y,
        params["pred_lstm/kernel"],
        params["pred_lstm/recurrent_kernel"],
        params["pred_lstm/bias"],
        p.units,
        p.cell_clip or None,
        q,
        "pred_lstm",
    )
    pred = q.act(
        "pred_proj",
        tf.einsum("kbuh,khd->kbud", y, q.kernel(params["pred_proj/kernel"]))
        + params["pred_proj/bias"][:, None, None, :],
    )
    joint = q.tanh(q.act("joint_sum", enc[:, :, :, None, :] + pred[:, :, None, :, :]))
    logits = q.act(
        "logits",
        tf.einsum("kbtud,kdv->kbtuv", joint, q.kernel(params["joint_out/kernel"]))
        + params["joint_out/bias"][:, None, None, None, :],
    )
    return (enc, pred, logits) if parts else logits
