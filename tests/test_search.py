"""The budget search: per-layer mixes of an omni checkpoint's tiers, a byte model fitted on exported tiers, and an
evolutionary search that only scores mixes within the budget."""

from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.search import evolve, fit_bytes, kept_table, kept_weights, mix_masks, pruned_kernels, sparse_stored
from pipeline.sparsity import SparsityConfig, nested_masks, tier_name

TIERS = [0, 50, 80, 90]


def _checkpoint():
    """A stand-in omni checkpoint: an LSTM-like layer (kernel + recurrent) and a dense layer whose 24-wide input
    the 16-row blocks do not tile, with nested masks per tier."""
    rng = np.random.default_rng(0)
    params = {
        "enc0/kernel": rng.normal(size=(32, 64)),
        "enc0/recurrent_kernel": rng.normal(size=(16, 64)),
        "enc0/bias": rng.normal(size=(64,)),
        "proj/kernel": rng.normal(size=(24, 32)),
    }
    masks = {tier_name(t): {} for t in TIERS}
    for n in ("enc0/kernel", "enc0/recurrent_kernel", "proj/kernel"):
        for t, m in nested_masks(params[n], {t: t / 100 for t in TIERS}, (16, 1)).items():
            masks[tier_name(t)][n] = m
    return SimpleNamespace(params=params, masks=masks, tiers=TIERS, config=SimpleNamespace(sparsity=SparsityConfig()))


def test_a_mix_takes_each_kernels_masks_from_its_tier_and_counts_only_sparse_stored_kernels():
    ck = _checkpoint()
    assert pruned_kernels(ck) == ["enc0/kernel", "enc0/recurrent_kernel", "proj/kernel"]
    assert sparse_stored(ck) == ["enc0/kernel", "enc0/recurrent_kernel"]  # 24 rows: stored dense
    choice = {"enc0/kernel": 50, "enc0/recurrent_kernel": 90, "proj/kernel": 0}
    m = mix_masks(ck, choice)
    np.testing.assert_array_equal(m["enc0/kernel"], ck.masks[tier_name(50)]["enc0/kernel"])
    np.testing.assert_array_equal(m["enc0/recurrent_kernel"], ck.masks[tier_name(90)]["enc0/recurrent_kernel"])
    assert m["proj/kernel"].all()
    table = kept_table(ck)
    kept = kept_weights(table, choice)
    assert kept == int(m["enc0/kernel"].sum() + m["enc0/recurrent_kernel"].sum())
    sparser = {**choice, "proj/kernel": 90}
    assert kept_weights(table, sparser) == kept  # pruning a dense-stored kernel is free


def test_the_byte_model_is_a_least_squares_line_with_its_worst_residual():
    a, b, resid = fit_bytes([(100, 1100), (200, 1200), (300, 1300)])
    assert abs(a - 1000) < 1e-6 and abs(b - 1) < 1e-9 and resid < 1e-6
    assert fit_bytes([(100, 1100), (200, 1210), (300, 1300)])[2] > 3
    with pytest.raises(Exception, match="two exported tiers"):
        fit_bytes([(1, 2)])


def test_the_search_scores_only_mixes_within_the_limit_starting_with_the_uniform_tiers_that_fit():
    """On a made-up score that rewards keeping layer 0 dense, the search finds a non-uniform mix better than every
    uniform tier within the limit, never scores a mix over it, and gives the same answer twice."""
    layers, tiers = ["a", "b", "c"], [0, 50, 80, 90]
    cost = {0: 100, 50: 50, 80: 20, 90: 10}
    est = lambda c: sum(cost[t] for t in c.values())  # noqa: E731
    score = lambda c: 0.5 - 0.4 * (c["a"] == 0) + 0.01 * sum(c.values()) / 90  # noqa: E731
    limit = 130
    result = evolve(layers, tiers, est, limit, score, 20, seed=1)
    assert all(e["est_bytes"] <= limit for e in result.evaluated)
    uniform = [e for e in result.evaluated if len(set(e["choice"].values())) == 1]
    assert [e["choice"]["a"] for e in uniform] == [80, 90] and result.evaluated[:2] == uniform
    assert result.choice["a"] == 0 and result.dev_wer < min(e["dev_wer"] for e in uniform)
    assert result.dev_wer == pytest.approx(min(e["dev_wer"] for e in result.evaluated), abs=1e-5)
    assert len({tuple(e["choice"].values()) for e in result.evaluated}) == len(result.evaluated) == 20
    assert evolve(layers, tiers, est, limit, score, 20, seed=1) == result
