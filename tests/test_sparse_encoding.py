"""Sparse-encoded int8 weights decode like the same weights stored dense.

LiteRT's block-sparse int8 FULLY_CONNECTED kernel (1x16 blocks) decodes a weight whose input width is not a multiple
of the block wrongly; the export stores such weights dense (`export.dense_partial_blocks`)."""

import numpy as np
import pytest

from pipeline._tf import keras
from pipeline.export import convert, dense_partial_blocks, sparse_weight_bytes


def _block_sparse_dense_layer(width, rng):
    m = keras.Sequential([keras.layers.InputLayer((width,), name="x"), keras.layers.Dense(64, name="fc")])
    w, b = m.layers[0].get_weights()
    keep = rng.random((64, -(-width // 16))) < 0.3  # 30% of the (output, 16 inputs) blocks
    mask = np.repeat(keep, 16, axis=1)[:, :width].T
    m.layers[0].set_weights([w * mask * rng.uniform(0.2, 3.0, size=(1, 64)), b])
    return m


def _errors(model_bytes, layer, xs):
    """|int8 output - the exact output of the int8 input| in output LSBs, per output value."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(
        model_content=model_bytes, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (s, z), (sy, zy) = i["quantization"], o["quantization"]
    w, b = layer.get_weights()
    out = []
    for x in xs:
        xq = np.clip(np.round(x / s) + z, -128, 127)
        it.set_tensor(i["index"], xq.astype(np.int8)[None])
        it.invoke()
        exact = np.clip(((xq - z) * s) @ w + b, (-128 - zy) * sy, (127 - zy) * sy) / sy + zy
        out.append(np.abs(it.get_tensor(o["index"])[0].astype(np.float64) - exact))
    return np.concatenate(out)


@pytest.mark.parametrize(("width", "stored_dense"), [(128, 0), (120, 1)])
def test_sparse_encoded_weights_decode_within_one_lsb_of_exact(width, stored_dense):
    rng = np.random.default_rng(0)
    model = _block_sparse_dense_layer(width, rng)
    rep = [{"x": rng.normal(size=(1, width)).astype(np.float32)} for _ in range(50)]
    dense = convert(model, ["x"], ["y"], rep)
    sparse, fixed = dense_partial_blocks(convert(model, ["x"], ["y"], rep, sparse=True), dense, "fc")
    assert fixed == stored_dense
    assert (sparse_weight_bytes(sparse)["values"] > 0) == (stored_dense == 0)  # still sparse where the blocks tile
    xs = rng.normal(size=(20, width)).astype(np.float32)
    for graph in (dense, sparse):
        assert _errors(graph, model.layers[0], xs).max() <= 1.01
