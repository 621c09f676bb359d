"""The manifest app teams consume: schema, validation, provenance helpers."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from .config import PROJECT_ROOT, ModelConfig
from .errors import ArtifactError
from .frontend import Normalizer, mel_filterbank
from .tokenizer import CharTokenizer

SCHEMA_PATH = Path(__file__).parent / "schemas" / "manifest.schema.json"
SCHEMA_VERSION = "1.3"
TOOLS = (
    "tensorflow",
    "tf-keras",
    "tensorflow-model-optimization",
    "ai-edge-litert",
    "tflite-micro",
    "ethos-u-vela",
    "numpy",
    "jiwer",
)

DECODE_LOOP = (
    "state = initial_value for every state input; pred = predictor(one_hot(start_token), pred state). "
    "For each chunk of chunk_feature_frames normalized feature frames (the frontend's, with its edge_padding_samples "
    "zeros at each end "
    "of the audio; pad the last chunk with last_chunk_pad_value): "
    "run the encoder with the chunk and the encoder states, feed each output state back as the matching input next "
    "chunk. "
    "For each of the chunk's encoder frames that is valid: up to max_symbols_per_frame times, logits = "
    "joiner(encoder_frame, pred); "
    "k = argmax(logits); if k == blank_id stop this frame; else emit k and pred, pred state = predictor(one_hot(k), "
    "pred state). "
    "Quantize every int8 input and dequantize every int8 output with that tensor's scale and zero_point; "
    "state outputs are dequantized with the output's parameters and re-quantized with the input's."
)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate_manifest(manifest: dict[str, Any], source: str = "manifest") -> None:
    """Raise `ArtifactError` naming the first schema violation."""
    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ArtifactError(f"{source} does not match the manifest schema at {where}: {exc.message}") from None


def frontend_section(
    cfg: ModelConfig, norm: Normalizer, edge_padding_samples: int, edge_padding_why: str
) -> dict[str, Any]:
    fe = cfg.frontend
    return {
        "type": "log_mel",
        "sample_rate": fe.sample_rate,
        "pcm_scale": 1 / 32768,
        "edge_padding_samples": edge_padding_samples,
        "edge_padding": edge_padding_why if edge_padding_samples else "none",
        "win_samples": fe.win_samples,
        "hop_samples": fe.hop_samples,
        "n_fft": fe.n_fft,
        "window": "hann_periodic",
        "mel_scale": "htk",
        "n_mels": fe.n_mels,
        "fmin": fe.fmin,
        "fmax": fe.fmax,
        "log": "natural",
        "log_floor": fe.log_floor,
        "mel_filterbank": [[round(float(v), 8) for v in row] for row in mel_filterbank(fe)],
        "mean": list(norm.mean),
        "std": list(norm.std),
        "cmn_prior_frames": norm.prior_frames,
        "formula": schema()["properties"]["frontend"]["description"],
        "reference_implementation": "pipeline/frontend.py: log_mel() then Normalizer",
    }


def tokenizer_section(tok: CharTokenizer) -> dict[str, Any]:
    return {**tok.to_dict(), "text_normalization": "lower-case; runs of white space become one space; strip"}


def tool_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str | None:
    """HEAD of the project's checkout (suffixed `+dirty` if the tree has changes), or None."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "pipeline", "models", "targets", "calibration"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def code_sha256() -> str:
    """sha256 of the package's source (and schema): the `code` part of every cache key."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".json") and "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine(), "os": platform.system()}
