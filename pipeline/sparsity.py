"""Sparsity tiers: which weights are pruned, block masks by magnitude, and the schedule.

A tier is a sparsity in percent over the *prunable* weights: every LSTM input and
recurrent kernel and every Dense kernel of the encoder, predictor and joiner, except the
layers in `dense_layers` (by default the joiner's output layer: pruned per kernel in
(16, 1) blocks at 90% it keeps 14 of its 136 blocks, so some tokens lose every input and
can never be emitted). Biases and the token embedding are not pruned either. Weights are pruned in blocks of
`block` = (rows along the kernel's input dimension, columns along its output): Keras's
`(16, 1)` is the one TFLite's sparse encoding stores compactly (docs/design.md).

Masks are ranked, not thresholded: the blocks of each kernel are ordered once by mean
|w| (TFMOT's block pooling), and tier s prunes the weakest blocks holding s% of the
weights. With one
ranking for every tier, a block pruned at a lower tier is pruned at every higher
one, which is the nesting omni-sparsity needs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError
from .tomlconf import check

METHODS = ("dense", "tfmot", "omni", "csp")


@dataclass(frozen=True)
class SparsityConfig:
    tiers: tuple[int, ...] = (0, 50, 70, 80, 90)  # percent of prunable weights set to zero
    block: tuple[int, int] = (16, 1)  # (input rows, output columns) per pruned block
    begin: float = 0.2  # fraction of training steps when pruning starts (dense before)
    end: float = 0.7  # fraction when every tier reaches its sparsity; masks frozen after
    update_every: int = 100  # steps between mask updates (tfmot, omni)
    # layers whose kernels stay dense at every tier; the tier's percentage counts the rest
    dense_layers: tuple[str, ...] = ("joint_out",)
    # omni: tiers trained per step, each on this share of the batch. 2 = the sparsest tier every step plus one
    # sampled from the others (one sampled tier alone left the sparsest tier untrained: 86.6% WER at tier 90);
    # 3+ = the densest and the sparsest plus sampled ones
    tiers_per_step: int = 2
    tier_batch: float = 0.5
    # omni, experimental (no shipped profile uses it until it is measured on the leave-one-speaker-out folds):
    # "tier" samples one tier for the whole model per trained subnet; "layer" samples a tier per pruned layer (a
    # layer-wise supernet, any mix of the tiers' nested masks), with the sandwich rule: every step trains the
    # densest and the sparsest subnet plus `tiers_per_step` - 2 subnets of per-layer tiers, all on the same rows
    sampling: str = "tier"
    # omni, experimental: in-place distillation. Every sparser subnet of a step is also trained toward the densest
    # subnet's output distributions (KL at each lattice node, weighted by how likely the densest subnet's alignments
    # of the transcript pass through it: `rnnt_loss.alignment_kl`; teacher not back-propagated), with this weight;
    # 0 = off. Needs the densest subnet in every step (`sampling = "layer"`, or `tiers_per_step` >= 3)
    distill: float = 0.0
    # csp: the compression error (what soft-thresholding removed) is fed back into the
    # dense weights, decayed by this factor per step (1: keep all, 0: plain proximal step)
    csp_feedback: float = 0.99

    def __post_init__(self) -> None:
        check(
            len(self.tiers) >= 1 and all(0 <= t < 100 for t in self.tiers),
            f"field `tiers` must be percentages in 0..99, got {self.tiers}.",
        )
        check(
            list(self.tiers) == sorted(set(self.tiers)), f"field `tiers` must be strictly increasing, got {self.tiers}."
        )
        check(
            len(self.block) == 2 and all(1 <= b <= 64 for b in self.block),
            f"field `block` must be two sizes in 1..64, got {self.block}.",
        )
        check(0 <= self.begin < self.end <= 1, f"need 0 <= begin < end <= 1, got begin={self.begin}, end={self.end}.")
        check(self.update_every >= 1, f"field `update_every` must be >= 1, got {self.update_every}.")
        check(1 <= self.tiers_per_step, f"field `tiers_per_step` must be >= 1, got {self.tiers_per_step}.")
        check(0 < self.tier_batch <= 1, f"field `tier_batch` must be in (0, 1], got {self.tier_batch}.")
        check(self.sampling in ("tier", "layer"), f"field `sampling` must be tier or layer, got {self.sampling!r}.")
        check(self.distill >= 0, f"field `distill` must be >= 0, got {self.distill}.")
        if self.sampling == "layer":
            check(
                self.tiers_per_step >= 2,
                'sampling = "layer" trains the densest and the sparsest subnet every '
                f"step: field `tiers_per_step` must be >= 2, got {self.tiers_per_step}.",
            )
        elif self.distill > 0:
            check(
                self.tiers_per_step >= 3,
                "in-place distillation (`distill` > 0) needs the densest tier every step: "
                f'set `tiers_per_step` >= 3 or `sampling = "layer"`, got tiers_per_step {self.tiers_per_step}.',
            )
        check(0 <= self.csp_feedback <= 1, f"field `csp_feedback` must be in 0..1, got {self.csp_feedback}.")
        check(
            len(set(self.dense_layers)) == len(self.dense_layers),
            f"field `dense_layers` names a layer twice: {self.dense_layers}.",
        )

    def prunes(self, name: str) -> bool:
        """Whether parameter `name` ("layer/weight") is pruned: 2-D kernels outside `dense_layers`."""
        return name.endswith("kernel") and name.split("/")[0] not in self.dense_layers

    def check_tier(self, tier: int) -> int:
        if tier not in self.tiers:
            raise ConfigError(
                f"unknown sparsity tier {tier}; the model config's tiers are {', '.join(map(str, self.tiers))}."
            )
        return tier

    def ramp(self, step: int, total: int, tier: int) -> float:
        """Scheduled sparsity (fraction) of `tier` at `step`: 0 before `begin`, cubic ramp to the tier at `end`."""
        t0, t1 = self.begin * total, self.end * total
        if step < t0:
            return 0.0
        prog = min(1.0, (step - t0) / max(1.0, t1 - t0))
        return tier / 100 * (1 - (1 - prog) ** 3)

    def frozen(self, step: int, total: int) -> bool:
        return step >= self.end * total


def _block_grid(w: np.ndarray, block: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(mean |w| per block, real entries per block) of a 2-D kernel; edge blocks may be partial."""
    bi, bo = block
    r, c = w.shape
    nr, nc = math.ceil(r / bi), math.ceil(c / bo)
    a = np.zeros((nr * bi, nc * bo), np.float64)
    n = np.zeros_like(a)
    a[:r, :c] = np.abs(w)
    n[:r, :c] = 1
    a = a.reshape(nr, bi, nc, bo).sum(axis=(1, 3))
    n = n.reshape(nr, bi, nc, bo).sum(axis=(1, 3))
    return a / n, n


