"""Which tiers a target may ship and the figure each budget is checked against (measured, or estimated by Vela)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .cache import Artifact
from .config import ModelConfig
from .export import GRAPHS
from .npu import tool_info
from .targets import TargetProfile
from .tomlconf import to_dict

log = logging.getLogger(__name__)


def candidate_tiers(cfg: ModelConfig, target: TargetProfile, method: str, tier: int | None) -> list[int]:
    """Tiers to try, densest first: the one asked for, or the profile's (default: the model's) for tiered methods."""
    if tier is not None:
        return [cfg.sparsity.check_tier(tier)]
    if method == "dense":
        return [0]
    tiers = [cfg.sparsity.check_tier(t) for t in (target.build.tiers or cfg.sparsity.tiers)]
    return [t for t in tiers if t > 0] if method in ("tfmot", "csp") else tiers


def shipped_encoding(target: TargetProfile, export: Artifact) -> str:
    """`sparse` where the profile allows it, its runtime executes it (LiteRT) and it is smaller; else `dense`."""
    sizes = export.summary["bytes"]
    if target.build.sparse_encoding and target.device.runtime == "litert" and "int8_sparse" in sizes:
        if sum(sizes["int8_sparse"].values()) < sum(sizes["int8"].values()):
            return "sparse"
    return "dense"


def budget_figures(
    target: TargetProfile, cfg: ModelConfig, export_summary: dict[str, Any], verify: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """The figure each budget is checked against, and what it is: measured, or estimated by a named tool."""
    shipped = "int8_sparse" if verify["encoding"] == "sparse" else "int8"
    if verify.get("npu"):
        npu_dir = Path(verify["folder"]) / "npu"
        model = {
            "value": sum((npu_dir / f"{g}_vela.tflite").stat().st_size for g in GRAPHS),
            "basis": "bytes of the three Vela-compiled graphs (flash)",
        }
        rtf = {
            "value": npu_latency(verify, target, cfg)["rtf"],
            "basis": "estimated: Vela performance model, NPU seconds per second of audio",
        }
    else:
        model = {
            "value": sum(export_summary["bytes"][shipped].values()),
            "basis": f"bytes of the three shipped .tflite graphs ({verify['encoding']} weights)",
        }
        rtf = {
            "value": verify["latency"]["decode_rtf"]["p90"],
            "basis": f"measured: host LiteRT decode p90 at {verify['threads']} thread(s)",
        }
    arena = {
        "value": max(verify["tflm_arena_bytes"].values()),
        "basis": "measured: smallest TFLM arena that allocates, largest graph",
    }
    return {"model_bytes": model, "arena_bytes": arena, "rtf": rtf}


def npu_latency(verify: dict[str, Any], target: TargetProfile, cfg: ModelConfig) -> dict[str, Any]:
    """Vela's estimated NPU time per second of audio, using the eval set's invocation counts."""
    stats = verify["latency"]["decode_stats"]
    audio = stats["feature_frames"] * cfg.frontend.hop_ms / 1000
    per_call = {g: verify["npu"][g]["inference_seconds"] for g in GRAPHS}
    calls = {"encoder": stats["encoder_calls"], "predictor": stats["predictor_calls"], "joiner": stats["joiner_calls"]}
    return {
        "estimated": True,
        **tool_info(target.device.npu),
        "seconds_per_invocation": per_call,
        "invocations_per_second_of_audio": {g: calls[g] / audio for g in GRAPHS},
        "encoder_rtf": calls["encoder"] * per_call["encoder"] / audio,
        "rtf": sum(calls[g] * per_call[g] for g in GRAPHS) / audio,
        "basis": "Vela performance model x invocation counts of the greedy decode of test_unseen",
    }


def size_figures(target: TargetProfile, export: Artifact, encoding: str) -> dict[str, dict[str, Any]]:
    """The model_bytes figure of a LiteRT target, known from the export alone (no decoding); {} for TFLM targets,
    whose flash figure is Vela's."""
    if target.device.runtime != "litert":
        return {}
    size = sum(export.summary["bytes"]["int8_sparse" if encoding == "sparse" else "int8"].values())
    return {"model_bytes": {"value": size, "basis": f"bytes of the three shipped .tflite graphs ({encoding} weights)"}}


def over_budget(target: TargetProfile, figures: dict[str, dict[str, Any]], tier: int | None = None) -> str:
    """The budgets `figures` miss, in words ("" when every figure fits)."""
    budgets = to_dict(target.budgets)
    who = f"tier {tier} needs " if tier is not None else ""

    def fmt(x: float) -> str:
        return f"{int(x):,}" if float(x).is_integer() and abs(x) >= 1000 else f"{x:g}"

    return "; ".join(
        f"{k}: limit {fmt(budgets[k])}, {who}{fmt(f['value'])} ({f['basis']})"
        for k, f in figures.items()
        if budgets[k] is not None and f["value"] > budgets[k]
    )
