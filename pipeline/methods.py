"""Training methods: what one train step computes, for dense and each pruning method.

The `Trainer` owns the loop (batches, optimizer, checkpoints, resume); a method owns
the variables, the loss of one step and what happens around the update:

- `dense`: the Keras training model.
- `tfmot`: the Keras model with TFMOT `prune_low_magnitude` wrappers (polynomial
  schedule, block masks) on every prunable layer: one model for one tier, the
  "individually pruned" baseline.
- `omni`: one set of shared weights and nested per-tier masks. Each step trains
  `tiers_per_step` tiers on the same batch (default one sampled tier on the whole
  batch; with 3+ the densest and the sparsest plus sampled ones, each on a random
  `tier_batch` share of it) in ONE tier-batched forward pass (`model.forward`),
  and applies one update. Masks are re-ranked by magnitude every `update_every` steps
  on the cubic schedule, and frozen at `end`. Experimental: `sampling = "layer"` (a tier
  per pruned layer, sandwich rule) and `distill` (in-place distillation from the densest
  subnet), docs/methods.md.
- `csp`: compressed-sensing pruning for one tier. The forward pass uses the block
  soft-thresholded weights x = S_lambda(w) (the proximal step of a group-L1 penalty),
  with lambda set each step so the scheduled share of blocks is exactly zero; the
  gradient reaches the dense weights w straight through, and after each update the
  compression error of the pruned blocks is fed back decayed by `csp_feedback`, so a
  pruned block can return if the loss keeps asking for it, and otherwise fades to zero. At `end`
  the support and lambda freeze and the surviving weights fine-tune.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import tensorflow_model_optimization as tfmot
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import PruneLowMagnitude

from ._tf import keras, tf
from .config import ModelConfig
from .errors import ConfigError, InternalError
from .frontend import edge_padding_default
from .model import build_training_model, forward, get_params, layer_names, param_shapes
from .quant import FLOAT, Emulated, range_points
from .rnnt_loss import alignment_kl, ctc_loss, lattice_kl, onset_frames, rnnt_loss
from .sparsity import METHODS, nested_masks, tier_name


class Method:
    """Base: a dense Keras model. Subclasses override what differs."""

    name = "dense"
    aux_ctc = True  # adds `train.ctc_weight` x CTC of a linear head on the encoder output (training only)

    def __init__(self, cfg: ModelConfig, vocab: int, total_steps: int, tier: int | None) -> None:
        self.cfg, self.vocab, self.total_steps, self.tier = cfg, vocab, total_steps, tier
        self.ctc_weight = cfg.train.ctc_weight if self.aux_ctc else 0.0
        self.model = build_training_model(cfg, vocab, encoder_out=True)  # [logits, encoder output]
        self.ctc_head = None
        if self.ctc_weight > 0:  # built after the model, so the model's initialization does not depend on it
            self.ctc_head = keras.layers.Dense(vocab, name="ctc_head")
            self.ctc_head.build((None, None, cfg.joiner.dim))

    def _aux_trackables(self) -> dict[str, Any]:
        return {"ctc_head": self.ctc_head} if self.ctc_head is not None else {}

    def trackables(self) -> dict[str, Any]:
        return {"model": self.model, **self._aux_trackables()}

    @property
    def trainable(self) -> list[tf.Variable]:
        return self.model.trainable_variables + self._aux_trainable()

    def _aux_trainable(self) -> list[tf.Variable]:
        return list(self.ctc_head.trainable_variables) if self.ctc_head is not None else []

    def _first_emit(self, feats: tf.Tensor, frames: tf.Tensor) -> tf.Tensor | None:
        """(B,) the first encoder frame at which each utterance's first label may be emitted (its speech onset), or
        None when `train.first_label_onset` is off."""
        rel, stack = self.cfg.train.first_label_onset, self.cfg.encoder.stack
        fe = self.cfg.frontend
        # train.pad_edges: the encoder frames that hold any of the leading zeros (for a corpus that gets none, the
        # onset is only not looked for in its first ~0.1 s)
        zero_frames = edge_padding_default(fe) // fe.hop_samples  # feature frames that start in the zeros
        skip = -(-zero_frames // stack) if self.cfg.train.pad_edges else 0
        return onset_frames(feats, frames, stack, rel, skip) if rel > 0 else None

    def _loss(
        self,
        logits: tf.Tensor,
        enc: tf.Tensor,
        labels: tf.Tensor,
        frames: tf.Tensor,
        label_lengths: tf.Tensor,
        first_emit: tf.Tensor | None,
    ) -> tf.Tensor:
        """RNN-T loss of the logits (alignments emitting the first label before `first_emit` left out, if given),
        plus the weighted auxiliary CTC loss of the encoder output enc (B, T, D) if configured."""
        loss = rnnt_loss(logits, labels, frames, label_lengths, first_emit=first_emit)
        if self.ctc_head is None:
            return loss
        return loss + self.ctc_weight * ctc_loss(self.ctc_head(enc), labels, frames, label_lengths)

    def extra_signature(self) -> list[tf.TensorSpec]:
        return []

    @property
    def schedule(self) -> tuple[float, int, int]:
        """(peak learning rate, warm-up steps, step where the cosine decay ends)."""
        return self.cfg.train.learning_rate, self.cfg.train.warmup_steps, self.cfg.train.steps

    def prepare(self, batch: Any) -> None:
        """Before the first step of a fresh run; `batch(step)` gives the run's batches."""
        return None

    def ranges(self) -> dict[str, dict[str, np.ndarray]]:
        """Learned int8 activation ranges per tier (AAT only)."""
        return {}

    def before_step(self, step: int, batch_size: int) -> list[np.ndarray]:
        """Python-side work before step `step`; returns the step's extra tensor inputs."""
        return []

    def loss(
        self,
        feats: tf.Tensor,
        pred_in: tf.Tensor,
        labels: tf.Tensor,
        frames: tf.Tensor,
        label_lengths: tf.Tensor,
        *extra: tf.Tensor,
    ) -> tf.Tensor:
        logits, enc = self.model([feats, pred_in], training=True)
        return self._loss(logits, enc, labels, frames, label_lengths, self._first_emit(feats, frames))

    def after_update(self, *extra: tf.Tensor) -> None:
        """Graph-side work after the optimizer update."""
        return None

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        """(params, {tier name: {param: keep mask}}) at the end of training."""
        return get_params(self.model, self.cfg), {}

    def meta(self) -> dict[str, Any]:
        return {"method": self.name, **({"tier": self.tier} if self.tier is not None else {})}


