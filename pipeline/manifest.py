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
from .digits import ConnectRecipe
from .errors import ArtifactError
from .frontend import Normalizer, mel_filterbank
from .tokenizer import CharTokenizer

SCHEMA_PATH = Path(__file__).parent / "schemas" / "manifest.schema.json"
SCHEMA_VERSION = "2.0"
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
    "At the start of an utterance every state input takes its initial_value, then the predictor runs once on "
    "start_token and its output and state outputs replace the initial ones. The frontend's features arrive in chunks "
    "of chunk_feature_frames (the last one filled with last_chunk_pad_value); each chunk is one encoder call, whose "
    "state outputs become its state inputs for the next call. Each of the chunk's encoder frames that is valid "
    "(the first valid_encoder_frames of the utterance) is searched: up to max_symbols_per_frame times, logits = "
    "joiner(encoder frame, predictor output); k = argmax (lowest index on ties); blank: next frame; else emit k and "
    "run the predictor on k (its output and states replace the previous ones). Values cross graphs dequantized and "
    "re-quantized (between_graphs). Words: the emitted symbols joined, split on spaces."
)


def manifest_version_problem(manifest: object) -> str | None:
    """Why a manifest cannot be read as this schema's version (None when it can): a 1.x manifest is refused whole,
    since 2.0 turned its prose into fields a decoder needs."""
    if not isinstance(manifest, dict):
        return "is not a JSON object"
    version = manifest.get("schema_version")
    if isinstance(version, str) and version.startswith("1."):
        return (
            f"is schema {version}, written by an older pipeline; this pipeline reads schema {SCHEMA_VERSION} only "
            "(it names every tensor role, state rule, tie and rounding rule that 1.x left to prose): rebuild the "
            "folder with `pipeline build` (docs/manifest.md, 'From 1.x to 2.0')"
        )
    return None


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text())


