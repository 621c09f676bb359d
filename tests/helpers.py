"""Small domain helpers for numerical checks in tests."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np


def brute_force_alignments(logits: np.ndarray, labels: list[int], blank: int = 0, first_emit: int = 0):
    """Every complete alignment of `labels` over logits (T, U+1, V), enumerated: (its log-probability, the lattice
    nodes it visits). Alignments emitting the first label at a frame before `first_emit` have log-probability -inf."""
    t_len, u1, _ = logits.shape
    u_len = len(labels)
    assert u1 >= u_len + 1
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    # an alignment = positions of the U emissions among T+U-1 non-final steps... enumerate paths directly
    for emits in itertools.combinations(range(t_len + u_len - 1), u_len):
        t = u = 0
        lp, nodes = 0.0, [(0, 0)]
        for step in range(t_len + u_len - 1):
            if step in emits:
                if u == 0 and t < first_emit:
                    lp = -np.inf
                lp += logp[t, u, labels[u]]
                u += 1
            else:
                lp += logp[t, u, blank]
                t += 1
            nodes.append((t, u))
        if t == t_len - 1 and u == u_len:
            yield lp + logp[t, u, blank], nodes


def brute_force_rnnt_loglik(logits: np.ndarray, labels: list[int], blank: int = 0, first_emit: int = 0) -> float:
    """log p(y|x) by enumerating every alignment; logits (T, U+1, V). Alignments emitting the first label at a frame
    before `first_emit` are left out."""
    total = [lp for lp, _ in brute_force_alignments(logits, labels, blank, first_emit)]
    return float(np.logaddexp.reduce(total))


def assert_sparsity(weights: np.ndarray, target: float, tol: float = 0.005) -> None:
    got = float(np.mean(weights == 0))
    if abs(got - target) > tol:
        raise AssertionError(f"sparsity {got:.4f} differs from target {target:.4f} by more than {tol}")


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """`python -m pipeline.cli ARGS` in a fresh process (exit code, stdout and stderr as a user sees them)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=600
    )