class TfmotMethod(Method):
    name = "tfmot"

    def __init__(self, cfg: ModelConfig, vocab: int, total_steps: int, tier: int | None) -> None:
        super().__init__(cfg, vocab, total_steps, tier)
        sp = cfg.sparsity
        # TFMOT prunes only at begin + k * frequency, so end must be on that grid to reach the tier
        begin = int(math.ceil(sp.begin * total_steps))
        end = begin + sp.update_every * max(1, round((sp.end * total_steps - begin) / sp.update_every))
        if end >= total_steps:
            raise ConfigError(
                f"the TFMOT schedule ends at step {end}, not before the last step {total_steps}; lower "
                "sparsity.update_every or sparsity.end."
            )
        schedule = tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0, final_sparsity=tier / 100, begin_step=begin, end_step=end, frequency=sp.update_every
        )
        names = [n for n, weights in layer_names(cfg).items() if any(sp.prunes(f"{n}/{w}") for w in weights)]
        for pname, shape in param_shapes(cfg, vocab).items():
            if (
                sp.prunes(pname)
                and len(shape) == 2
                and (shape[0] <= sp.block[0] or shape[1] <= sp.block[1])
                and sp.block != (1, 1)
            ):
                # TFMOT squeezes a one-row (or one-column) block grid to rank 1 and then fails
                # (pruning_impl._maybe_update_block_mask)
                raise ConfigError(
                    f"TFMOT cannot prune {pname} {shape} in {sp.block} blocks: the kernel spans only one block; "
                    "use a smaller sparsity.block or a larger layer."
                )

        def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
            if layer.name in names:
                return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, block_size=sp.block)
            return layer

        self.model = keras.models.clone_model(self.model, clone_function=wrap)
        self.wrappers = [ly for ly in self.model.layers if isinstance(ly, PruneLowMagnitude)]
        if len(self.wrappers) != len(names):
            raise InternalError(f"TFMOT wrapped {len(self.wrappers)} layers, expected {len(names)}.")

    def before_step(self, step: int, batch_size: int) -> list[np.ndarray]:
        for w in self.wrappers:  # what UpdatePruningStep does, keyed by our step so resume is exact
            w.pruning_step.assign(step)
        return []

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        masks: dict[str, np.ndarray] = {}
        for wrapper in self.wrappers:
            lname = wrapper.layer.name
            for weight, mask, _ in wrapper.pruning_vars:
                wname = weight.name.split("/")[-1].split(":")[0]
                masks[f"{lname}/{wname}"] = mask.numpy() > 0.5
        stripped = tfmot.sparsity.keras.strip_pruning(self.model)
        params = get_params(stripped, self.cfg)
        params = {k: (v * masks[k]).astype(np.float32) if k in masks else v for k, v in params.items()}
        return params, {tier_name(self.tier): masks}