def validate_manifest(manifest: dict[str, Any], source: str = "manifest") -> None:
    """Raise `ArtifactError` naming the first schema violation."""
    problem = manifest_version_problem(manifest)
    if problem:
        raise ArtifactError(f"{source} {problem}.")
    try:
        jsonschema.validate(manifest, schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(top level)"
        raise ArtifactError(f"{source} does not match the manifest schema at {where}: {exc.message}") from None


def frontend_section(
    cfg: ModelConfig, norm: Normalizer, edge_padding_samples: int, edge_padding_why: str
) -> dict[str, Any]:
    """The manifest's `frontend`: every step from the app's audio to the encoder's features, each rule a field whose
    meaning the schema gives (constants are the pipeline's own rules, `pipeline/audio.py` and `frontend.py`)."""
    fe = cfg.frontend
    props = schema()["properties"]["frontend"]["properties"]

    def const(name: str) -> Any:
        return props[name]["const"]

    return {
        "type": "log_mel",
        "sample_rate": fe.sample_rate,
        "audio": {
            "channels": "mean",
            "integer_pcm": "divide_by_2^(bits-1)",
            "float_pcm": "as_is",
            "resampling": {
                "method": "polyphase",
                "ratio": "Fraction(sample_rate, source_rate).limit_denominator(1000) = up / down",
                "filter": "kaiser_5.0",
                "reference": "scipy.signal.resample_poly(x, up, down)",
            },
        },
        "edge_padding_samples": edge_padding_samples,
        "edge_padding": edge_padding_why if edge_padding_samples else "none",
        "win_samples": fe.win_samples,
        "hop_samples": fe.hop_samples,
        "frame_count": const("frame_count"),
        "short_audio": const("short_audio"),
        "window": "hann_periodic",
        "n_fft": fe.n_fft,
        "fft_padding": const("fft_padding"),
        "spectrum": const("spectrum"),
        "mel_scale": "htk",
        "n_mels": fe.n_mels,
        "fmin": fe.fmin,
        "fmax": fe.fmax,
        "mel_filterbank": [[round(float(v), 8) for v in row] for row in mel_filterbank(fe)],
        "log": "natural",
        "log_floor": fe.log_floor,
        "mean": list(norm.mean),
        "std": list(norm.std),
        "cmn_prior_frames": norm.prior_frames,
        "normalization": const("normalization"),
        "precision": {"spectrum": "float64", "log_mel": "float32", "normalization": "float64", "features": "float32"},
    }


def tokenizer_section(tok: CharTokenizer) -> dict[str, Any]:
    return {
        **tok.to_dict(),
        "text_normalization": schema()["properties"]["tokenizer"]["properties"]["text_normalization"]["const"],
        "tokens_file": TOKENS_FILE,
    }


TOKENS_FILE = "tokens.txt"
BLANK_SYMBOL, SPACE_SYMBOL = "<blk>", "<space>"


def tokens_text(tokenizer: dict[str, Any]) -> str:
    """`tokens.txt` of a manifest `tokenizer` section: one `symbol id` line per id in order (sherpa-onnx's layout);
    the blank is written `<blk>` and the word separator " " as `<space>`."""
    lines = []
    for i, sym in enumerate(tokenizer["vocab"]):
        lines.append(f"{BLANK_SYMBOL if i == tokenizer['blank_id'] else SPACE_SYMBOL if sym == ' ' else sym} {i}")
    return "\n".join(lines) + "\n"


_EDGE_LO_MS, _EDGE_HI_MS = (round(1000 * s) for s in ConnectRecipe().edge_s)
EDGE_PADDING_WHY = (
    f"every utterance the project trains on has {_EDGE_LO_MS}-{_EDGE_HI_MS} ms of quiet before and after the "
    f"speech, and audio that starts or stops with a word loses that word unless zeros are added; every WER "
    f"in this manifest was measured with them"
)
DECODE_SECTIONS = ("frontend", "tokenizer", "streaming", "decode")


def decode_sections(
    cfg: ModelConfig, tok: CharTokenizer, norm: Normalizer, edge_padding_samples: int
) -> dict[str, dict[str, Any]]:
    """The manifest's `frontend`, `tokenizer`, `streaming` and `decode`: everything a decoder needs besides the
    graphs. The build writes them into the manifest and, with each graph's tensor names, into every .tflite."""
    from .model import PREDICTOR_STATE_NAMES, encoder_state_names  # TensorFlow: imported only when a build needs it

    states = [
        {"graph": "encoder", "input": s, "output": f"{s}_out", "initial_value": 0.0, "update": "every_call"}
        for s in encoder_state_names(cfg)
    ]
    states += [
        {"graph": "predictor", "input": s, "output": f"{s}_out", "initial_value": 0.0, "update": "every_call"}
        for s in PREDICTOR_STATE_NAMES
    ]
    consts = {k: v["const"] for k, v in schema()["properties"]["decode"]["properties"].items() if "const" in v}
    return {
        "frontend": frontend_section(cfg, norm, edge_padding_samples, EDGE_PADDING_WHY),
        "tokenizer": tokenizer_section(tok),
        "streaming": {
            "chunk_feature_frames": cfg.chunk_feature_frames,
            "stack": cfg.encoder.stack,
            "stacking": "in_encoder_graph",
            "encoder_frames_per_chunk": cfg.encoder.chunk_frames,
            "chunk_ms": cfg.chunk_ms,
            "algorithmic_latency_ms": cfg.algorithmic_latency_ms,
            "last_chunk_pad_value": 0.0,
            "valid_encoder_frames": "ceil(frame_count / stack)",
            "states": states,
        },
        "decode": {
            "algorithm": "greedy",
            "max_symbols_per_frame": cfg.decode.max_symbols_per_frame,
            "argmax_ties": consts["argmax_ties"],
            "start_token": tok.blank_id,
            "start_replaces_state": True,
            "encoder": {"features": "features", "output": "encoder_out"},
            "predictor": {
                "token": "token",
                "token_encoding": "one_hot",
                "output": "predictor_out",
                "called": "start_and_each_emitted_symbol",
            },
            "joiner": {"encoder_frame": "encoder_frame", "predictor_output": "predictor_out", "logits": "logits"},
            "between_graphs": consts["between_graphs"],
            "quantize": consts["quantize"],
            "dequantize": consts["dequantize"],
            "arithmetic": consts["arithmetic"],
            "loop": DECODE_LOOP,
        },
    }


def _consts(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v["const"] for k, v in obj["properties"].items() if "const" in v}


def rtf_definitions(timed_set: str) -> dict[str, str]:
    """`latency.host.definitions`: what the host real-time factors time and which audio they count (the schema's
    rules), and the evaluation set whose utterances were timed."""
    host = schema()["properties"]["latency"]["properties"]["host"]["properties"]["definitions"]
    return {**_consts(host), "timed_set": timed_set}


def scoring_rules() -> dict[str, str]:
    """`evaluation.scoring`: how every WER of the manifest is computed."""
    return _consts(schema()["properties"]["evaluation"]["properties"]["scoring"])


def litert_op_resolver(sparse_encoded: bool) -> str:
    """The LiteRT op resolver a graph runs with: sparse-encoded weights need the built-in kernels without XNNPACK."""
    return "BUILTIN_WITHOUT_DEFAULT_DELEGATES" if sparse_encoded else "BUILTIN"


def graph_contract(
    role: str, inputs: list[Any], outputs: list[Any], sections: dict[str, Any], sparse_encoded: bool
) -> dict[str, Any]:
    """What one .tflite carries in its `pipeline_contract` metadata: the schema version, its role, the LiteRT op
    resolver it runs with, the manifest's name and the graph's own tensor name of each input and output, and the
    decode sections."""
    return {
        "schema_version": SCHEMA_VERSION,
        "graph": role,
        "litert_op_resolver": litert_op_resolver(sparse_encoded),
        "inputs": [{"name": t.name, "tensor_name": t.tensor_name} for t in inputs],
        "outputs": [{"name": t.name, "tensor_name": t.tensor_name} for t in outputs],
        **sections,
    }


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
