"""RNN-T loss in plain TensorFlow ops (TensorFlow has none); gradients by autograd.

Forward variable over the T x (U+1) lattice:

    alpha[0, 0] = 0
    alpha[t, u] = logaddexp(alpha[t-1, u] + blank[t-1, u], alpha[t, u-1] + emit[t, u-1])
    log p(y|x)  = alpha[T-1, U] + blank[T-1, U]

Within one time step the recursion along u is linear in log space, so a whole row is
one cumulative log-sum-exp: with E[u] = sum_{j<u} emit[t, j] and a[u] = alpha[t-1, u] +
blank[t-1, u], alpha[t, u] = E[u] + logcumsumexp_{k<=u}(a[k] - E[k]). One `tf.scan`
step per frame, vectorized over batch and labels.
"""

from __future__ import annotations

from ._tf import tf

# log-probability given to a forbidden emission: exp(-1000) is 0 in float32, and values of this size keep the
# prefix-sum recursion exact to ~1e-4 (a larger penalty would lose precision there)
FORBIDDEN = -1000.0


def rnnt_log_likelihood(
    logits: tf.Tensor,
    labels: tf.Tensor,
    frames: tf.Tensor,
    label_lengths: tf.Tensor,
    blank: int = 0,
    first_emit: tf.Tensor | None = None,
) -> tf.Tensor:
    """log p(y | x) per utterance.

    logits: (B, T, U+1, V) float32 joiner outputs (unnormalized).
    labels: (B, U) int32, padded with anything past `label_lengths`.
    frames: (B,) int32 valid encoder frames (>= 1). label_lengths: (B,) int32.
    first_emit: optional (B,) int32, the first frame at which the first label may be emitted: alignments emitting it
    earlier are left out (an alignment restriction; `onset_frames` gives the speech onset).
    Returns (B,) float32.
    """
    blank_lp, emit_lp = _transitions(logits, labels, blank)
    if first_emit is not None:
        u_max = tf.shape(labels)[1]
        early = tf.range(tf.shape(logits)[1])[None, :] < tf.minimum(first_emit, frames - 1)[:, None]  # (B, T)
        first_col = tf.one_hot(0, u_max, on_value=True, off_value=False)  # u = 0 only
        emit_lp = tf.where(early[:, :, None] & first_col[None, None, :], FORBIDDEN, emit_lp)
    return _lattice_log_likelihood(blank_lp, emit_lp, frames, label_lengths)