def _expand(block_mask: np.ndarray, shape: tuple[int, ...], block: tuple[int, int]) -> np.ndarray:
    full = np.repeat(np.repeat(block_mask, block[0], axis=0), block[1], axis=1)
    return full[: shape[0], : shape[1]]


def blocks_to_prune(sizes_in_rank_order: np.ndarray, frac: float) -> int:
    """How many of the weakest blocks to prune so the pruned *weights* come closest to `frac`.

    Counting weights, not blocks, keeps a tier exact when edge blocks are partial (a 120-row
    kernel in 16-row blocks); TFMOT counts blocks instead.
    """
    total = sizes_in_rank_order.sum()
    cum = np.concatenate([[0.0], np.cumsum(sizes_in_rank_order)])
    return int(np.argmin(np.abs(cum - frac * total)))


def nested_masks(w: np.ndarray, fractions: dict[int, float], block: tuple[int, int]) -> dict[int, np.ndarray]:
    """Boolean keep-masks of kernel `w`, one per tier, pruning `fractions[tier]` of its weights in whole blocks.

    One magnitude ranking serves every tier, so masks of larger fractions are subsets.
    """
    scores, sizes = _block_grid(w, block)
    order = np.argsort(scores.ravel(), kind="stable")  # weakest first
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    ranked_sizes = sizes.ravel()[order]
    out = {}
    for tier, frac in fractions.items():
        keep = (rank >= blocks_to_prune(ranked_sizes, frac)).reshape(scores.shape)
        out[tier] = _expand(keep, w.shape, block)
    return out


def block_sparsity(mask: np.ndarray, block: tuple[int, int]) -> float:
    """Share of (possibly partial) blocks that are entirely pruned: TFMOT's notion of sparsity."""
    kept, _ = _block_grid(mask.astype(np.float32), block)
    return float(np.mean(kept == 0))


def tier_masks(
    params: dict[str, np.ndarray], fractions: dict[int, float], sp: SparsityConfig
) -> dict[int, dict[str, np.ndarray]]:
    """{tier: {param: keep-mask}} over every parameter `sp` prunes."""
    out: dict[int, dict[str, np.ndarray]] = {t: {} for t in fractions}
    for name, w in params.items():
        if sp.prunes(name):
            for tier, m in nested_masks(w, fractions, sp.block).items():
                out[tier][name] = m
    return out


def apply_masks(params: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: (v * masks[k]).astype(np.float32) if k in masks else v for k, v in params.items()}


def sparsity_of(params: dict[str, np.ndarray], sp: SparsityConfig) -> dict[str, int | float]:
    """Counts over the weights `sp` prunes and over all parameters."""
    pr = [v for k, v in params.items() if sp.prunes(k)]
    n = int(sum(v.size for v in pr))
    nz = int(sum(np.count_nonzero(v) for v in pr))
    return {
        "prunable_parameters": n,
        "prunable_nonzero": nz,
        "sparsity": 1 - nz / n if n else 0.0,
        "parameters": int(sum(v.size for v in params.values())),
        "nonzero_parameters": int(sum(np.count_nonzero(v) for v in params.values())),
    }


def tier_name(tier: int) -> str:
    return f"tier{tier:02d}"