class _Functional(Method):
    """Methods that train a flat dict of variables through `model.forward`."""

    def __init__(self, cfg: ModelConfig, vocab: int, total_steps: int, tier: int | None) -> None:
        super().__init__(cfg, vocab, total_steps, tier)
        init = get_params(self.model, cfg)  # same initialization as the dense Keras model
        self.names = list(init)
        self.module = tf.Module()
        self.module.params = {n.replace("/", "."): tf.Variable(v, name=n.replace("/", "_")) for n, v in init.items()}
        self.pruned = [n for n in self.names if cfg.sparsity.prunes(n)]

    def var(self, name: str) -> tf.Variable:
        return self.module.params[name.replace("/", ".")]

    def trackables(self) -> dict[str, Any]:
        return {"params": self.module, **self._aux_trackables()}

    @property
    def trainable(self) -> list[tf.Variable]:
        return [self.var(n) for n in self.names] + self._aux_trainable()


class OmniMethod(_Functional):
    name = "omni"

    def __init__(self, cfg: ModelConfig, vocab: int, total_steps: int, tier: int | None) -> None:
        super().__init__(cfg, vocab, total_steps, None)
        self.tiers = cfg.sparsity.tiers
        self.module.masks = {
            n.replace("/", "."): tf.Variable(
                tf.ones((len(self.tiers), *self.var(n).shape)), trainable=False, name=f"mask_{n.replace('/', '_')}"
            )
            for n in self.pruned
        }
        # the pruned layers (a layer's kernels share its sampled tier), in parameter order
        self.layers = list(dict.fromkeys(n.split("/")[0] for n in self.pruned))

    def mask(self, name: str) -> tf.Variable:
        return self.module.masks[name.replace("/", ".")]

    def subnets_per_step(self) -> int:
        """K, the subnets every step trains (what `select_subnets` / `select_tiers` return). The step's graph is
        traced with this K, so the LSTM's products run as K plain MatMuls (`cells.variant_matmul`)."""
        sp = self.cfg.sparsity
        return sp.tiers_per_step if sp.sampling == "layer" else min(sp.tiers_per_step, len(self.tiers))

    def extra_signature(self) -> list[tf.TensorSpec]:
        # per trained subnet, the tier index of every pruned layer (K, L); each subnet's rows of the batch (K, B')
        k = self.subnets_per_step()
        return [tf.TensorSpec((k, None), tf.int32), tf.TensorSpec((k, None), tf.int32)]

    def update_masks(self, step: int) -> None:
        sp = self.cfg.sparsity
        fractions = {i: sp.ramp(step, self.total_steps, t) for i, t in enumerate(self.tiers)}
        for n in self.pruned:
            masks = nested_masks(self.var(n).numpy(), fractions, sp.block)
            self.mask(n).assign(np.stack([masks[i] for i in range(len(self.tiers))]).astype(np.float32))

    def before_step(self, step: int, batch_size: int) -> list[np.ndarray]:
        sp = self.cfg.sparsity
        t0, t1 = math.ceil(sp.begin * self.total_steps), math.ceil(sp.end * self.total_steps)
        if (t0 <= step < t1 and (step - t0) % sp.update_every == 0) or step == t1:
            self.update_masks(step)
        if sp.sampling == "layer":
            subnets = self.select_subnets(step)
            return [subnets, self._sub_batches(step, batch_size, len(subnets), sp.tier_batch, 8, same_rows=True)]
        sel = self.select_tiers(step)
        idx = self._sub_batches(step, batch_size, len(sel), sp.tier_batch, 8, same_rows=sp.distill > 0)
        return [np.repeat(np.array(sel, np.int32)[:, None], len(self.layers), axis=1), idx]

    def select_subnets(self, step: int) -> np.ndarray:
        """(K, L) tier indices of the subnets trained at `step` under layer-wise sampling (the sandwich rule): the
        densest, the sparsest, then `tiers_per_step` - 2 with every pruned layer's tier drawn uniformly."""
        rng = np.random.default_rng([self.cfg.train.seed, step, 11])
        n, layers = len(self.tiers), len(self.layers)
        drawn = rng.integers(0, n, size=(max(0, self.cfg.sparsity.tiers_per_step - 2), layers))
        return np.concatenate([np.zeros((1, layers)), np.full((1, layers), n - 1), drawn]).astype(np.int32)

    def select_tiers(self, step: int) -> list[int]:
        """Tier indices trained at `step` (`subnets_per_step()` of them, the K the step's graph is traced with): the
        densest and the sparsest plus sampled others (3+ per step); with 2 per step the sparsest plus one sampled
        from the rest, with 1 one sampled tier, so every tier is trained."""
        rng = np.random.default_rng([self.cfg.train.seed, step, 7])
        n, k = len(self.tiers), self.subnets_per_step()

        def pick(pool: list[int], size: int) -> list[int]:
            """`size` distinct tiers of `pool`, uniformly."""
            if size == 1:
                return [int(rng.integers(pool[0], pool[-1] + 1))]
            return rng.choice(pool, size=size, replace=False).tolist()

        if k >= 3:
            return sorted({0, n - 1, *pick(list(range(1, n - 1)), k - 2)})
        if k == 2:
            return sorted({n - 1, *pick(list(range(n - 1)), 1)})
        return pick(list(range(n)), 1)

    def _tier_params(self, sel: tf.Tensor, weights: dict[str, Any] | None = None) -> dict[str, tf.Tensor]:
        """The shared weights (or `weights`) under each selected subnet's masks, with a leading subnet axis. `sel`:
        (K,) one tier index per subnet, or (K, L) one per subnet and pruned layer (`self.layers`)."""
        sel = tf.convert_to_tensor(sel)
        k = tf.shape(sel)[0]
        w = weights if weights is not None else {n: self.var(n) for n in self.names}

        def tier_of(n: str) -> tf.Tensor:
            return sel if sel.shape.rank == 1 else sel[:, self.layers.index(n.split("/")[0])]

        return {
            n: w[n][None] * tf.gather(self.mask(n), tier_of(n))
            if n in self.pruned
            else tf.broadcast_to(w[n][None], tf.concat([[k], tf.shape(w[n])], 0))
            for n in self.names
        }

    def _sub_batches(
        self, step: int, batch_size: int, subnets: int, share: float, salt: int, same_rows: bool = False
    ) -> np.ndarray:
        """(subnets, B') rows of the batch each subnet trains on: a seeded random `share` of it, drawn per subnet or,
        with `same_rows`, once for all of them (what in-place distillation compares)."""
        rng = np.random.default_rng([self.cfg.train.seed, step, salt])
        sub = max(1, int(round(share * batch_size)))
        draws = 1 if same_rows else subnets
        rows = [np.sort(rng.choice(batch_size, size=sub, replace=False)) for _ in range(draws)]
        return np.stack(rows * subnets if same_rows else rows).astype(np.int32)

    def _tiers_loss(
        self,
        logits: tf.Tensor,
        enc: tf.Tensor,
        idx: tf.Tensor,
        labels: tf.Tensor,
        frames: tf.Tensor,
        label_lengths: tf.Tensor,
        first_emit: tf.Tensor | None,
    ) -> tf.Tensor:
        """`_loss` of (K, B', ...) logits and encoder outputs, tier k's rows of the batch being idx[k] (labels, frames
        and first_emit are the whole batch's, gathered here)."""
        rows = lambda t: _tier_rows(t, idx)  # noqa: E731
        return self._loss(
            _merge_tiers(logits),
            _merge_tiers(enc),
            rows(labels),
            rows(frames),
            rows(label_lengths),
            None if first_emit is None else rows(first_emit),
        )

    def loss(self, feats, pred_in, labels, frames, label_lengths, *extra):  # noqa: ANN001, ANN201
        sel, idx = extra
        enc, _, logits = forward(
            self.cfg, self._tier_params(sel), tf.gather(feats, idx), tf.gather(pred_in, idx), parts=True
        )
        loss = self._tiers_loss(logits, enc, idx, labels, frames, label_lengths, self._first_emit(feats, frames))
        a = self.cfg.sparsity.distill
        if a == 0 or (len(self.tiers) == 1 and self.cfg.sparsity.sampling == "tier"):  # no sparser subnet to teach
            return loss
        # in-place distillation: subnet 0 is the densest (both samplings put it first) and every subnet has the same
        # rows, so its output distributions are the others' target along its alignments of the transcript
        students = logits[1:]
        teacher = tf.broadcast_to(logits[:1], tf.shape(students))
        rows = lambda t: _tier_rows(t, idx[1:])  # noqa: E731
        return loss + a * alignment_kl(
            _merge_tiers(teacher), _merge_tiers(students), rows(labels), rows(frames), rows(label_lengths)
        )

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        params = {n: self.var(n).numpy() for n in self.names}
        masks = {
            tier_name(t): {n: self.mask(n)[i].numpy() > 0.5 for n in self.pruned} for i, t in enumerate(self.tiers)
        }
        return params, masks

    def meta(self) -> dict[str, Any]:
        sp = self.cfg.sparsity
        return {
            "method": self.name,
            "tiers": list(self.tiers),
            "tiers_per_step": min(sp.tiers_per_step, len(self.tiers)),
            "tier_batch": sp.tier_batch,
            **({"sampling": sp.sampling} if sp.sampling != "tier" else {}),
            **({"distill": sp.distill} if sp.distill else {}),
        }


