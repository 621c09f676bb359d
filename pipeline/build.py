"""`build()`: data → features → train → export → verify → manifest, each stage cached.

Each stage is a typed function from artifacts to artifacts; this driver runs them in
order, keys each on (config + data + code), and checks the invariants between them
by raising. The device folder `dist/<target>/` is replaced atomically, manifest last.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .budgets import budget_figures, candidate_tiers, over_budget, shipped_encoding, size_figures
from .cache import Artifact, StageCache
from .calibrate import load_calibration_recipe
from .checkpoint import ModelCheckpoint
from .config import ModelConfig, load_model_config
from .data import DEV_SPLIT, DataOptions
from .dist import device_output, make_manifest, write_dist
from .errors import BudgetError, ConfigError
from .evaluate import stage_verify
from .export_stage import stage_export
from .gate import aat_or_ptq, check_gate_split
from .methods import check_method
from .stages import PreparedData, begin, stage_corpus, stage_features, stage_train
from .targets import TargetProfile, load_target, target_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildPaths:
    out_dir: Path = Path("dist")
    work_dir: Path = Path(".pipeline")


def build_target(
    cache: StageCache,
    target: TargetProfile,
    cfg: ModelConfig,
    method: str,
    tiers: list[int],
    corpus: PreparedData,
    feats: Artifact,
    steps: int | None,
    out_dir: Path,
    aat: bool = False,
) -> Path:
    """The densest of `tiers` whose artifacts meet every budget of `target` → `out_dir/<target>/`;
    with `aat`, also fine-tuned by accelerator-aware training, each tier shipping AAT's int8 graphs or the checkpoint's
    post-training-quantized ones as `[aat] gate` chooses on a held-out split (`gate.aat_or_ptq`)."""
    recipe = load_calibration_recipe(target.build.calibration)
    if aat:
        check_gate_split(cfg, corpus)
    tried: list[tuple[int, dict[str, dict[str, Any]]]] = []
    exported: dict[int, int] = {}  # tier -> shipped bytes, for the search's byte model
    for tier in tiers:
        trained = stage_train(cache, cfg, feats, steps, method=method, tier=tier)
        export = stage_export(cache, trained, corpus, recipe, tier)
        gate = None
        if aat:
            trained, export, gate = aat_or_ptq(cache, cfg, feats, trained, export, corpus, recipe, tier)
        encoding = shipped_encoding(target, export)
        figures = size_figures(target, export, encoding)  # known from the export alone: no decoding for a tier too big
        if "model_bytes" in figures and encoding == "sparse":
            exported[tier] = figures["model_bytes"]["value"]
        if tried and searches(target, method, aat, corpus, exported):
            shipped = ship_searched(cache, target, cfg, trained, corpus, recipe, exported, out_dir)
            if shipped is not None:
                return shipped
        if not over_budget(target, figures):
            verify = stage_verify(cache, export, trained.folder, corpus, target, encoding)
            figures = budget_figures(target, cfg, export.summary, verify)
        if over_budget(target, figures):
            log.info("%s: tier %d misses %s", target.name, tier, over_budget(target, figures))
            tried.append((tier, figures))
            continue
        log.info("%s: tier %d (%s) meets every budget", target.name, tier, method)
        return ship(target, cfg, trained, export, verify, corpus, encoding, out_dir, gate)
    last_tier, last = tried[-1]
    raise BudgetError(
        f"no tier of {cfg.name} ({method}, tiers {', '.join(map(str, tiers))}) meets the budgets of target "
        f"{target.name!r}: {over_budget(target, last, last_tier)}; raise the budget in the target profile, or train a "
        f"smaller model or sparser tiers."
    )


def ship(
    target: TargetProfile,
    cfg: ModelConfig,
    trained: Artifact,
    export: Artifact,
    verify: dict[str, Any],
    corpus: PreparedData,
    encoding: str,
    out_dir: Path,
    gate: dict[str, Any] | None = None,
) -> Path:
    """Write the verified export to `out_dir/<target>/` with its manifest."""
    # a cached checkpoint may hold another [aat] than cfg (it keys neither training nor, for the gate, fine-tuning)
    ck = replace(ModelCheckpoint.load(trained.folder, expect=cfg, ignore=("aat",)), config=cfg)
    npu_dir = Path(verify["folder"]) / "npu" if verify.get("npu") else None
    shipped = export.folder / ("int8_sparse" if encoding == "sparse" else "int8")
    return write_dist(
        device_output(out_dir, target.name),
        shipped,
        lambda graphs: make_manifest(target, ck, graphs, verify, corpus, export.summary, trained.summary, gate),
        npu_dir,
    )


def searches(target: TargetProfile, method: str, aat: bool, corpus: PreparedData, exported: dict[int, int]) -> bool:
    """Whether the budget search runs: an omni build of a profile that asks for it, whose shipped bytes follow the
    weights kept (sparse-encoded LiteRT, a `model_bytes` budget), once the densest tier missed it and a sparser one
    fits, with a dev split to score on (not with AAT: its int8 ranges are per uniform tier)."""
    budget = target.budgets.model_bytes
    return (
        target.build.search > 0
        and method == "omni"
        and not aat
        and target.build.sparse_encoding
        and target.device.runtime == "litert"
        and budget is not None
        and len(exported) >= 2
        and min(exported.values()) <= budget
        and DEV_SPLIT in corpus.splits
    )


def ship_searched(
    cache: StageCache,
    target: TargetProfile,
    cfg: ModelConfig,
    trained: Artifact,
    corpus: PreparedData,
    recipe: Any,
    exported: dict[int, int],
    out_dir: Path,
) -> Path | None:
    """Ship the searched per-kernel mix of the omni checkpoint `trained` if it meets every budget (None if not)."""
    from .search import stage_search

    budget = target.budgets.model_bytes
    searched = stage_search(cache, trained, corpus, budget, exported, target.build.search)  # type: ignore[arg-type]
    tier = int(searched.summary["sparsity_percent"])
    export = stage_export(cache, searched, corpus, recipe, tier)
    encoding = shipped_encoding(target, export)
    figures = size_figures(target, export, encoding)
    if not over_budget(target, figures):
        verify = stage_verify(cache, export, searched.folder, corpus, target, encoding)
        figures = budget_figures(target, cfg, export.summary, verify)
    if over_budget(target, figures):
        log.info("%s: the searched mix misses %s; shipping a uniform tier", target.name, over_budget(target, figures))
        return None
    log.info("%s: the searched mix %s meets every budget", target.name, searched.summary["tier_per_kernel"])
    # the manifest's training section is the omni training's: the search only chose masks of its checkpoint
    return ship(target, cfg, replace(searched, summary=trained.summary), export, verify, corpus, encoding, out_dir)


def build(
    target_name: str,
    data: DataOptions = DataOptions(),
    paths: BuildPaths = BuildPaths(),
    model: str | None = None,
    steps: int | None = None,
    method: str | None = None,
    tier: int | None = None,
    aat: bool | None = None,
    switchable: bool | None = None,
) -> Path:
    """Build `dist/<target>/` for one target profile; returns the manifest path. `aat` (default: the
    profile's) adds the accelerator-aware fine-tuning phase; `switchable` (default: the profile's) ships every tier of
    one omni checkpoint as one package."""
    target = load_target(target_name)
    cfg = load_model_config(model or target.build.model)
    switchable = target.build.switchable if switchable is None else switchable
    if switchable:
        method = check_switchable(target, method, tier, aat)
    method = method or target.build.method
    check_method(method, cfg, tier)
    tiers = candidate_tiers(cfg, target, method, tier)
    cache, src = begin(cfg, data, paths.work_dir, [device_output(paths.out_dir, target.name)])
    cfg, corpus = stage_corpus(cache, cfg, src)
    feats = stage_features(cache, cfg, corpus)
    if switchable:
        from .switching import build_switchable

        return build_switchable(cache, target, cfg, tiers, corpus, feats, steps, paths.out_dir)
    return build_target(
        cache, target, cfg, method, tiers, corpus, feats, steps, paths.out_dir, target.build.aat if aat is None else aat
    )


def check_switchable(target: TargetProfile, method: str | None, tier: int | None, aat: bool | None) -> str:
    """The method a switchable build trains (omni: one shared-weight checkpoint), or `ConfigError` for what a
    switchable package cannot be."""
    if method not in (None, "omni"):
        raise ConfigError(f"--switchable needs one shared-weight checkpoint (--method omni), not --method {method}.")
    if tier is not None:
        raise ConfigError("--switchable ships every tier of the checkpoint; --tier picks one.")
    if aat:
        raise ConfigError("--switchable does not combine with --aat yet: AAT learns each tier's own int8 grid.")
    if target.build.method != "omni":
        log.info("%s: --switchable trains one omni checkpoint (profile method: %s)", target.name, target.build.method)
    return "omni"


def build_all(
    data: DataOptions = DataOptions(),
    paths: BuildPaths = BuildPaths(),
    model: str | None = None,
    steps: int | None = None,
    method: str | None = None,
    aat: bool = False,
) -> list[Path]:
    """Every profile in targets/ from ONE trained checkpoint (default: tiny, omni), each at the densest tier meeting
    its budgets (a profile with `build.switchable`: every tier, as one package).
    """
    cfg = load_model_config(model or "tiny")
    method = method or "omni"
    check_method(method, cfg, None if method != "dense" else 0)
    targets = [load_target(n) for n in target_names()]
    for t in targets:
        if t.build.switchable:
            check_switchable(t, method, None, aat)
    plans = [(t, candidate_tiers(cfg, t, method, None)) for t in targets]
    cache, src = begin(cfg, data, paths.work_dir, [device_output(paths.out_dir, t.name) for t in targets])
    cfg, corpus = stage_corpus(cache, cfg, src)
    feats = stage_features(cache, cfg, corpus)
    out = []
    for t, tiers in plans:
        if t.build.switchable:
            from .switching import build_switchable

            out.append(build_switchable(cache, t, cfg, tiers, corpus, feats, steps, paths.out_dir))
        else:
            out.append(build_target(cache, t, cfg, method, tiers, corpus, feats, steps, paths.out_dir, aat))
    return out
