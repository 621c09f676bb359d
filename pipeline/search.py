"""Budget search: the per-kernel mix of an omni checkpoint's tiers that fits a target's bytes and decodes best on dev.

The tiers of an omni checkpoint are nested (every tier's masks prune a superset of a denser tier's), so taking each
pruned kernel's masks from a different tier gives a valid subnet of the same shared weights, with no retraining. A
uniform tier prunes every kernel alike; a mix can spend the bytes where they help: e.g. a kernel the export stores
dense whatever its mask (its input width is not tiled by the 16-wide blocks, `export.dense_partial_blocks`) gains
nothing from pruning, so a mix keeps it dense and prunes the others harder. The unit is the kernel, not the layer:
an LSTM layer's input and recurrent kernels may be stored differently.

For a target whose shipped bytes follow the weights kept (sparse-encoded LiteRT graphs and a `model_bytes` budget):

- bytes of a mix: a linear model, bytes = a + b x (weights kept in the kernels stored sparse-encoded), fitted by
  least squares on the checkpoint's uniform tiers as actually exported, plus the fit's largest residual (an exported
  uniform tier counts its own bytes); the winner is exported and checked exactly like any tier.
- score: float32 WER on the dev split (speakers held out of training, never a test set), the mix's three graphs
  converted to float32 .tflite and greedy-decoded in LiteRT, as the build's float reference is.
- search: seeded and evolutionary. The uniform tiers that fit and random mixes repaired to fit start it, then
  mutations of the best (one or two kernels one tier denser or sparser, repaired to fit), until `evaluations`
  distinct mixes are scored; the best dev WER wins, the fewer estimated bytes breaking a tie.

The result is a checkpoint holding one tier, the winning mix (named by its overall sparsity in percent), whose meta
records the search (the manifest's `model.sparsity.search`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .cache import Artifact, StageCache
from .checkpoint import ModelCheckpoint
from .codehash import code_digest
from .data import DEV_SPLIT, describe_split
from .errors import InternalError
from .sparsity import apply_masks, tier_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SearchResult:
    choice: dict[str, int]  # pruned kernel -> tier
    dev_wer: float
    est_bytes: int
    evaluated: list[dict[str, Any]]  # every mix scored, in order: choice, dev_wer, est_bytes


def pruned_kernels(ck: ModelCheckpoint) -> list[str]:
    """The pruned kernels (an LSTM layer has two: input and recurrent), in parameter order: the units a mix chooses a
    tier for. Finer than layers because the two kernels of a layer can be stored differently (below)."""
    return [n for n in ck.params if ck.masks and n in ck.masks[tier_name(ck.tiers[0])]]


def mix_masks(ck: ModelCheckpoint, choice: dict[str, int]) -> dict[str, np.ndarray]:
    """Keep-masks of the subnet taking each pruned kernel's masks from the tier `choice` names."""
    return {n: ck.masks[tier_name(choice[n])][n] for n in pruned_kernels(ck)}


def sparse_stored(ck: ModelCheckpoint) -> list[str]:
    """Pruned kernels the export stores sparse-encoded: those whose input width the blocks tile (the others are
    stored dense whatever their mask, `export.dense_partial_blocks`)."""
    rows = ck.config.sparsity.block[0]
    return [n for n in pruned_kernels(ck) if ck.params[n].shape[0] % rows == 0]


def kept_table(ck: ModelCheckpoint) -> dict[str, dict[int, int]]:
    """{sparse-stored kernel: {tier: weights its mask keeps}}: what the byte model counts, once per checkpoint."""
    return {n: {t: int(ck.masks[tier_name(t)][n].sum()) for t in ck.tiers} for n in sparse_stored(ck)}


def kept_weights(table: dict[str, dict[int, int]], choice: dict[str, int]) -> int:
    """Weights the mix `choice` keeps in the sparse-stored kernels (`table` from `kept_table`)."""
    return sum(by_tier[choice[n]] for n, by_tier in table.items())


def fit_bytes(points: list[tuple[int, int]]) -> tuple[float, float, float]:
    """(a, b, largest |residual|) of bytes = a + b * kept over `points` (kept, bytes); two or more points."""
    if len(points) < 2:
        raise InternalError("the byte model of the search needs two exported tiers or more.")
    x = np.array([p[0] for p in points], np.float64)
    y = np.array([p[1] for p in points], np.float64)
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b), float(np.max(np.abs(a + b * x - y)))


