import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
import numpy as np, tensorflow as tf, tf_keras as keras
from ai_edge_litert.interpreter import Interpreter, OpResolverType

rng = np.random.default_rng(0)
for din in (128, 120):
    m = keras.Sequential([keras.layers.InputLayer((din,)), keras.layers.Dense(64)])
    w, b = m.layers[0].get_weights()
    blocks = rng.random((64, -(-din // 16))) < 0.3
    mask = np.repeat(blocks, 16, axis=1)[:, :din].T
    w = w * mask * rng.uniform(0.2, 3.0, size=(1, 64))
    m.layers[0].set_weights([w, b])
    calib = [rng.normal(size=(1, din)).astype(np.float32) for _ in range(50)]
    xs = rng.normal(size=(20, din)).astype(np.float32)
    for sparse in (False, True):
        c = tf.lite.TFLiteConverter.from_keras_model(m)
        c.optimizations = [tf.lite.Optimize.DEFAULT] + ([tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
        c.representative_dataset = lambda: ([v] for v in calib)
        c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        c.inference_input_type = c.inference_output_type = tf.int8
        data = c.convert()
        it = Interpreter(
            model_content=data, experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
        it.allocate_tensors()
        i, o = it.get_input_details()[0], it.get_output_details()[0]
        (s, z), (sy, zy) = i["quantization"], o["quantization"]
        errs = []
        for x in xs:
            xq = np.clip(np.round(x / s) + z, -128, 127)
            it.set_tensor(i["index"], xq.astype(np.int8)[None])
            it.invoke()
            y = it.get_tensor(o["index"]).astype(np.float64)[0]
            ref = np.clip(((xq - z) * s) @ w + b, (-128 - zy) * sy, (127 - zy) * sy) / sy + zy
            errs.append(np.abs(y - ref))
        e = np.concatenate(errs)
        print(
            f"width {din} {'sparse' if sparse else 'dense '} builtin: |int8 - exact| mean {e.mean():.3f} max {e.max():.2f} LSB (output scale {sy:.4g}, zp {zy})",
            flush=True,
        )
