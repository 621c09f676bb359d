"""Convert the three export graphs to TFLite: float32 reference and full-integer int8.

int8: weights per-channel symmetric, activations per-tensor asymmetric, int8 inputs
and outputs, calibrated from representative inputs recorded by running the float
streaming model on real utterances (so recurrent state ranges are real ones).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._tf import keras, tf
from .config import ModelConfig
from .errors import InternalError
from .model import (
    PREDICTOR_STATE_NAMES,
    build_encoder_export,
    build_joiner_export,
    build_predictor_export,
    encoder_state_names,
)
from .quant import FLOAT, Exported, Tap, range_points

log = logging.getLogger(__name__)

GRAPHS = ("encoder", "predictor", "joiner")
BUILDERS = {"encoder": build_encoder_export, "predictor": build_predictor_export, "joiner": build_joiner_export}


def io_names(cfg: ModelConfig) -> dict[str, tuple[list[str], list[str]]]:
    """Signature input and output names of each graph (outputs of states are `<state>_out`)."""
    enc_states = encoder_state_names(cfg)
    return {
        "encoder": (["features", *enc_states], ["encoder_out", *[f"{s}_out" for s in enc_states]]),
        "predictor": (
            ["token", *PREDICTOR_STATE_NAMES],
            ["predictor_out", *[f"{s}_out" for s in PREDICTOR_STATE_NAMES]],
        ),
        "joiner": (["encoder_frame", "predictor_out"], ["logits"]),
    }


def export_models(
    cfg: ModelConfig, params: dict[str, np.ndarray], ranges: dict[str, np.ndarray] | None = None
) -> dict[str, keras.Model]:
    """The three export graphs; with `ranges` (learned by AAT) each int8 range point carries a FakeQuant op."""
    q = Exported(ranges) if ranges is not None else FLOAT
    # Keras numbers auto-named layers (tf.math.tanh_10...) with process-wide counters, and the
    # names end up in the .tflite: reset them so the same weights always give the same bytes
    keras.backend.clear_session()
    return {g: BUILDERS[g](cfg, params, q) for g in GRAPHS}


def convert(
    model: keras.Model,
    inputs: Sequence[str],
    outputs: Sequence[str],
    representative: list[dict[str, np.ndarray]] | None = None,
    sparse: bool = False,
) -> bytes:
    """Keras export graph → .tflite bytes with signature names `inputs`/`outputs`.

    With `representative` (list of {input name: float array}) the result is full-integer int8.
    With `sparse`, weights with zero blocks are stored sparse-encoded (TFLite
    EXPERIMENTAL_SPARSITY); LiteRT runs them with its built-in kernels only (no XNNPACK),
    TFLM not at all.
    """
    if len(inputs) != len(model.inputs) or len(outputs) != len(model.outputs):
        raise InternalError(
            f"graph {model.name}: {len(model.inputs)} inputs/{len(model.outputs)} outputs, names given for "
            f"{len(inputs)}/{len(outputs)}."
        )
    specs = [tf.TensorSpec(t.shape, t.dtype, name=n) for t, n in zip(model.inputs, inputs)]

    @tf.function(input_signature=specs)
    def serve(*args):  # noqa: ANN202
        result = model(list(args))
        result = result if isinstance(result, (list, tuple)) else [result]
        return {n: r for n, r in zip(outputs, result)}

    conv = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], model)
    if representative is not None:
        if not representative:
            raise InternalError(f"graph {model.name}: empty representative dataset.")

        def gen():  # noqa: ANN202
            for sample in representative:
                yield {k: np.asarray(v, np.float32) for k, v in sample.items()}

        conv.optimizations = [tf.lite.Optimize.DEFAULT] + ([tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
        conv.representative_dataset = gen
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return conv.convert()


def convert_all(
    cfg: ModelConfig,
    params: dict[str, np.ndarray],
    representative: dict[str, list[dict[str, np.ndarray]]] | None = None,
    sparse: bool = False,
    ranges: dict[str, np.ndarray] | None = None,
) -> dict[str, bytes]:
    """All three graphs; int8 when `representative` maps each graph to its samples.

    With `ranges` (point → (min, max) learned by accelerator-aware training) the int8
    activation ranges are those, not the calibrated ones: the converter adopts FakeQuant
    ranges and calibrates only what they do not cover (nothing, for these graphs).
    """
    if (sparse or ranges is not None) and representative is None:
        raise InternalError("sparse encoding and learned ranges apply to the int8 graphs only.")
    models = export_models(cfg, params, ranges)
    names = io_names(cfg)
    out = {}
    for g in GRAPHS:
        log.info(
            "converting %s (%s)", g, ("int8 sparse-encoded" if sparse else "int8") if representative else "float32"
        )
        out[g] = convert(models[g], *names[g], representative[g] if representative else None, sparse)
    return out


def calibrated_ranges(
    cfg: ModelConfig, params: dict[str, np.ndarray], representative: dict[str, list[dict[str, np.ndarray]]]
) -> dict[str, np.ndarray]:
    """Every int8 range point's (min, max) from the converter's representative inputs.

    Post-training calibration gives each tensor the min/max it saw; a range point may name several
    tensors (each unrolled step of a chunk, a state entering and leaving a graph, encoder_out leaving the
    encoder and entering the joiner), and the learned-range export gives them one range: the union of
    theirs (no tensor clips where calibration would not, at a coarser grid). Accelerator-aware training
    starts, and stays, here.
    """
    keras.backend.clear_session()
    names = io_names(cfg)
    per_tensor: dict[str, list[np.ndarray]] = {}  # point → one (min, max) per tensor it names
    for g in GRAPHS:
        tap = Tap()
        model = BUILDERS[g](cfg, params, tap)
        points = [p for p in sorted(tap.taps) if p != "token"]  # the one-hot token has a fixed exact range
        probe = keras.Model(model.inputs, [t for p in points for t in tap.taps[p]])
        # (min, max) of every tapped tensor, reduced inside the graph: one (n, 2) array per sample
        run = tf.function(
            lambda *xs, probe=probe: tf.stack([tf.stack([tf.reduce_min(t), tf.reduce_max(t)]) for t in probe(list(xs))])
        )
        owner = [p for p in points for _ in tap.taps[p]]
        lo, hi = np.full(len(owner), np.inf), np.full(len(owner), -np.inf)
        for sample in representative[g]:
            seen = run(*(tf.constant(np.asarray(sample[n], np.float32)) for n in names[g][0])).numpy()
            lo, hi = np.minimum(lo, seen[:, 0]), np.maximum(hi, seen[:, 1])
        for j, p in enumerate(owner):
            per_tensor.setdefault(p, []).append(np.array([lo[j], hi[j]]))
    missing = sorted(set(range_points(cfg.encoder.layers)) - set(per_tensor))
    if missing:
        raise InternalError(f"range points {missing} are in no export graph.")
    out = {}
    for p in range_points(cfg.encoder.layers):
        r = np.stack(per_tensor[p])
        out[p] = np.array([r[:, 0].min(), r[:, 1].max()], np.float32)
    return out


def dense_partial_blocks(sparse: bytes, dense: bytes, where: str) -> tuple[bytes, int]:
    """`sparse` (a sparse-encoded int8 graph) with every sparse-encoded weight whose blocks do not tile it (a dimension
    not a multiple of the block, e.g. the encoder's 120-wide stacked input in 16-wide blocks) stored dense again, as in
    `dense` (the same graph converted without sparse encoding): LiteRT's block-sparse int8 FULLY_CONNECTED kernel
    decodes those wrongly (measured: up to ~50 LSB off on a 120-wide input where the dense kernel is within 1, exact
    where the width is a multiple of 16). Returns the graph and how many weights were stored dense."""
    from .tflite_meta import fully_connected, load_model, pack_model

    def weights(m: Any) -> list[Any]:
        sg = m.subgraphs[0]
        return [sg.tensors[w] for _, w, _ in fully_connected(m, sg)]

    ms, md = load_model(sparse), load_model(dense)
    ws, wd = weights(ms), weights(md)
    if len(ws) != len(wd) or any(list(a.shape) != list(b.shape) for a, b in zip(ws, wd)):
        raise InternalError(
            f"{where}: the sparse-encoded graph's fully-connected weights do not match the dense one's."
        )
    fixed = 0
    for a, b in zip(ws, wd):
        sp = a.sparsity
        if sp is None or sp.blockMap is None or len(sp.blockMap) == 0:
            continue
        rank = len(a.shape)
        blocks = [(int(d), int(sp.dimMetadata[rank + i].denseSize)) for i, d in enumerate(sp.blockMap)]
        if all(int(a.shape[d]) % size == 0 for d, size in blocks):
            continue
        ms.buffers[a.buffer].data = md.buffers[b.buffer].data
        a.sparsity = None
        fixed += 1
    if not fixed:
        return sparse, 0
    return pack_model(ms, len(sparse) * 2), fixed


def sparse_weight_bytes(model: bytes) -> dict[str, int]:
    """What the sparse-encoded weights of a .tflite cost, read from the flatbuffer: the int8 values
    stored, the bytes of their CSR index arrays (segments + indices), and how many values are nonzero.
    The rest of the file is graph structure (operators, tensor names, quantization parameters)."""
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(model, 0))
    out = {"values": 0, "index": 0, "nonzero": 0, "file": len(model)}
    for t in (t for g in m.subgraphs for t in g.tensors if t.sparsity is not None):
        data = m.buffers[t.buffer].data
        out["values"] += len(data)
        out["nonzero"] += int((data.view(np.int8) != 0).sum())
        for dim in t.sparsity.dimMetadata:
            for arr in (dim.arraySegments, dim.arrayIndices):
                if arr is not None and getattr(arr, "values", None) is not None:
                    out["index"] += int(arr.values.nbytes)
    return out
