"""The device folder `dist/<target>/`: the shipped graphs, the NPU-compiled ones and `manifest.json`, written whole."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from .budgets import budget_figures, npu_latency
from .cache import digest
from .checkpoint import ModelCheckpoint
from .contract import integrity_section
from .data import SYNTH_CAVEAT
from .export import GRAPHS
from .fsutil import atomic_directory, atomic_write_json, sha256_file
from .manifest import (
    SCHEMA_VERSION,
    TOKENS_FILE,
    code_sha256,
    decode_sections,
    git_commit,
    litert_op_resolver,
    rtf_definitions,
    scoring_rules,
    tokens_text,
    tool_versions,
    validate_manifest,
)
from .preflight import Output
from .runtimes import describe
from .stages import EVAL_SPLITS, PreparedData, edge_padding_samples
from .targets import TargetProfile
from .tflite_meta import CONTRACT_METADATA
from .tomlconf import to_dict

log = logging.getLogger(__name__)


def _graph_entry(path: Path) -> dict[str, Any]:
    from ai_edge_litert.interpreter import Interpreter

    data = path.read_bytes()
    inputs, outputs = describe(data)
    ops: dict[str, int] = {}
    for op in Interpreter(model_content=data)._get_ops_details():  # noqa: SLF001 (the only op listing LiteRT offers)
        ops[op["op_name"]] = ops.get(op["op_name"], 0) + 1
    return {
        "file": path.name,
        "bytes": len(data),
        "sha256": sha256_file(path),
        "signature": "serving_default",
        "inputs": [s.to_dict() for s in inputs],
        "outputs": [s.to_dict() for s in outputs],
        "operators": dict(sorted(ops.items())),
        "metadata": CONTRACT_METADATA,
    }


def make_manifest(
    target: TargetProfile,
    ck: ModelCheckpoint,
    graphs: dict[str, dict[str, Any]],
    verify: dict[str, Any],
    corpus: PreparedData,
    export_summary: dict[str, Any],
    train_summary: dict[str, Any],
    aat_gate: dict[str, Any] | None = None,
) -> dict[str, Any]:
    cfg = ck.config
    sp = export_summary["sparsity"]
    sizes = {v: sum(b.values()) for v, b in export_summary["bytes"].items()}
    model_bytes = sum(g["bytes"] for g in graphs.values())
    for g, entry in graphs.items():
        entry["tflm_arena_bytes"] = verify["tflm_arena_bytes"][g]
        if verify.get("npu"):
            entry["npu"] = {"estimated": True, **verify["npu"][g], **entry.pop("npu_file")}
    latency: dict[str, Any] = {
        "host": {
            "measured": True,
            "runtime": f"litert (ai-edge-litert, {verify['litert_kernels']}), int8 artifacts as shipped",
            "threads": verify["threads"],
            "machine": verify["machine"],
            "definitions": rtf_definitions(EVAL_SPLITS[0]),
            **verify["latency"],
        }
    }
    if verify.get("npu") and target.device.npu is not None:
        latency["device"] = npu_latency(verify, target, cfg)
    budgets = to_dict(target.budgets)
    figures = budget_figures(target, cfg, export_summary, verify)
    return {
        "schema_version": SCHEMA_VERSION,
        "target": {
            "name": target.name,
            "runtime": target.device.runtime,
            "description": target.description,
            "threads": verify["threads"],
            "device": to_dict(target.device),
            "budgets": budgets,
            "budget_check": {
                k: {"limit": budgets[k], **f, "ok": budgets[k] is None or f["value"] <= budgets[k]}
                for k, f in figures.items()
            },
        },
        "model": {
            "name": cfg.name,
            "method": ck.meta.get("method", "dense"),
            "tier": export_summary["tier"],
            "parameters": sp["parameters"],
            "nonzero_parameters": sp["nonzero_parameters"],
            "config": cfg.to_dict(),
            "config_sha256": cfg.digest(),
            "sparsity": {
                "prunable_parameters": sp["prunable_parameters"],
                "prunable_nonzero": sp["prunable_nonzero"],
                "sparsity": round(sp["sparsity"], 6),
                "block": list(cfg.sparsity.block),
                "tiers_in_checkpoint": ck.tiers,
                "int8_bytes": {"dense_stored": sizes["int8"], "sparse_encoded": sizes.get("int8_sparse")},
                "shipped_encoding": verify["encoding"],
                "sparse_encoded_weights": _encoded_weights(export_summary.get("sparse_encoded_weights")),
                "litert_op_resolver": litert_op_resolver(verify["encoding"] == "sparse"),
                **({"search": ck.meta["search"]} if "search" in ck.meta else {}),
            },
            "quantization": {
                "scheme": "full-integer int8: weights per output channel symmetric, activations per tensor asymmetric, "
                "int8 inputs and outputs",
                "activation_ranges": export_summary.get("activation_ranges", "calibrated"),
                "accelerator_aware_training": ck.meta.get("aat"),
                "aat_selection": aat_gate,
            },
        },
        **decode_sections(cfg, ck.tokenizer, ck.normalizer, edge_padding_samples(cfg.frontend, corpus.source.kind)),
        "graphs": graphs,
        "evaluation": {
            "data_source": corpus.source.kind,
            **({"caveat": SYNTH_CAVEAT} if corpus.source.kind == "synth" else {}),
            "scoring": scoring_rules(),
            "sets": verify["sets"],
        },
        "latency": latency,
        "memory": {
            "model_bytes": model_bytes,
            "tflm_arena_bytes": verify["tflm_arena_bytes"],
            "tflm_arena_bytes_total": int(sum(verify["tflm_arena_bytes"].values())),
        },
        "build": {
            "tool_versions": tool_versions(),
            "git_commit": git_commit(),
            "config_sha256": cfg.digest(),
            "data_sha256": ck.meta.get("data_sha256", digest(corpus.key)),
            "code_sha256": code_sha256(),
            "calibration": export_summary["calibration"],
            "training": train_summary,
        },
    }


def _encoded_weights(e: dict[str, int] | None) -> dict[str, Any] | None:
    if not e:
        return None
    return {
        "weight_bytes": e["values"],
        "index_bytes": e["index"],
        "nonzero_weights": e["nonzero"],
        "bytes_per_nonzero": round((e["values"] + e["index"]) / max(e["nonzero"], 1), 4),
        "weights_stored_dense": e["stored_dense"],
    }


def device_output(out_dir: Path, target: str) -> Output:
    """The device folder of `target` under `out_dir`, as a folder the build replaces whole."""
    return Output(Path(out_dir) / target, f"device artifacts for target {target}", legacy=is_device_folder)


def is_device_folder(folder: Path) -> bool:
    """Whether `folder` is a device folder an earlier build wrote (its manifest names the build's tool versions)."""
    try:
        m = json.loads((Path(folder) / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(m, dict)
        and "schema_version" in m
        and isinstance(m.get("build"), dict)
        and "tool_versions" in m["build"]
    )


def write_dist(
    out: Output, int8_dir: Path, make: Any, npu_dir: Path | None = None, extra_files: dict[str, bytes] | None = None
) -> Path:
    """Replace `out` atomically with the three graphs (and NPU-compiled graphs), `extra_files` (relative path →
    bytes) and `manifest.json` (written last)."""
    with atomic_directory(out.path, out.holds, out.legacy) as tmp:
        for rel, data in (extra_files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        for g in GRAPHS:
            shutil.copyfile(int8_dir / f"{g}.tflite", tmp / f"{g}.tflite")
        graphs = {g: _graph_entry(tmp / f"{g}.tflite") for g in GRAPHS}
        if npu_dir is not None:
            (tmp / "npu").mkdir()
            for g in GRAPHS:
                f = tmp / "npu" / f"{g}_vela.tflite"
                shutil.copyfile(npu_dir / f.name, f)
                graphs[g]["npu_file"] = {"file": f"npu/{f.name}", "bytes": f.stat().st_size, "sha256": sha256_file(f)}
        manifest = make(graphs)
        (tmp / TOKENS_FILE).write_text(tokens_text(manifest["tokenizer"]), encoding="utf-8")
        manifest["integrity"] = integrity_section(manifest)
        validate_manifest(manifest, f"manifest for {out.path}")
        atomic_write_json(tmp / "manifest.json", manifest)
    return out.path / "manifest.json"
