"""Run one exported graph in a real runtime: LiteRT (ai-edge-litert) or TFLM (tflite-micro).

Every graph is called with float arrays by signature name and returns float arrays
by signature name; int8 graphs are quantized/dequantized at the boundary exactly as
the manifest tells app teams to:

    q = clip(round(x / scale) + zero_point, -128, 127)      x = (q - zero_point) * scale
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import ArtifactError


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph, as the manifest records it."""

    name: str  # signature name
    tensor_name: str  # name inside the flatbuffer
    index: int  # position among the subgraph's inputs (or outputs): TFLM's index
    shape: tuple[int, ...]
    dtype: str  # "int8" | "float32"
    scale: float
    zero_point: int

    def quantize(self, x: np.ndarray) -> np.ndarray:
        if self.dtype == "float32":
            return np.asarray(x, np.float32).reshape(self.shape)
        q = np.round(np.asarray(x, np.float32) / self.scale) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8).reshape(self.shape)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        if self.dtype == "float32":
            return np.asarray(q, np.float32)
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "tensor_name": self.tensor_name,
            "index": self.index,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "scale": self.scale,
            "zero_point": self.zero_point,
        }

    @classmethod
    def from_dict(cls, d: dict) -> TensorSpec:
        return cls(
            d["name"],
            d["tensor_name"],
            int(d["index"]),
            tuple(d["shape"]),
            d["dtype"],
            float(d["scale"]),
            int(d["zero_point"]),
        )


class Graph(Protocol):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]: ...


def _litert_interpreter(model: bytes, threads: int, xnnpack: bool):  # noqa: ANN202
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs = {} if xnnpack else {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    try:
        it = Interpreter(model_content=model, num_threads=threads, **kwargs)
        it.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(f"LiteRT cannot load the model ({str(exc).splitlines()[0]}).") from None
    return it


def describe(model: bytes) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Signature inputs and outputs of a .tflite flatbuffer, in subgraph order."""
    it = _litert_interpreter(model, 1, xnnpack=False)
    sigs = it.get_signature_list()
    if len(sigs) != 1:
        raise ArtifactError(f"expected one signature in the model, found {list(sigs)}.")
    (key,) = sigs
    runner = it.get_signature_runner(key)

    def specs(sig_details: dict, ordered: list[dict]) -> list[TensorSpec]:
        pos = {d["index"]: i for i, d in enumerate(ordered)}
        by_index = {d["index"]: d for d in ordered}
        out = []
        for name, d in sig_details.items():
            full = by_index[d["index"]]
            scale, zp = full["quantization"]
            out.append(
                TensorSpec(
                    name,
                    full["name"],
                    pos[d["index"]],
                    tuple(int(s) for s in full["shape"]),
                    np.dtype(full["dtype"]).name,
                    float(scale),
                    int(zp),
                )
            )
        return sorted(out, key=lambda s: s.index)

    return specs(runner.get_input_details(), it.get_input_details()), specs(
        runner.get_output_details(), it.get_output_details()
    )


class LiteRTGraph:
    """A graph in the LiteRT interpreter (XNNPACK by default; built-in kernels for sparse models)."""

    def __init__(self, model: bytes, threads: int = 1, xnnpack: bool = True) -> None:
        self.inputs, self.outputs = describe(model)
        self._it = _litert_interpreter(model, threads, xnnpack)
        by_name = {d["name"]: d["index"] for d in self._it.get_input_details()}
        self._in = [(s, by_name[s.tensor_name]) for s in self.inputs]
        out_by_name = {d["name"]: d["index"] for d in self._it.get_output_details()}
        self._out = [(s, out_by_name[s.tensor_name]) for s in self.outputs]

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        for spec, idx in self._in:
            self._it.set_tensor(idx, spec.quantize(inputs[spec.name]))
        self._it.invoke()
        return {spec.name: spec.dequantize(self._it.get_tensor(idx)) for spec, idx in self._out}


def _tflm_interpreter(model: bytes, arena: int):  # noqa: ANN202
    from tflite_micro.python.tflite_micro import runtime

    return runtime.Interpreter.from_bytes(model, arena_size=arena)


def _tflm_fits(path: Path, arena: int) -> bool:
    """Probe in a child process: TFLM may segfault on a too-small arena."""
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.tflm_probe", str(path), str(arena)], capture_output=True, timeout=300
    )
    return proc.returncode == 0


def tflm_min_arena(path: Path, hi: int = 1 << 24, align: int = 16) -> int:
    """Smallest arena (bytes, multiple of `align`) in which TFLM allocates and invokes the model."""
    if not _tflm_fits(path, hi):
        raise ArtifactError(f"TFLM cannot allocate {path} even with a {hi}-byte arena.")
    lo = 0
    while hi - lo > align:
        mid = (lo + hi) // 2 // align * align
        if _tflm_fits(path, mid):
            hi = mid
        else:
            lo = mid
    return hi


class TFLMGraph:
    """A graph in the TFLite Micro Python interpreter (the watch's runtime)."""

    def __init__(self, model: Path | bytes, arena_size: int, where: str | None = None) -> None:
        """`model`: a .tflite file, or its bytes (`where` names them in errors)."""
        data = model if isinstance(model, bytes) else Path(model).read_bytes()
        self.inputs, self.outputs = describe(data)
        try:
            self._it = _tflm_interpreter(data, arena_size)
        except RuntimeError as exc:
            raise ArtifactError(f"TFLM cannot load {where or model} with a {arena_size}-byte arena ({exc}).") from None

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        for spec in self.inputs:
            self._it.set_input(spec.quantize(inputs[spec.name]), spec.index)
        self._it.invoke()
        return {spec.name: spec.dequantize(self._it.get_output(spec.index)) for spec in self.outputs}


class RecordingGraph:
    """Wraps a graph and hands every input dict to `record` (calibration from real streams)."""

    def __init__(self, graph: Graph, record: Callable[[dict[str, np.ndarray]], None]) -> None:
        self.inputs, self.outputs, self._graph, self._record = graph.inputs, graph.outputs, graph, record

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        self._record({k: np.array(v, np.float32) for k, v in inputs.items()})
        return self._graph(**inputs)