def evolve(
    layers: list[str],
    tiers: list[int],
    est_bytes: Callable[[dict[str, int]], float],
    limit: float,
    score: Callable[[dict[str, int]], float],
    evaluations: int,
    seed: int,
) -> SearchResult:
    """The mix of `tiers` per unit (`layers`: the pruned kernels) minimizing `score` among those with est_bytes <=
    limit (see the module doc)."""
    rng = np.random.default_rng([seed, 38])
    n = len(tiers)
    seen: dict[tuple[int, ...], tuple[float, float]] = {}
    order: list[tuple[int, ...]] = []

    def as_choice(idx: tuple[int, ...]) -> dict[str, int]:
        return {layer: tiers[i] for layer, i in zip(layers, idx)}

    def repair(idx: list[int]) -> tuple[int, ...] | None:
        """Make a mix fit: move random kernels one tier sparser until it does (None if even the sparsest misses)."""
        idx = list(idx)
        while est_bytes(as_choice(tuple(idx))) > limit:
            denser = [j for j, i in enumerate(idx) if i < n - 1]
            if not denser:
                return None
            j = int(rng.choice(denser))
            idx[j] += 1
        return tuple(idx)

    def evaluate(idx: tuple[int, ...] | None) -> None:
        if idx is None or idx in seen or len(order) >= evaluations:
            return
        choice = as_choice(idx)
        seen[idx] = (score(choice), est_bytes(choice))
        order.append(idx)
        log.info("search %d/%d: %s dev WER %.2f%%", len(order), evaluations, choice, 100 * seen[idx][0])

    for i in range(n):  # the uniform tiers that fit
        if est_bytes(as_choice((i,) * len(layers))) <= limit:
            evaluate((i,) * len(layers))
    if not order:
        raise InternalError("the search found no uniform tier within the budget.")
    for _ in range(max(2, evaluations // 4)):  # random mixes, repaired to fit
        evaluate(repair(rng.integers(0, n, size=len(layers)).tolist()))
    stale = 0
    while len(order) < evaluations and stale < 50 * evaluations:
        ranked = sorted(order, key=lambda k: (seen[k][0], seen[k][1]))
        parent = list(ranked[int(rng.integers(0, min(4, len(ranked))))])
        for j in rng.choice(len(layers), size=int(rng.integers(1, 3)), replace=False):
            parent[j] = int(np.clip(parent[j] + rng.choice([-1, 1]), 0, n - 1))
        child = repair(parent)
        before = len(order)
        evaluate(child)
        stale = 0 if len(order) > before else stale + 1
    best = min(order, key=lambda k: (seen[k][0], seen[k][1]))
    return SearchResult(
        as_choice(best),
        seen[best][0],
        int(round(seen[best][1])),
        [{"choice": as_choice(k), "dev_wer": round(seen[k][0], 5), "est_bytes": int(round(seen[k][1]))} for k in order],
    )


def dev_scorer(ck: ModelCheckpoint, corpus: Any) -> Callable[[dict[str, int]], float]:
    """Float32 WER on the dev split of the subnet a mix names."""
    from .evaluate import eval_sets
    from .export import GRAPHS, convert_all
    from .runtimes import LiteRTGraph
    from .stages import transducer
    from .verify import score

    feats, refs, seconds = eval_sets(corpus, ck, only=DEV_SPLIT)[DEV_SPLIT]

    def wer(choice: dict[str, int]) -> float:
        graphs = convert_all(ck.config, apply_masks(ck.params, mix_masks(ck, choice)))
        t = transducer(ck.config, ck.tokenizer, {g: LiteRTGraph(graphs[g]) for g in GRAPHS})
        return score(t, ck.tokenizer, feats, refs, seconds, desc="dev float32").wer

    return wer


def stage_search(
    cache: StageCache,
    trained: Artifact,
    corpus: Any,
    budget: int,
    exported: dict[int, int],
    evaluations: int,
) -> Artifact:
    """The omni checkpoint `trained` reduced to the searched mix within `budget` shipped bytes, given the shipped
    bytes of its uniform tiers as exported (`exported`: tier -> bytes, two or more)."""
    key = {
        "checkpoint": trained.key,
        "data": corpus.key,
        "budget": budget,
        "exported": {str(t): b for t, b in sorted(exported.items())},
        "evaluations": evaluations,
        "code": code_digest(stage_search, "search", "export", "verify", "checkpoint"),
    }

    def run(tmp: Path) -> dict[str, Any]:
        ck = ModelCheckpoint.load(trained.folder)
        layers = pruned_kernels(ck)
        table = kept_table(ck)
        kept = {t: kept_weights(table, dict.fromkeys(layers, t)) for t in exported}
        a, b, resid = fit_bytes([(kept[t], exported[t]) for t in sorted(exported)])

        def est(choice: dict[str, int]) -> float:
            """A uniform tier that was exported: its bytes; any other mix: the line plus its largest residual."""
            tiers = set(choice.values())
            if len(tiers) == 1 and next(iter(tiers)) in exported:
                return float(exported[next(iter(tiers))])
            return a + b * kept_weights(table, choice) + resid

        result = evolve(layers, list(ck.tiers), est, budget, dev_scorer(ck, corpus), evaluations, 1234)
        masks = mix_masks(ck, result.choice)
        kept = sum(int(m.sum()) for m in masks.values())
        name = max(1, int(round(100 * (1 - kept / sum(m.size for m in masks.values())))))
        record = {
            "tier_per_kernel": result.choice,
            "from_tiers": list(ck.tiers),
            "budget": {"model_bytes": budget},
            "byte_model": {
                "basis": "bytes = a + b x weights kept in sparse-encoded kernels, least squares over the exported "
                "uniform tiers",
                "a": round(a, 1),
                "b": round(b, 5),
                "largest_residual_bytes": round(resid, 1),
                "fitted_on_tiers": sorted(exported),
            },
            "estimated_bytes": result.est_bytes,
            "dev_split": describe_split(corpus.source.kind, DEV_SPLIT, ck.config),
            "dev_wer_float32": round(result.dev_wer, 5),
            "candidates_evaluated": len(result.evaluated),
            "uniform_tiers_dev_wer_float32": {
                str(e["choice"][layers[0]]): e["dev_wer"]
                for e in result.evaluated
                if len(set(e["choice"].values())) == 1
            },
            "sparsity_percent": name,
        }
        out = replace(ck, masks={tier_name(name): masks}, meta={**ck.meta, "search": record})
        out.save(tmp / "checkpoint")
        (tmp / "candidates.json").write_text(json.dumps(result.evaluated, indent=1))
        return record

    searched = cache.run("search", key, run)
    return replace(searched, folder=searched.folder / "checkpoint")
