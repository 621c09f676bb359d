"""The export stage: a trained tier's weights as float32 and int8 .tflite, each int8 graph carrying the decode contract.

Apart from `stages.py` because it writes the manifest's decode sections into the graphs: the training stages' code
digest (everything `stages` imports) must not change when the manifest's code does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .cache import Artifact, StageCache
from .calibrate import CalibrationRecipe
from .checkpoint import ModelCheckpoint
from .codehash import code_digest
from .export import GRAPHS, convert_all, dense_partial_blocks, sparse_weight_bytes
from .manifest import decode_sections, graph_contract
from .runtimes import describe
from .sparsity import sparsity_of
from .stages import PreparedData, _calibration_features, edge_padding_samples, representative
from .tflite_meta import stamp


def stage_export(
    cache: StageCache, trained: Artifact, corpus: PreparedData, recipe: CalibrationRecipe, tier: int = 0
) -> Artifact:
    """float32 and int8 .tflite of one tier's weights; int8 calibrated per `recipe`; for a sparse
    tier also the int8 graphs sparse-encoded (`int8_sparse/`)."""
    key = {
        "train": trained.key,
        "calibration": recipe.to_dict(),
        "tier": tier,
        "code": code_digest(stage_export, "export_stage"),
    }

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(trained.folder)
        cfg = ck.config
        params = ck.tier_params(tier)
        floats, rep = representative(ck, params, _calibration_features(corpus, recipe, ck), recipe)
        ranges = ck.tier_ranges(tier)  # learned by AAT: the converter takes them instead of calibrating
        variants = {"float32": floats, "int8": convert_all(cfg, params, rep, ranges=ranges)}
        stored_dense = 0
        if tier > 0:
            variants["int8_sparse"] = {}
            for g, b in convert_all(cfg, params, rep, sparse=True, ranges=ranges).items():
                variants["int8_sparse"][g], n = dense_partial_blocks(b, variants["int8"][g], g)
                stored_dense += n
        # every int8 graph carries the decode contract (the manifest's decode sections and its own tensors' names)
        sections = decode_sections(
            cfg, ck.tokenizer, ck.normalizer, edge_padding_samples(cfg.frontend, corpus.source.kind)
        )
        for variant in [v for v in variants if v.startswith("int8")]:
            variants[variant] = {
                g: stamp(b, graph_contract(g, *describe(b), sections, variant == "int8_sparse"))
                for g, b in variants[variant].items()
            }
        for variant, graphs in variants.items():
            (tmp / variant).mkdir()
            for g in GRAPHS:
                (tmp / variant / f"{g}.tflite").write_bytes(graphs[g])
        encoded = None
        if "int8_sparse" in variants:
            per = [sparse_weight_bytes(b) for b in variants["int8_sparse"].values()]
            encoded = {k: sum(p[k] for p in per) for k in ("values", "index", "nonzero")}
            encoded["stored_dense"] = stored_dense
        return {
            "calibration": {**recipe.to_dict(), "samples": {g: len(v) for g, v in rep.items()}},
            "tier": tier,
            "sparse_encoded_weights": encoded,
            "activation_ranges": "learned (accelerator-aware training)" if ranges is not None else "calibrated",
            "sparsity": sparsity_of(params, cfg.sparsity),
            "bytes": {v: {g: len(b) for g, b in graphs.items()} for v, graphs in variants.items()},
        }

    return cache.run("export", key, run)
