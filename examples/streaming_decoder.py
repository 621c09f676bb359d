"""Reference decoder for the pipeline's int8 artifacts: copy this file into your app.

It knows only `manifest.json` and the three `.tflite` files beside it (see docs/manifest.md, the contract it
follows) and needs NumPy and `ai-edge-litert`. Audio goes in as it arrives, in chunks of any size; words come out as
soon as the encoder has seen them:

    decoder = StreamingDecoder("dist/phone")
    for block in microphone_blocks():          # float samples in [-1, 1], mono, manifest frontend.sample_rate
        print(decoder.accept(block))           # the words so far
    print(decoder.finish())                    # the final words; then decoder.reset() for the next utterance

or, for a 16-bit mono WAV file at the model's rate: `python streaming_decoder.py dist/phone speech.wav`.

Without the manifest, `StreamingDecoder.from_graphs(folder)` reads the same contract from the `pipeline_contract`
metadata every shipped .tflite carries (zlib-compressed JSON in the flatbuffer's metadata list).

A switchable package (`pipeline build --switchable`: every sparsity tier of one model) loads with
`SwitchableDecoder(folder, tier)`; `set_tier(t)` switches between utterances or mid-stream
(`python streaming_decoder.py dist/phone --tier 70 speech.wav`).

The watch target's graphs run the same way in TFLite Micro (same tensors, same arithmetic); this file uses LiteRT.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
import sys
import wave
import zlib
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


class Graph:
    """One int8 graph: named float inputs in, named float outputs out (quantized with each tensor's own scale and zero
    point as the manifest gives them; `own_quantization`: as the graph itself gives them, e.g. a switchable package's
    tier, whose activation scales are its own)."""

    def __init__(self, model: bytes, spec: dict, resolver: OpResolverType, own_quantization: bool = False) -> None:
        self.model = model  # LiteRT reads the flatbuffer in place: keep it alive as long as the interpreter
        self.it = Interpreter(model_content=model, experimental_op_resolver_type=resolver)
        self.it.allocate_tensors()
        details = {d["name"]: d for d in self.it.get_input_details() + self.it.get_output_details()}

        def tensor(t: dict) -> tuple[dict, int]:
            d = details[t["tensor_name"]]
            if own_quantization:
                scale, zero_point = d["quantization"]
                t = {**t, "dtype": np.dtype(d["dtype"]).name, "scale": scale, "zero_point": zero_point}
            return t, d["index"]

        self.inputs = {t["name"]: tensor(t) for t in spec["inputs"]}
        self.outputs = {t["name"]: tensor(t) for t in spec["outputs"]}

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        for name, (t, idx) in self.inputs.items():
            x = np.asarray(inputs[name], np.float32).reshape(t["shape"])
            if t["dtype"] == "int8":  # round half to even, then saturate
                x = np.clip(np.round(x / t["scale"]) + t["zero_point"], -128, 127).astype(np.int8)
            self.it.set_tensor(idx, x)
        self.it.invoke()
        out = {}
        for name, (t, idx) in self.outputs.items():
            y = self.it.get_tensor(idx)
            out[name] = (y.astype(np.float32) - t["zero_point"]) * t["scale"] if t["dtype"] == "int8" else y
        return out


class Frontend:
    """The manifest's `frontend.formula`, frame by frame: frames depend only on their own samples and the running
    mean only on earlier frames, so features computed as audio streams in equal the whole utterance's."""

    def __init__(self, fe: dict) -> None:
        self.fe = fe
        self.win, self.hop = fe["win_samples"], fe["hop_samples"]
        self.window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(self.win) / self.win)  # periodic Hann
        self.fbank = np.array(fe["mel_filterbank"], np.float64)
        self.mean, self.std = np.array(fe["mean"], np.float64), np.array(fe["std"], np.float64)
        self.prior = fe["cmn_prior_frames"]
        self.reset()

    def reset(self) -> None:
        self.samples = np.zeros(self.fe["edge_padding_samples"])  # the leading zeros of the contract
        self.sum = self.prior * self.mean
        self.frames = 0

    def accept(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        """Features of every whole frame the audio so far completes (`last`: the trailing zeros are added first)."""
        parts = [self.samples, np.asarray(samples, np.float64)]
        if last:
            parts.append(np.zeros(self.fe["edge_padding_samples"]))
        x = np.concatenate(parts)
        n = 0 if len(x) < self.win else 1 + (len(x) - self.win) // self.hop  # frontend.frame_count
        if n == 0:
            self.samples = x
            return np.zeros((0, len(self.mean)), np.float32)
        frames = np.stack([x[i * self.hop : i * self.hop + self.win] * self.window for i in range(n)])
        spec = np.abs(np.fft.rfft(frames, n=self.fe["n_fft"], axis=1)) ** 2
        logmel = np.log(np.maximum(spec @ self.fbank.T, self.fe["log_floor"]))
        if self.prior:  # running mean: the training mean counted as `prior` frames, then every frame so far
            counts = self.prior + self.frames + np.arange(1, n + 1)[:, None]
            mean = (self.sum + np.cumsum(logmel, axis=0)) / counts
            self.sum = self.sum + logmel.sum(axis=0)
        else:
            mean = self.mean
        self.frames += n
        self.samples = x[n * self.hop :]
        return ((logmel - mean) / self.std).astype(np.float32)


def _field(buf: bytes, table: int, index: int) -> int | None:
    """Position of field `index` of the flatbuffer table at `table`, or None if it is absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    if 4 + 2 * index >= struct.unpack_from("<H", buf, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", buf, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _ref(buf: bytes, pos: int) -> int:
    return pos + struct.unpack_from("<I", buf, pos)[0]


def _vector(buf: bytes, pos: int) -> tuple[int, int]:
    start = _ref(buf, pos)
    return start + 4, struct.unpack_from("<I", buf, start)[0]


def read_contract(path: Path, name: str = "pipeline_contract") -> dict | None:
    """The decode contract a .tflite carries: TFLite schema Model.metadata (field 6) entry `name` -> Model.buffers
    (field 4) [its buffer] .data, zlib-compressed JSON. None if the file has no such entry."""
    buf = Path(path).read_bytes()
    model = _ref(buf, 0)
    metadata = _field(buf, model, 6)
    if metadata is None:
        return None
    start, count = _vector(buf, metadata)
    for i in range(count):
        entry = _ref(buf, start + 4 * i)
        text, length = _vector(buf, _field(buf, entry, 0))
        if buf[text : text + length].decode() == name:
            buffers, _ = _vector(buf, _field(buf, model, 4))
            table = _ref(buf, buffers + 4 * struct.unpack_from("<I", buf, _field(buf, entry, 1))[0])
            data, size = _vector(buf, _field(buf, table, 0))
            return json.loads(zlib.decompress(buf[data : data + size]))
    return None


def manifest_from_graphs(folder: Path) -> dict:
    """A manifest's decode part rebuilt from the .tflite files of `folder` alone: the contract each carries, and every
    tensor's shape, dtype, scale and zero point from the graph itself."""
    m: dict = {"graphs": {}}
    for path in sorted(Path(folder).glob("*.tflite")):
        contract = read_contract(path)
        if contract is None:
            continue
        it = Interpreter(model_path=str(path))
        details = {d["name"]: d for d in it.get_input_details() + it.get_output_details()}

        def spec(t: dict, details: dict = details) -> dict:
            d = details[t["tensor_name"]]
            scale, zero_point = d["quantization"]
            dtype = np.dtype(d["dtype"]).name
            return {
                **t,
                "shape": [int(x) for x in d["shape"]],
                "dtype": dtype,
                "scale": scale,
                "zero_point": zero_point,
            }

        m["graphs"][contract["graph"]] = {
            "file": path.name,
            "inputs": [spec(t) for t in contract["inputs"]],
            "outputs": [spec(t) for t in contract["outputs"]],
        }
        m["schema_version"] = contract["schema_version"]
        m["model"] = {"sparsity": {"litert_op_resolver": contract["litert_op_resolver"]}}
        for section in ("frontend", "tokenizer", "streaming", "decode"):
            m[section] = contract[section]
    if set(m["graphs"]) != {"encoder", "predictor", "joiner"}:
        raise SystemExit(f"{folder}: no encoder, predictor and joiner .tflite carrying a pipeline_contract.")
    return m


SUPPORTED = {  # the rules this decoder implements; a manifest asking for another is refused, not misread
    ("decode", "argmax_ties"): "lowest_index",
    ("decode", "start_replaces_state"): True,
    ("decode", "between_graphs"): "dequantize_then_quantize",
    ("streaming", "stacking"): "in_encoder_graph",
    ("frontend", "window"): "hann_periodic",
    ("frontend", "spectrum"): "power",
}


class StreamingDecoder:
    def __init__(self, folder: str | Path, manifest: dict | None = None) -> None:
        self.folder = Path(folder)
        self.m = manifest if manifest is not None else json.loads((self.folder / "manifest.json").read_text())
        if not str(self.m.get("schema_version", "")).startswith("2."):
            raise SystemExit(f"{folder}: schema {self.m.get('schema_version')}; this decoder follows schema 2.x.")
        for (section, key), value in SUPPORTED.items():
            if self.m[section][key] != value:
                raise SystemExit(f"{folder}: {section}.{key} is {self.m[section][key]!r}; this decoder does {value!r}.")
        self.resolver = getattr(OpResolverType, self.m["model"]["sparsity"].get("litert_op_resolver", "AUTO"))
        self.graphs = {
            n: Graph((self.folder / g["file"]).read_bytes(), g, self.resolver) for n, g in self.m["graphs"].items()
        }
        self.frontend = Frontend(self.m["frontend"])
        self.st, self.dec, self.tok = self.m["streaming"], self.m["decode"], self.m["tokenizer"]
        self.shapes = {t["name"]: t["shape"] for g in self.m["graphs"].values() for t in g["inputs"]}
        self.reset()

    @classmethod
    def from_graphs(cls, folder: str | Path) -> StreamingDecoder:
        """A decoder from the .tflite files alone (no manifest.json): the contract inside each graph."""
        return cls(folder, manifest_from_graphs(Path(folder)))

    def reset(self) -> None:
        """Ready for a new utterance: states at their initial values, the predictor run once on `start_token`."""
        self.frontend.reset()
        self.states = {
            s["input"]: np.full(self.shapes[s["input"]], s["initial_value"], np.float32) for s in self.st["states"]
        }
        self.pending = np.zeros((0, len(self.frontend.mean)), np.float32)  # feature frames not yet encoded
        self.features_seen = 0
        self.encoder_frames_done = 0
        self.emitted: list[int] = []
        self.started = False  # no audio of this utterance yet
        self.pred = self._predictor(self.dec["start_token"])

    def _states_of(self, graph: str) -> list[dict]:
        return [s for s in self.st["states"] if s["graph"] == graph]

    def _predictor(self, k: int) -> np.ndarray:
        """Run the predictor on token k (one-hot); its output and state replace the previous ones."""
        role = self.dec["predictor"]
        onehot = np.zeros((1, len(self.tok["vocab"])), np.float32)  # token_encoding one_hot
        onehot[0, k] = 1.0
        states = self._states_of("predictor")
        out = self.graphs["predictor"](
            **{role["token"]: onehot}, **{s["input"]: self.states[s["input"]] for s in states}
        )
        for s in states:
            self.states[s["input"]] = out[s["output"]]
        return out[role["output"]]

    def _encode(self, chunk: np.ndarray, valid_frames: int) -> None:
        """One encoder call on `chunk_feature_frames` frames; greedy search over its first `valid_frames` frames."""
        states, enc, join = self._states_of("encoder"), self.dec["encoder"], self.dec["joiner"]
        out = self.graphs["encoder"](
            **{enc["features"]: chunk[None]}, **{s["input"]: self.states[s["input"]] for s in states}
        )
        for s in states:
            self.states[s["input"]] = out[s["output"]]
        for frame in out[enc["output"]][0][:valid_frames]:
            for _ in range(self.dec["max_symbols_per_frame"]):
                logits = self.graphs["joiner"](
                    **{join["encoder_frame"]: frame[None], join["predictor_output"]: self.pred}
                )
                k = int(np.argmax(logits[join["logits"]]))  # argmax_ties lowest_index: NumPy returns the first
                if k == self.tok["blank_id"]:
                    break
                self.emitted.append(k)
                self.pred = self._predictor(k)
        self.encoder_frames_done += valid_frames

    def _words(self) -> str:
        return " ".join("".join(self.tok["vocab"][k] for k in self.emitted).split())

    def accept(self, samples: np.ndarray) -> str:
        """Feed audio (float, [-1, 1], mono, at `frontend.sample_rate`); returns the words so far."""
        self.started = True
        feats = self.frontend.accept(samples)
        self.features_seen += len(feats)
        self.pending = np.concatenate([self.pending, feats])
        c = self.st["chunk_feature_frames"]
        while len(self.pending) >= c:
            self._encode(self.pending[:c], self.st["encoder_frames_per_chunk"])
            self.pending = self.pending[c:]
        return self._words()

    def finish(self) -> str:
        """End of the utterance: the trailing zeros, the last chunk padded with `last_chunk_pad_value`, and only the
        encoder frames the audio fills (ceil(feature frames / stack) in all)."""
        feats = self.frontend.accept(np.zeros(0), last=True)
        self.features_seen += len(feats)
        self.pending = np.concatenate([self.pending, feats])
        c = self.st["chunk_feature_frames"]
        valid_total = math.ceil(self.features_seen / self.st["stack"])
        while len(self.pending):  # the trailing zeros may complete a chunk, and leave a part of one
            chunk = np.full((c, self.pending.shape[1]), self.st["last_chunk_pad_value"], np.float32)
            take = self.pending[:c]
            chunk[: len(take)] = take
            self.pending = self.pending[len(take) :]
            frames = min(self.st["encoder_frames_per_chunk"], valid_total - self.encoder_frames_done)
            self._encode(chunk, frames)
        return self._words()


def apply_patch(base: bytes, patch_file: Path) -> bytes:
    """A tier's graph from the base graph and its patch (manifest `switching.patch_format`): zero the bytes the `zero`
    bit map marks, then XOR with `xor`."""
    with np.load(patch_file, allow_pickle=False) as p:
        zero, xor = p["zero"], p["xor"]
    out = np.frombuffer(base, np.uint8).copy()
    if xor.shape != out.shape or len(zero) != (len(out) + 7) // 8:
        raise SystemExit(f"{patch_file} does not fit its base graph ({len(out)} bytes).")
    out[np.unpackbits(zero, count=len(out)).astype(bool)] = 0
    out ^= xor
    return out.tobytes()


class SwitchableDecoder(StreamingDecoder):
    """A switchable package (manifest `switching`): every tier of one model, switched with `set_tier`.

    Between utterances, or mid-stream: `set_tier` takes effect at the next encoder call (a chunk boundary). The
    recurrent states and the last predictor output are kept as floats and carry over; the new tier quantizes them
    with its own input scales, as it does every value that crosses graphs. A tier's graphs are built from the base
    graphs and its patches when first asked for and kept (`cache=False`: rebuilt at every switch, least memory)."""

    def __init__(self, folder: str | Path, tier: int | None = None, cache: bool = True) -> None:
        super().__init__(folder)
        if "switching" not in self.m:
            raise SystemExit(f"{folder}: not a switchable package (its manifest has no `switching`).")
        self.sw = self.m["switching"]
        self.base = {name: g.model for name, g in self.graphs.items()}
        self.cache = cache
        self.built: dict[int, dict[str, Graph]] = {self.sw["base_tier"]: self.graphs}
        self.tier = self.sw["base_tier"]
        if tier is not None:
            self.set_tier(tier)

    @property
    def tiers(self) -> list[int]:
        return [t["tier"] for t in self.sw["tiers"]]

    def _graphs_of(self, tier: int) -> dict[str, Graph]:
        if tier in self.built:
            return self.built[tier]
        entry = next((t for t in self.sw["tiers"] if t["tier"] == tier), None)
        if entry is None:
            raise ValueError(f"tier {tier} is not in this package (tiers {self.tiers}).")
        graphs = {}
        for name, spec in self.m["graphs"].items():
            data = apply_patch(self.base[name], self.folder / entry["patches"][name]["file"])
            if hashlib.sha256(data).hexdigest() != entry["graph_sha256"][name]:
                raise SystemExit(f"{self.folder}: tier {tier}'s {name} graph does not match its graph_sha256.")
            graphs[name] = Graph(data, spec, self.resolver, own_quantization=True)
        if self.cache:
            self.built[tier] = graphs
        return graphs

    def reset(self) -> None:
        self.history: list[np.ndarray] = []  # the utterance's encoder inputs so far, to rebuild states at a switch
        super().reset()

    def _encode(self, chunk: np.ndarray, valid_frames: int) -> None:
        self.history.append(chunk)
        super()._encode(chunk, valid_frames)

    def set_tier(self, tier: int, carry: str = "rebuild") -> None:
        """Decode with `tier` from the next chunk on. Before the first audio of an utterance (just after `reset`) it
        is a switch between utterances: the utterance starts afresh at `tier`.

        Mid-stream, the words so far stay, and `carry` says what the new tier starts from: "rebuild" (default) runs
        the new tier's encoder over the utterance's chunks so far and its predictor over `start_token` and the emitted
        symbols, so its states are the ones it would have had decoding the whole utterance with these symbols (time
        grows with the audio so far: one encoder call per chunk); "states" hands the old tier's states and predictor
        output over as they are (no extra work; a tier far sparser than the old one may then misread them)."""
        self.graphs = self._graphs_of(tier)
        self.tier = tier
        if not self.started:
            self.reset()
            return
        if carry == "states":
            return
        if carry != "rebuild":
            raise ValueError(f"carry must be 'rebuild' or 'states', got {carry!r}.")
        enc = self._states_of("encoder")
        for s in self._states_of("encoder") + self._states_of("predictor"):
            self.states[s["input"]] = np.full(self.shapes[s["input"]], s["initial_value"], np.float32)
        for chunk in self.history:
            out = self.graphs["encoder"](
                **{self.dec["encoder"]["features"]: chunk[None]}, **{s["input"]: self.states[s["input"]] for s in enc}
            )
            for s in enc:
                self.states[s["input"]] = out[s["output"]]
        self.pred = self._predictor(self.dec["start_token"])
        for k in self.emitted:
            self.pred = self._predictor(k)


def read_wav(path: str | Path, sample_rate: int) -> np.ndarray:
    """An integer-PCM WAV at `sample_rate` as floats, by frontend.audio's rules: channels averaged, b-bit samples
    divided by 2^(b-1) (8-bit WAV is unsigned: 128 subtracted first). Other rates: resample first as
    frontend.audio.resampling says (scipy.signal.resample_poly), which this NumPy-only file does not do."""
    with wave.open(str(path), "rb") as wf:
        width, channels, rate = wf.getsampwidth(), wf.getnchannels(), wf.getframerate()
        raw = np.frombuffer(wf.readframes(wf.getnframes()), np.uint8)
    if rate != sample_rate:
        raise SystemExit(f"{path}: {rate} Hz; resample it to {sample_rate} Hz first (frontend.audio.resampling).")
    if width == 1:
        x = raw.astype(np.float64) - 128.0
    else:  # little-endian signed: widen each sample to 4 bytes, its bytes in the top of an int32
        padded = np.zeros((len(raw) // width, 4), np.uint8)
        padded[:, 4 - width :] = raw.reshape(-1, width)
        x = padded.view("<i4").reshape(-1).astype(np.float64) / 2.0 ** (32 - 8 * width)
    return (x / 2.0 ** (8 * width - 1)).reshape(-1, channels).mean(axis=1)


if __name__ == "__main__":
    args = sys.argv[1:]
    tier = None
    if "--tier" in args:  # a tier of a switchable package
        i = args.index("--tier")
        tier = int(args[i + 1])
        del args[i : i + 2]
    if len(args) < 2:
        raise SystemExit("usage: python streaming_decoder.py DIST_FOLDER [--tier N] FILE.wav [FILE.wav ...]")
    decoder = StreamingDecoder(args[0]) if tier is None else SwitchableDecoder(args[0], tier)
    for wav in args[1:]:
        decoder.reset()
        audio = read_wav(wav, decoder.m["frontend"]["sample_rate"])
        for start in range(0, len(audio), 1600):  # as if it arrived in blocks
            decoder.accept(audio[start : start + 1600])
        print(f"{wav}\t{decoder.finish()}")
