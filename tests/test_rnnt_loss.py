import numpy as np
import pytest

from pipeline._tf import tf
from pipeline.rnnt_loss import onset_frames, rnnt_log_likelihood
from tests.helpers import brute_force_alignments, brute_force_rnnt_loglik


@pytest.mark.parametrize("seed", range(4))
def test_loglik_matches_brute_force_with_padding(seed):
    rng = np.random.default_rng(seed)
    batch, t_max, u_max, vocab = 3, 5, 3, 4
    logits = rng.normal(size=(batch, t_max, u_max + 1, vocab)).astype(np.float32) * 2
    frames = np.array([5, 3, 1], np.int32)
    label_lengths = np.array([3, 1, 2], np.int32)
    labels = rng.integers(1, vocab, size=(batch, u_max)).astype(np.int32)
    got = rnnt_log_likelihood(
        tf.constant(logits), tf.constant(labels), tf.constant(frames), tf.constant(label_lengths)
    ).numpy()
    for b in range(batch):
        want = brute_force_rnnt_loglik(
            logits[b, : frames[b], : label_lengths[b] + 1], list(labels[b, : label_lengths[b]])
        )
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("seed", range(3))
def test_first_label_restriction_matches_brute_force(seed):
    """Alignments emitting the first label before first_emit are left out; first_emit past the last frame means the
    last frame; an utterance without labels is unaffected."""
    rng = np.random.default_rng(10 + seed)
    batch, t_max, u_max, vocab = 4, 5, 3, 4
    logits = rng.normal(size=(batch, t_max, u_max + 1, vocab)).astype(np.float32) * 2
    frames = np.array([5, 4, 3, 5], np.int32)
    label_lengths = np.array([3, 2, 1, 0], np.int32)
    labels = rng.integers(1, vocab, size=(batch, u_max)).astype(np.int32)
    first_emit = np.array([2, 0, 9, 3], np.int32)
    got = rnnt_log_likelihood(
        tf.constant(logits),
        tf.constant(labels),
        tf.constant(frames),
        tf.constant(label_lengths),
        first_emit=tf.constant(first_emit),
    ).numpy()
    free = rnnt_log_likelihood(
        tf.constant(logits), tf.constant(labels), tf.constant(frames), tf.constant(label_lengths)
    ).numpy()
    for b in range(batch):
        fe = min(first_emit[b], frames[b] - 1)
        want = brute_force_rnnt_loglik(
            logits[b, : frames[b], : label_lengths[b] + 1], list(labels[b, : label_lengths[b]]), first_emit=fe
        )
        np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-4)
    assert got[0] < free[0] - 1e-3 and got[1] == pytest.approx(free[1]) and got[3] == pytest.approx(free[3])


def test_onset_frames_finds_the_first_loud_frame():
    """Quiet lead-in then speech: the onset is the encoder frame holding the first frame past `rel` of the range;
    padding past `frames` (here louder than anything) is ignored."""
    quiet, loud = -4.0, 2.0
    x = np.full((3, 24, 5), quiet, np.float32)
    x[0, 7:15] = loud  # raw frame 7 → encoder frame 7 // 3 = 2
    x[1, 0:6] = loud  # speech from the start → 0
    x[2, 13:] = loud
    x[2, 10] = quiet + 0.5 * (loud - quiet)  # a frame halfway up: above rel 0.3 → 10 // 3 = 3
    x[0, 18:] = 50.0  # padding of utterance 0 (5 valid encoder frames = 15 raw frames)
    got = onset_frames(tf.constant(x), tf.constant([5, 8, 8], tf.int32), 3, 0.3).numpy()
    assert got.tolist() == [2, 0, 3]


def test_onset_frames_skips_the_leading_zeros_of_edge_padding():
    """Digital zeros before a quiet lead-in are quieter than it: without `skip` the lead-in's first frame passes `rel`
    of the range and is taken for the onset; skipping the encoder frames that hold the zeros finds the speech."""
    floor, quiet, loud = -14.0, -8.0, 0.0
    x = np.full((1, 30, 4), quiet, np.float32)
    x[0, :6] = floor  # 6 raw frames of zeros = encoder frames 0-1
    x[0, 16:26] = loud  # raw frame 16 → encoder frame 5
    frames = tf.constant([10], tf.int32)
    assert onset_frames(tf.constant(x), frames, 3, 0.3).numpy().tolist() == [2]  # the lead-in, just past the zeros
    assert onset_frames(tf.constant(x), frames, 3, 0.3, skip=2).numpy().tolist() == [5]


def test_padding_does_not_change_loss_or_gradient_of_real_entries():
    rng = np.random.default_rng(9)
    logits = rng.normal(size=(1, 4, 3, 5)).astype(np.float32)
    labels = np.array([[2, 3]], np.int32)
    padded = np.concatenate([logits, rng.normal(size=(1, 3, 3, 5)).astype(np.float32) * 50], axis=1)
    padded = np.concatenate([padded, rng.normal(size=(1, 7, 2, 5)).astype(np.float32) * 50], axis=2)
    lab_p = np.array([[2, 3, 1, 4]], np.int32)

    def ll_and_grad(lg, lb):
        x = tf.Variable(lg)
        with tf.GradientTape() as tape:
            ll = rnnt_log_likelihood(x, tf.constant(lb), tf.constant([4]), tf.constant([2]))
        return ll.numpy(), tape.gradient(ll, x).numpy()

    a, ga = ll_and_grad(logits, labels)
    b, gb = ll_and_grad(padded, lab_p)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    np.testing.assert_allclose(ga, gb[:, :4, :3], atol=1e-6)
    assert np.all(gb[:, 4:] == 0) and np.all(gb[:, :, 3:] == 0)


