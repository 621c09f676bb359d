import sys, hashlib, numpy as np, os
from pathlib import Path
import pipeline
from pipeline._tf import tf
threads = int(sys.argv[1]); tf.config.threading.set_intra_op_parallelism_threads(threads); tf.config.threading.set_inter_op_parallelism_threads(threads)
from dataclasses import replace
from pipeline.config import load_model_config
from pipeline.features import FeatureSet
from pipeline.frontend import Normalizer
from pipeline.tokenizer import CharTokenizer
from pipeline.train import Trainer
rng = np.random.default_rng(0)
tok = CharTokenizer(tuple("abc "))
fs = FeatureSet([rng.normal(size=(int(rng.integers(60, 120)), 40)).astype(np.float32) for _ in range(64)],
                [rng.integers(1, 4, size=5).astype(np.int32) for _ in range(64)], Normalizer((0.0,) * 40, (1.0,) * 40), tok)
cfg = load_model_config(sys.argv[3] if len(sys.argv) > 3 else "large")
cfg = replace(cfg, train=replace(cfg.train, steps=30, checkpoint_every=30, batch_size=16))
r = Trainer(cfg, fs, Path(sys.argv[2])).run()
h = hashlib.sha256(b"".join(r.params[k].tobytes() for k in sorted(r.params))).hexdigest()[:16]
print("threads", threads, "params", h, "loss", r.final_loss)