def _merge_tiers(t: tf.Tensor) -> tf.Tensor:
    """(K, B', ...) per-tier rows → (K * B', ...)."""
    return tf.reshape(t, tf.concat([[-1], tf.shape(t)[2:]], 0))


def _tier_rows(t: tf.Tensor, idx: tf.Tensor) -> tf.Tensor:
    """A whole-batch tensor's rows for each tier (idx: (K, B') row indices), merged as `_merge_tiers` merges outputs."""
    return _merge_tiers(tf.gather(t, idx))


def _block_norms(w: tf.Tensor, block: tuple[int, int]) -> tf.Tensor:
    bi, bo = block
    r, c = w.shape
    nr, nc = math.ceil(r / bi), math.ceil(c / bo)
    padded = tf.pad(w, [[0, nr * bi - r], [0, nc * bo - c]])
    return tf.sqrt(tf.reduce_sum(tf.square(tf.reshape(padded, [nr, bi, nc, bo])), axis=[1, 3]) + 1e-20)


def _expand(blocks: tf.Tensor, shape: tuple[int, int], block: tuple[int, int]) -> tf.Tensor:
    full = tf.repeat(tf.repeat(blocks, block[0], axis=0), block[1], axis=1)
    return full[: shape[0], : shape[1]]


class CspMethod(_Functional):
    name = "csp"

    def __init__(self, cfg: ModelConfig, vocab: int, total_steps: int, tier: int | None) -> None:
        super().__init__(cfg, vocab, total_steps, tier)
        blocks = {n: _block_norms(tf.zeros(self.var(n).shape), cfg.sparsity.block).shape for n in self.pruned}
        self.module.keep = {
            n.replace("/", "."): tf.Variable(tf.ones(blocks[n]), trainable=False, name=f"keep_{n.replace('/', '_')}")
            for n in self.pruned
        }
        self.module.lam = {
            n.replace("/", "."): tf.Variable(0.0, trainable=False, name=f"lam_{n.replace('/', '_')}")
            for n in self.pruned
        }
        self.module.frozen = tf.Variable(False, trainable=False, name="frozen")
        # real entries per block (edge blocks may be partial): constant per kernel
        self.block_sizes = {n: _block_norms(tf.ones(self.var(n).shape), cfg.sparsity.block) ** 2 for n in self.pruned}

    def extra_signature(self) -> list[tf.TensorSpec]:
        return [tf.TensorSpec((), tf.float32)]

    def before_step(self, step: int, batch_size: int) -> list[np.ndarray]:
        sp = self.cfg.sparsity
        if sp.frozen(step, self.total_steps) and not bool(self.module.frozen.numpy()):
            frac = tf.constant(self.tier / 100, tf.float32)
            for n in self.pruned:  # freeze the support and lambda at `end`
                lam, keep = self._threshold(n, self.var(n), frac)
                self.module.keep[n.replace("/", ".")].assign(keep)
                self.module.lam[n.replace("/", ".")].assign(lam)
            self.module.frozen.assign(True)
        return [np.float32(sp.ramp(step, self.total_steps, self.tier))]

    def _threshold(self, n: str, w: tf.Tensor, frac: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """keep = all but the weakest blocks holding `frac` of the weights; lambda = the largest pruned block RMS."""
        norms = _block_norms(w, self.cfg.sparsity.block)
        sizes = tf.reshape(self.block_sizes[n], [-1])
        flat = tf.reshape(norms, [-1]) / tf.sqrt(sizes)  # block RMS, so partial edge blocks compete fairly
        order = tf.argsort(flat, stable=True)
        cum = tf.concat([[0.0], tf.cumsum(tf.gather(sizes, order))], 0)
        n_prune = tf.cast(tf.argmin(tf.abs(cum - frac * tf.reduce_sum(sizes))), tf.int32)
        ranks = tf.scatter_nd(order[:, None], tf.range(tf.size(flat)), tf.shape(flat))
        keep = tf.reshape(tf.cast(ranks >= n_prune, tf.float32), tf.shape(norms))
        pruned_norms = tf.where(ranks < n_prune, flat, 0.0)
        return tf.reduce_max(pruned_norms), keep

    def compress(self, n: str, w: tf.Tensor, frac: tf.Tensor) -> tf.Tensor:
        key = n.replace("/", ".")
        lam_now, keep_now = self._threshold(n, w, frac)
        # once frozen, the support and lambda are fixed (a jump to unshrunk weights at the freeze
        # changes the function abruptly); a kept block never shrinks to exactly zero
        lam = tf.where(self.module.frozen, self.module.lam[key], lam_now)
        keep = tf.where(self.module.frozen, self.module.keep[key], keep_now)
        block = self.cfg.sparsity.block
        rms = _block_norms(w, block) / tf.sqrt(self.block_sizes[n])
        scale = keep * tf.maximum(1e-3, 1.0 - lam / rms)
        return w * _expand(scale, tuple(w.shape), self.cfg.sparsity.block)

    def params_now(self, frac: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            n: self.compress(n, self.var(n), frac) if n in self.pruned else tf.identity(self.var(n)) for n in self.names
        }

    def loss(self, feats, pred_in, labels, frames, label_lengths, *extra):  # noqa: ANN001, ANN201
        (frac,) = extra
        params = {n: self.compress(n, self.var(n), frac) if n in self.pruned else self.var(n) for n in self.names}
        # straight-through: the forward pass sees x = S(w), the gradient reaches w as if x = w
        params = {
            n: self.var(n) + tf.stop_gradient(p - self.var(n)) if n in self.pruned else p for n, p in params.items()
        }
        enc, _, logits = forward(self.cfg, {n: p[None] for n, p in params.items()}, feats, pred_in, parts=True)
        return self._loss(logits[0], enc[0], labels, frames, label_lengths, self._first_emit(feats, frames))

    def after_update(self, *extra: tf.Tensor) -> None:
        (frac,) = extra
        beta = self.cfg.sparsity.csp_feedback
        for n in self.pruned:
            # the compression error of the pruned blocks (all of them) is fed back decayed: they fade
            # unless the gradient keeps pushing them back over the threshold. Surviving blocks keep
            # their dense values (decaying their shrinkage too compounds into a shrinking network).
            w = self.var(n)
            pruned = tf.cast(tf.equal(self.compress(n, w, frac), 0.0), w.dtype)
            w.assign(w * (1.0 - (1.0 - beta) * pruned))

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        params = {
            n: v.numpy().astype(np.float32)
            for n, v in self.params_now(tf.constant(self.tier / 100, tf.float32)).items()
        }
        return params, {tier_name(self.tier): {n: params[n] != 0 for n in self.pruned}}


class AatMethod(OmniMethod):
    """Accelerator-aware training: fine-tune a trained checkpoint with the int8 kernels emulated.

    The forward pass rounds weights, activations, gate outputs and the recurrent state
    exactly where the int8 graphs do (quant.py), gradients pass straight through, and
    each activation's (min, max) starts where the converter's calibration puts it (`aat.range_init =
    "calibration"`: the ranges `init.ranges` holds for every tier, `export.calibrated_ranges`) or at the
    min/max of the first `aat.calibration_batches` training batches ("batches"), and then takes in every
    batch's min/max (`aat.range_tracking`: running min/max, or a moving average), or stays there ("frozen").
    Masks stay as the checkpoint has them (pruned weights stay zero).

    Tiers sharing weights (omni): the fine-tuning keeps ONE set of weights and trains
    `aat.tiers_per_step` tiers per step (the densest + the sparsest + sampled ones), each
    on an `aat.tier_batch` share of the batch, one update per step, each tier with its own activation ranges, since a
    sparser tier
    has other activation statistics. A single-tier checkpoint (dense, tfmot, csp) trains its tier
    on the whole batch.
    """

    name = "aat"
    aux_ctc = False  # fine-tuning an exported function: no auxiliary head

    def __init__(self, cfg: ModelConfig, vocab: int, total_steps: int, init: Any, emulate: bool = True) -> None:
        """`emulate=False`: the same fine-tuning in float (the control that separates AAT from extra training)."""
        _Functional.__init__(self, cfg, vocab, total_steps, None)
        self.emulate = emulate
        if not emulate:
            self.name = "finetune"
        self.init_meta = dict(init.meta)
        self.tiers = tuple(init.tiers)
        self.dense_base = not init.masks
        for n in self.names:
            self.var(n).assign(init.params[n])
        masks = [init.masks[tier_name(t)] if init.masks else {} for t in self.tiers]
        self.module.masks = {
            n.replace("/", "."): tf.Variable(
                np.stack([m.get(n, np.ones(self.var(n).shape, bool)) for m in masks]).astype(np.float32),
                trainable=False,
                name=f"mask_{n.replace('/', '_')}",
            )
            for n in self.pruned
        }
        # the checkpoint as it was, frozen: the float teacher of `aat.distill`
        self.teacher = None if cfg.aat.distill == 0 else {n: tf.constant(init.params[n]) for n in self.names}
        self.points = range_points(cfg.encoder.layers)
        self.module.ranges = {
            p.replace("/", "."): tf.Variable(
                tf.zeros((len(self.tiers), 2)), trainable=False, name=f"range_{p.replace('/', '_')}"
            )
            for p in self.points
        }
        self.sub_batch = cfg.aat.tier_batch if len(self.tiers) > 1 else 1.0
        self.start_ranges = None
        if emulate:
            missing = [t for t in self.tiers if tier_name(t) not in init.ranges]
            if missing:
                raise InternalError(f"AAT starts from the calibrated ranges of every tier; tier {missing[0]} has none.")
            self.start_ranges = {
                p: np.stack([init.ranges[tier_name(t)][p] for t in self.tiers]).astype(np.float32) for p in self.points
            }

    def subnets_per_step(self) -> int:
        return min(self.cfg.aat.tiers_per_step, len(self.tiers))

    def extra_signature(self) -> list[tf.TensorSpec]:
        k = self.subnets_per_step()
        return [tf.TensorSpec((k,), tf.int32), tf.TensorSpec((k, None), tf.int32)]

    def range_var(self, point: str) -> tf.Variable:
        return self.module.ranges[point.replace("/", ".")]

    @property
    def schedule(self) -> tuple[float, int, int]:
        a = self.cfg.aat
        return a.learning_rate, a.warmup_steps, self.total_steps

    def prepare(self, batch: Any) -> None:
        """Start every tier's ranges where the converter's calibration puts them; they stay there (the weights adapt
        to the fixed int8 grid)."""
        if self.emulate:
            for p in self.points:
                self.range_var(p).assign(self.start_ranges[p])

    def before_step(self, step: int, batch_size: int) -> list[np.ndarray]:
        sel = self.select_tiers(step)
        return [np.array(sel, np.int32), self._sub_batches(step, batch_size, len(sel), self.sub_batch, 9)]

    def loss(self, feats, pred_in, labels, frames, label_lengths, *extra):  # noqa: ANN001, ANN201
        sel, idx = extra
        q = Emulated({p: tf.gather(self.range_var(p), sel) for p in self.points}) if self.emulate else FLOAT
        feats_k, pred_k = tf.gather(feats, idx), tf.gather(pred_in, idx)
        enc, _, logits = forward(self.cfg, self._tier_params(sel), feats_k, pred_k, q, parts=True)
        loss = self._tiers_loss(logits, enc, idx, labels, frames, label_lengths, self._first_emit(feats, frames))
        if self.teacher is None:
            return loss
        # distillation: the same tier of the checkpoint as it was, in float, is the target at every lattice node
        _, _, teacher = forward(self.cfg, self._tier_params(sel, self.teacher), feats_k, pred_k, FLOAT, parts=True)
        kl = lattice_kl(
            _merge_tiers(teacher), _merge_tiers(logits), _tier_rows(frames, idx), _tier_rows(label_lengths, idx)
        )
        a = self.cfg.aat.distill
        return (1.0 - a) * loss + a * kl

    def result(self) -> tuple[dict[str, np.ndarray], dict[str, dict[str, np.ndarray]]]:
        params, masks = super().result()
        return params, ({} if self.dense_base else masks)  # a dense checkpoint stays a dense one

    def ranges(self) -> dict[str, dict[str, np.ndarray]]:
        if not self.emulate:
            return {}
        return {tier_name(t): {p: self.range_var(p)[i].numpy() for p in self.points} for i, t in enumerate(self.tiers)}

    def meta(self) -> dict[str, Any]:
        a = self.cfg.aat
        info = {
            "steps": self.total_steps,
            "learning_rate": a.learning_rate,
            "tiers": list(self.tiers),
            "distill": a.distill,
        }
        if not self.emulate:
            return {**self.init_meta, "float_finetune": info}
        return {
            **self.init_meta,
            "aat": {
                **info,
                "tiers_per_step": min(a.tiers_per_step, len(self.tiers)),
                "tier_batch": self.sub_batch,
                "ranges": "calibrated, frozen",
            },
        }


def check_method(name: str, cfg: ModelConfig, tier: int | None) -> None:
    """Refuse a method/tier combination before any work is done."""
    if name not in METHODS:
        raise ConfigError(f"unknown training method {name!r}; choose one of {', '.join(METHODS)}.")
    if tier is not None:
        cfg.sparsity.check_tier(tier)
    if name in ("tfmot", "csp"):
        if tier is None:
            raise ConfigError(
                f"method {name} trains one model per tier; pass --tier (one of "
                f"{', '.join(map(str, cfg.sparsity.tiers))})."
            )
        if tier == 0:
            raise ConfigError(f"tier 0 is the dense model; train it with --method dense, not {name}.")
    elif name == "dense" and tier not in (None, 0):
        raise ConfigError(
            f"method dense trains tier 0 only, got --tier {tier}; use tfmot, omni or csp for sparse tiers."
        )


def make_method(
    name: str, cfg: ModelConfig, vocab: int, total_steps: int, tier: int | None = None, init: Any = None
) -> Method:
    """`name` one of METHODS, or "aat" to fine-tune the checkpoint `init` with the int8 kernels emulated."""
    if name in ("aat", "finetune"):
        if init is None:
            raise InternalError(f"{name} fine-tunes a trained checkpoint; none given.")
        return AatMethod(cfg, vocab, total_steps, init, emulate=name == "aat")
    check_method(name, cfg, tier)
    return {"dense": Method, "tfmot": TfmotMethod, "omni": OmniMethod, "csp": CspMethod}[name](
        cfg, vocab, total_steps, tier if name in ("tfmot", "csp") else None
    )