def test_gradient_is_finite_for_long_lattice():
    rng = np.random.default_rng(1)
    x = tf.Variable(rng.normal(size=(2, 120, 31, 17)).astype(np.float32) * 5)
    with tf.GradientTape() as tape:
        ll = rnnt_log_likelihood(
            x, tf.constant(rng.integers(1, 17, (2, 30)), tf.int32), tf.constant([120, 60]), tf.constant([30, 12])
        )
    g = tape.gradient(ll, x).numpy()
    assert np.all(np.isfinite(ll.numpy())) and np.all(np.isfinite(g))


def _brute_force_ctc_loglik(logp: np.ndarray, labels: list[int], blank: int = 0) -> float:
    """log p(y | x) under CTC by enumerating every frame-level path of logp (T, V)."""
    import itertools

    total = -np.inf
    for path in itertools.product(range(logp.shape[1]), repeat=logp.shape[0]):
        collapsed = [k for i, k in enumerate(path) if k != blank and (i == 0 or path[i - 1] != k)]
        if collapsed == labels:
            total = np.logaddexp(total, sum(logp[t, k] for t, k in enumerate(path)))
    return float(total)


def test_ctc_loss_matches_brute_force_and_skips_labels_that_cannot_fit():
    from pipeline.rnnt_loss import ctc_loss

    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 4, 3)).astype(np.float32) * 2
    # row 2: 1 1 1 needs 5 frames, has 4; row 3: no labels (every frame blank)
    labels = np.array([[1, 2, 0], [2, 2, 0], [1, 1, 1], [0, 0, 0]], np.int32)
    frames, lengths = np.array([4, 3, 4, 3], np.int32), np.array([2, 2, 3, 0], np.int32)
    x = tf.Variable(logits)
    with tf.GradientTape() as tape:
        loss = ctc_loss(x, tf.constant(labels), tf.constant(frames), tf.constant(lengths))
    grad = tape.gradient(loss, x).numpy()
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.mean([_brute_force_ctc_loglik(logp[b, : frames[b]], list(labels[b, : lengths[b]])) for b in (0, 1, 3)])
    np.testing.assert_allclose(loss.numpy(), want, rtol=1e-5)
    assert np.all(np.isfinite(grad)) and np.all(grad[2] == 0)  # the row that cannot fit adds nothing
    assert np.all(grad[1, 3:] == 0) and np.all(grad[3, 3:] == 0)  # nor do frames past an utterance's end


def test_ctc_loss_gradient_matches_finite_differences():
    """The native kernel's gradient (sparse labels) against central differences of the loss itself."""
    from pipeline.rnnt_loss import ctc_loss

    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 6, 4)).astype(np.float64)
    labels, frames, lengths = (
        np.array([[1, 3, 3], [2, 0, 0]], np.int32),
        np.array([6, 4], np.int32),
        np.array([3, 1], np.int32),
    )

    def f(z: np.ndarray) -> float:
        return float(
            ctc_loss(tf.constant(z, tf.float32), tf.constant(labels), tf.constant(frames), tf.constant(lengths))
        )

    x = tf.Variable(logits.astype(np.float32))
    with tf.GradientTape() as tape:
        loss = ctc_loss(x, tf.constant(labels), tf.constant(frames), tf.constant(lengths))
    grad = tape.gradient(loss, x).numpy()
    eps, num = 1e-2, np.zeros_like(logits)
    for idx in np.ndindex(*logits.shape):
        d = np.zeros_like(logits)
        d[idx] = eps
        num[idx] = (f(logits + d) - f(logits - d)) / (2 * eps)
    np.testing.assert_allclose(grad, num, atol=2e-3)


def _brute_force_occupancy(logits: np.ndarray, labels: list[int]) -> np.ndarray:
    """P(an alignment passes through node (t, u)) by enumerating every alignment; logits (T, U+1, V)."""
    occ, total = np.zeros(logits.shape[:2]), 0.0
    for lp, nodes in brute_force_alignments(logits, labels):
        total += np.exp(lp)
        for node in nodes:
            occ[node] += np.exp(lp)
    return occ / total


@pytest.mark.parametrize("seed", range(3))
def test_node_occupancy_matches_brute_force_and_weighs_one_alignment(seed):
    """`node_occupancy` is the posterior of passing through each lattice node (padding rows and columns get none);
    every alignment visits T + U nodes, so each utterance's occupancies sum to that, and `alignment_kl` is zero
    between equal distributions and positive otherwise."""
    from pipeline.rnnt_loss import alignment_kl, node_occupancy

    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(3, 5, 4, 4)).astype(np.float32) * 2
    frames, label_lengths = np.array([5, 3, 2], np.int32), np.array([3, 1, 2], np.int32)
    labels = rng.integers(1, 4, size=(3, 3)).astype(np.int32)
    args = [tf.constant(labels), tf.constant(frames), tf.constant(label_lengths)]
    got = node_occupancy(tf.constant(logits), *args).numpy()
    for b in range(3):
        want = np.zeros((5, 4))
        want[: frames[b], : label_lengths[b] + 1] = _brute_force_occupancy(
            logits[b, : frames[b], : label_lengths[b] + 1], list(labels[b, : label_lengths[b]])
        )
        np.testing.assert_allclose(got[b], want, atol=1e-4)
    np.testing.assert_allclose(got.sum(axis=(1, 2)), frames + label_lengths, rtol=1e-4)
    same = alignment_kl(tf.constant(logits), tf.constant(logits), *args).numpy()
    other = alignment_kl(tf.constant(logits), tf.constant(logits[::-1].copy()), *args).numpy()
    assert abs(same) < 1e-5 and other > 0.01