def _transitions(logits: tf.Tensor, labels: tf.Tensor, blank: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Log-probabilities of each lattice node's two transitions: blank (B, T, U+1) and the next label (B, T, U)."""
    logp = tf.nn.log_softmax(logits, axis=-1)
    emit = tf.reduce_sum(logp[:, :, : tf.shape(labels)[1], :] * tf.one_hot(labels, tf.shape(logits)[-1])[:, None], -1)
    return logp[..., blank], emit


def _lattice_log_likelihood(
    blank_lp: tf.Tensor, emit_lp: tf.Tensor, frames: tf.Tensor, label_lengths: tf.Tensor
) -> tf.Tensor:
    """log p(y | x) per utterance from the transitions' log-probabilities (the forward recursion above)."""
    # emit_lp: (B, T, U); prefix sums along u with a leading zero → (B, T, U+1)
    zeros = tf.zeros_like(emit_lp[:, :, :1])
    prefix = tf.concat([zeros, tf.cumsum(emit_lp, axis=2)], axis=2)

    first = prefix[:, 0]  # alpha[0, u] = sum_{j<u} emit[0, j]

    def step(alpha_prev: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        a = alpha_prev + blank_lp[:, t - 1]
        e = prefix[:, t]
        return e + tf.math.cumulative_logsumexp(a - e, axis=1)

    t_max = tf.shape(blank_lp)[1]
    rest = tf.scan(step, tf.range(1, t_max), initializer=first)  # (T-1, B, U+1)
    alphas = tf.concat([first[None], rest], axis=0)  # (T, B, U+1)
    b = tf.range(tf.shape(blank_lp)[0])
    last_t = frames - 1
    final_alpha = tf.gather_nd(alphas, tf.stack([last_t, b, label_lengths], axis=1))
    final_blank = tf.gather_nd(blank_lp, tf.stack([b, last_t, label_lengths], axis=1))
    return final_alpha + final_blank


def rnnt_loss(
    logits: tf.Tensor,
    labels: tf.Tensor,
    frames: tf.Tensor,
    label_lengths: tf.Tensor,
    blank: int = 0,
    first_emit: tf.Tensor | None = None,
) -> tf.Tensor:
    """Mean negative log-likelihood per utterance, (B,) → scalar."""
    return -tf.reduce_mean(rnnt_log_likelihood(logits, labels, frames, label_lengths, blank, first_emit))


def onset_frames(feats: tf.Tensor, frames: tf.Tensor, stack: int, rel: float, skip: int = 0) -> tf.Tensor:
    """The speech onset of each utterance in encoder frames, from its features alone.

    feats (B, T, n_mels) log-mel (normalized or not; padded past `frames` * `stack`), frames (B,) valid encoder
    frames. A frame's loudness is its mean log-mel; the onset is the first frame whose loudness rises `rel` of the
    way from the utterance's quietest to its loudest frame, as the encoder frame that contains it. Weak fricative
    onsets are found late, at their vowel: that is harmless for the alignment restriction it feeds, which only
    forbids emitting the first label before it. The first `skip` encoder frames are left out of the search (digital
    zeros added before the audio, `train.pad_edges`: they, not the recorded pause, would be the quietest frames).
    """
    if skip:
        return onset_frames(feats[:, skip * stack :], tf.maximum(frames - skip, 0), stack, rel) + skip
    loud = tf.reduce_mean(feats, axis=-1)  # (B, T)
    valid = tf.range(tf.shape(feats)[1])[None, :] < (frames * stack)[:, None]
    lo = tf.reduce_min(tf.where(valid, loud, loud.dtype.max), axis=1, keepdims=True)
    hi = tf.reduce_max(tf.where(valid, loud, loud.dtype.min), axis=1, keepdims=True)
    above = valid & (loud >= lo + rel * (hi - lo))
    return tf.cast(tf.argmax(tf.cast(above, tf.int32), axis=1), tf.int32) // stack


def ctc_loss(
    logits: tf.Tensor, labels: tf.Tensor, frames: tf.Tensor, label_lengths: tf.Tensor, blank: int = 0
) -> tf.Tensor:
    """Mean CTC negative log-likelihood per utterance of per-frame logits (B, T, V), the auxiliary
    encoder loss. An utterance whose labels cannot fit its frames (CTC needs a frame per label plus
    one blank between repeats) would have infinite loss and NaN gradients: it counts zero and is
    left out of the mean."""
    valid = tf.sequence_mask(label_lengths, tf.shape(labels)[1])
    repeats = tf.reduce_sum(tf.cast((labels[:, 1:] == labels[:, :-1]) & valid[:, 1:], tf.int32), axis=1)
    fits = frames >= label_lengths + repeats
    # Sparse labels select TensorFlow's native CTC kernel (dense ones its scan-based version, ~10x slower on CPU).
    # The kernel rejects empty label rows: those (and the rows that cannot fit) get one dummy label there, and an
    # empty row's loss, every valid frame blank, is taken directly.
    some = fits & (label_lengths > 0)
    labels = tf.pad(labels, [[0, 0], [0, tf.maximum(0, 1 - tf.shape(labels)[1])]])  # room for the dummy
    keep = tf.sequence_mask(tf.where(some, label_lengths, 1), tf.shape(labels)[1])
    where = tf.where(keep)
    dummy = (blank + 1) % tf.shape(logits)[-1]
    values = tf.where(tf.gather(some, where[:, 0]), tf.gather_nd(labels, where), dummy)
    sparse = tf.SparseTensor(where, values, tf.shape(labels, out_type=tf.int64))
    native = tf.nn.ctc_loss(sparse, logits, None, frames, logits_time_major=False, blank_index=blank)
    in_frames = tf.sequence_mask(frames, tf.shape(logits)[1], tf.float32)
    all_blank = -tf.reduce_sum(tf.nn.log_softmax(logits)[..., blank] * in_frames, axis=1)
    nll = tf.where(some, native, all_blank)
    count = tf.maximum(tf.reduce_sum(tf.cast(fits, tf.float32)), 1.0)
    return tf.reduce_sum(tf.where(fits, nll, 0.0)) / count


def _node_kl(teacher_logits: tf.Tensor, student_logits: tf.Tensor) -> tf.Tensor:
    """(B, T, U+1) KL(teacher || student) of each lattice node's output distribution; no gradient to the teacher."""
    t_logp = tf.nn.log_softmax(tf.stop_gradient(teacher_logits), axis=-1)
    return tf.reduce_sum(tf.exp(t_logp) * (t_logp - tf.nn.log_softmax(student_logits, axis=-1)), axis=-1)


def lattice_kl(
    teacher_logits: tf.Tensor, student_logits: tf.Tensor, frames: tf.Tensor, label_lengths: tf.Tensor
) -> tf.Tensor:
    """Mean over utterances of KL(teacher || student) of the output distributions, summed over the utterance's valid
    lattice nodes (t < frames, u <= label_lengths): a distillation loss on the scale of the RNN-T loss (which also
    sums over one utterance's lattice). Logits (B, T, U+1, V); frames, label_lengths (B,). Gradients reach the
    student only."""
    kl = _node_kl(teacher_logits, student_logits)
    valid = (
        tf.sequence_mask(frames, tf.shape(kl)[1])[:, :, None]
        & tf.sequence_mask(label_lengths + 1, tf.shape(kl)[2])[:, None, :]
    )
    return tf.reduce_mean(tf.reduce_sum(tf.where(valid, kl, 0.0), axis=[1, 2]))


def node_occupancy(logits: tf.Tensor, labels: tf.Tensor, frames: tf.Tensor, label_lengths: tf.Tensor) -> tf.Tensor:
    """(B, T, U+1): the probability that an alignment of the transcript passes through each lattice node, under the
    distribution `logits` give (no gradient). It is the derivative of log p(y|x) with respect to a shift s(t, u)
    added to both transitions leaving node (t, u): every alignment through the node takes exactly one of them."""
    blank_lp, emit_lp = _transitions(tf.stop_gradient(logits), labels, 0)
    shift = tf.zeros_like(blank_lp)
    with tf.GradientTape() as tape:
        tape.watch(shift)
        total = tf.reduce_sum(
            _lattice_log_likelihood(blank_lp + shift, emit_lp + shift[:, :, :-1], frames, label_lengths)
        )
    return tf.stop_gradient(tape.gradient(total, shift))


def alignment_kl(
    teacher_logits: tf.Tensor,
    student_logits: tf.Tensor,
    labels: tf.Tensor,
    frames: tf.Tensor,
    label_lengths: tf.Tensor,
) -> tf.Tensor:
    """Mean over utterances of the expected KL(teacher || student) along the teacher's alignments of the transcript:
    each lattice node's KL of the output distributions weighted by the probability that the teacher's alignments
    pass through it (`node_occupancy`). On the scale of the RNN-T loss (one alignment's worth of nodes), where
    summing over every node (`lattice_kl`) weighs the T x U nodes no alignment visits far above it. Gradients reach
    the student only."""
    occupancy = node_occupancy(teacher_logits, labels, frames, label_lengths)
    return tf.reduce_mean(tf.reduce_sum(occupancy * _node_kl(teacher_logits, student_logits), axis=[1, 2]))
