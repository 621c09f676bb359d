"""A decoder that knows only `manifest.json` and the .tflite files: what an app team writes.

Deliberately imports nothing from `pipeline`: every number comes from the manifest.
"""

from __future__ import annotations

import json
import math
import wave
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


class ManifestDecoder:
    def __init__(self, dist: Path) -> None:
        self.dist = Path(dist)
        self.m = json.loads((self.dist / "manifest.json").read_text())
        self.graphs = {}
        resolver = getattr(OpResolverType, self.m["model"]["sparsity"]["litert_op_resolver"])
        for name, g in self.m["graphs"].items():
            it = Interpreter(model_path=str(self.dist / g["file"]), experimental_op_resolver_type=resolver)
            it.allocate_tensors()
            by_name = {d["name"]: d["index"] for d in it.get_input_details() + it.get_output_details()}
            self.graphs[name] = (
                it,
                {t["name"]: (t, by_name[t["tensor_name"]]) for t in g["inputs"]},
                {t["name"]: (t, by_name[t["tensor_name"]]) for t in g["outputs"]},
            )

    # frontend, exactly as the manifest's formula says
    def features(self, wav_path: Path) -> np.ndarray:
        fe = self.m["frontend"]
        with wave.open(str(wav_path), "rb") as wf:
            assert wf.getframerate() == fe["sample_rate"] and wf.getsampwidth() == 2 and wf.getnchannels() == 1
            x = np.frombuffer(wf.readframes(wf.getnframes()), "<i2").astype(np.float64) * fe["pcm_scale"]
        edge = np.zeros(fe.get("edge_padding_samples", 0))  # absent before schema 1.2: none
        x = np.concatenate([edge, x, edge])
        win, hop = fe["win_samples"], fe["hop_samples"]
        n = 1 + (len(x) - win) // hop
        window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
        frames = np.stack([x[i * hop : i * hop + win] * window for i in range(n)])
        spec = np.abs(np.fft.rfft(frames, n=fe["n_fft"], axis=1)) ** 2
        mel = spec @ np.array(fe["mel_filterbank"]).T
        logmel = np.log(np.maximum(mel, fe["log_floor"]))
        mean, prior = np.array(fe["mean"]), fe.get("cmn_prior_frames", 0)  # absent in schema 1.0: 0
        if prior:  # the running mean of the utterance so far, the training mean counted as `prior` frames
            mean = (prior * mean + np.cumsum(logmel, axis=0)) / (prior + np.arange(1, len(logmel) + 1)[:, None])
        return ((logmel - mean) / np.array(fe["std"])).astype(np.float32)

    def run(self, graph: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        it, ins, outs = self.graphs[graph]
        for name, (t, idx) in ins.items():
            x = np.asarray(inputs[name], np.float32).reshape(t["shape"])
            q = (
                np.clip(np.round(x / t["scale"]) + t["zero_point"], -128, 127).astype(np.int8)
                if t["dtype"] == "int8"
                else x
            )
            it.set_tensor(idx, q)
        it.invoke()
        return {
            name: (it.get_tensor(idx).astype(np.float32) - t["zero_point"]) * t["scale"]
            if t["dtype"] == "int8"
            else it.get_tensor(idx)
            for name, (t, idx) in outs.items()
        }

    def decode(self, wav_path: Path) -> str:
        m, st, dec, tok = self.m, self.m["streaming"], self.m["decode"], self.m["tokenizer"]
        feats = self.features(wav_path)
        vocab = len(tok["vocab"])
        c = st["chunk_feature_frames"]
        n_chunks = max(1, math.ceil(len(feats) / c))
        padded = np.full((n_chunks * c, feats.shape[1]), st["last_chunk_pad_value"], np.float32)
        padded[: len(feats)] = feats
        shapes = {t["name"]: t["shape"] for g in m["graphs"].values() for t in g["inputs"]}
        states = {s["input"]: np.full(shapes[s["input"]], s["initial_value"], np.float32) for s in st["states"]}
        enc_states = [s for s in st["states"] if s["graph"] == "encoder"]
        pred_states = [s for s in st["states"] if s["graph"] == "predictor"]

        def predictor(k: int) -> np.ndarray:
            onehot = np.zeros((1, vocab), np.float32)
            onehot[0, k] = 1
            out = self.run("predictor", token=onehot, **{s["input"]: states[s["input"]] for s in pred_states})
            for s in pred_states:
                states[s["input"]] = out[s["output"]]
            return out[dec["predictor_output"]]

        pred = predictor(dec["start_token"])
        valid = math.ceil(len(feats) / st["stack"])
        done, emitted = 0, []
        for i in range(n_chunks):
            out = self.run(
                "encoder",
                features=padded[None, i * c : (i + 1) * c],
                **{s["input"]: states[s["input"]] for s in enc_states},
            )
            for s in enc_states:
                states[s["input"]] = out[s["output"]]
            for frame in out[dec["encoder_output"]][0]:
                if done == valid:
                    break
                done += 1
                for _ in range(dec["max_symbols_per_frame"]):
                    k = int(
                        np.argmax(
                            self.run("joiner", encoder_frame=frame[None], predictor_out=pred)[dec["joiner_output"]]
                        )
                    )
                    if k == tok["blank_id"]:
                        break
                    emitted.append(k)
                    pred = predictor(k)
        return " ".join("".join(tok["vocab"][k] for k in emitted).split())
