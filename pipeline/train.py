"""Training loop: seeded, resumable, with progress bar, TensorBoard scalars and checkpoints.

The batch order is a pure function of (seed, step), and SpecAugment draws from a
stateless generator keyed by (seed, step), so a run resumed from a checkpoint sees
exactly the batches it would have seen without the interruption.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ._tf import keras, tf
from .checkpoint import ModelCheckpoint
from .config import AugmentConfig, ModelConfig, TrainConfig
from .distribute import Distribution
from .errors import ArtifactError, ConfigError, HostError, InternalError
from .features import FeatureSet, FeatureShards
from .methods import make_method

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batch:
    feats: np.ndarray  # (B, T, M) float32, T a multiple of `stack`
    pred_in: np.ndarray  # (B, U+1) int32: blank then labels
    labels: np.ndarray  # (B, U) int32
    frames: np.ndarray  # (B,) encoder frames
    label_lengths: np.ndarray  # (B,)

    def shard(self, worker: int, workers: int) -> Batch:
        """This worker's rows of the global batch (every worker builds the same global batch)."""
        if workers == 1:
            return self
        rows = np.array_split(np.arange(len(self.frames)), workers)[worker]
        u = max(int(self.label_lengths[rows].max()), 1)
        return Batch(
            self.feats[rows],
            self.pred_in[rows, : u + 1],
            self.labels[rows, :u],
            self.frames[rows],
            self.label_lengths[rows],
        )


class Batcher:
    """Length-bucketed batches; order and content are a function of (seed, step) only."""

    def __init__(
        self, data: FeatureSet | FeatureShards, batch_size: int, stack: int, seed: int, min_rows: int = 1
    ) -> None:
        if len(data) < max(1, min_rows):
            raise InternalError("too few training features for one batch.")
        self.data, self.stack, self.seed = data, stack, seed
        order = np.argsort(data.lengths, kind="stable")
        # a short last bucket is kept unless it cannot give every worker a row
        self.buckets = [
            b for b in (order[i : i + batch_size] for i in range(0, len(order), batch_size)) if len(b) >= min_rows
        ]

    def batch(self, step: int) -> Batch:
        epoch, pos = divmod(step, len(self.buckets))
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.buckets))
        idx = self.buckets[perm[pos]]
        feats, labels = self.data.rows(idx)
        t_max = max(len(f) for f in feats)
        t_max = int(math.ceil(t_max / self.stack) * self.stack)
        u_max = max(len(x) for x in labels)
        fb = np.zeros((len(idx), t_max, feats[0].shape[1]), np.float32)
        lb = np.zeros((len(idx), u_max), np.int32)
        for i, (f, y) in enumerate(zip(feats, labels)):
            fb[i, : len(f)] = f
            lb[i, : len(y)] = y
        frames = np.array([math.ceil(len(f) / self.stack) for f in feats], np.int32)
        pred_in = np.concatenate([np.zeros((len(idx), 1), np.int32), lb], axis=1)
        return Batch(fb, pred_in, lb, frames, np.array([len(y) for y in labels], np.int32))

    def prefetched(self, start: int, end: int) -> Iterator[Batch]:
        """The batches of steps `start`..`end`-1, each read (from disk, for `FeatureShards`) while the step before it
        trains."""
        if start >= end:
            return
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(self.batch, start)
            for step in range(start + 1, end + 1):
                b = pending.result()
                if step < end:
                    pending = pool.submit(self.batch, step)
                yield b


def spec_augment(x: tf.Tensor, aug: AugmentConfig, seed: tf.Tensor) -> tf.Tensor:
    """Per utterance of x (B, T, M): a random channel and vocal-tract warp of the mel axis, then
    SpecAugment's zeroed (= mean, after normalization) time and frequency bands."""
    b, t, m = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
    if aug.freq_warp > 0:  # VTLP-style: bin j takes the value at j * alpha (linear interpolation, clamped)
        alpha = 1 + aug.freq_warp * (
            2 * tf.random.stateless_uniform([b, 1], seed=tf.stack([seed, tf.constant(90, tf.int64)])) - 1
        )
        pos = tf.clip_by_value(
            tf.cast(tf.range(m), tf.float32)[None, :] * alpha, 0.0, tf.cast(m - 1, tf.float32)
        )  # (B, M)
        lo = tf.cast(tf.floor(pos), tf.int32)
        hi = tf.minimum(lo + 1, m - 1)
        w = (pos - tf.floor(pos))[:, None, :]
        x = tf.gather(x, lo, axis=2, batch_dims=1) * (1 - w) + tf.gather(x, hi, axis=2, batch_dims=1) * w
    if aug.channel_sigma > 0:  # a smooth random microphone/room response: offset, tilt and bow across the mel axis
        u = tf.linspace(-1.0, 1.0, m)
        basis = tf.stack([tf.ones_like(u), u, u * u - 1 / 3])  # (3, M)
        coef = aug.channel_sigma * tf.random.stateless_normal([b, 3], seed=tf.stack([seed, tf.constant(91, tf.int64)]))
        x = x + tf.matmul(coef, basis)[:, None, :]
    keep = tf.ones_like(x, dtype=tf.bool)
    for k, (count, width, axis_len, axis) in enumerate(
        ((aug.time_masks, aug.time_mask_frames, t, 1), (aug.freq_masks, aug.freq_mask_bins, m, 2))
    ):
        for j in range(count):
            u = tf.random.stateless_uniform([b, 2], seed=tf.stack([seed, tf.cast(10 * k + j, tf.int64)]))
            w = tf.cast(u[:, 0] * (width + 1), tf.int32)
            start = tf.cast(u[:, 1] * tf.cast(tf.maximum(axis_len - w, 1), tf.float32), tf.int32)
            pos = tf.range(axis_len)[None, :]
            band = (pos >= start[:, None]) & (pos < (start + w)[:, None])  # (B, L)
            band = band[:, :, None] if axis == 1 else band[:, None, :]
            keep &= ~band
    return tf.where(keep, x, tf.zeros_like(x))


def learning_rate(step: int | tf.Tensor, peak: float, warmup: int, total: int) -> tf.Tensor:
    """Linear warm-up over `warmup` steps, then cosine decay to 10% of `peak` at step `total`."""
    s = tf.cast(step, tf.float32)
    warm = tf.minimum(1.0, (s + 1) / max(1, warmup))
    prog = tf.clip_by_value((s - warmup) / max(1, total - warmup), 0.0, 1.0)
    return peak * warm * (0.1 + 0.9 * 0.5 * (1 + tf.cos(math.pi * prog)))


@dataclass(frozen=True)
class TrainResult:
    params: dict[str, np.ndarray]
    steps: int
    final_loss: float
    wall_seconds: float  # of this invocation (a resumed run counts only its own part)
    masks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # tier name → param → keep mask
    method_meta: dict = field(default_factory=dict)
    ranges: dict[str, dict[str, np.ndarray]] = field(
        default_factory=dict
    )  # tier name → point → learned int8 (min, max) (AAT)


def _optimizer(train: TrainConfig) -> keras.optimizers.Optimizer:
    """Adam with global gradient-norm clipping."""
    return keras.optimizers.Adam(learning_rate=train.learning_rate, global_clipnorm=train.clip_norm)


class Trainer:
    """Owns the model, optimizer and checkpoint manager of one training run in `work_dir`."""

    def __init__(
        self,
        cfg: ModelConfig,
        data: FeatureSet | FeatureShards,
        work_dir: Path,
        method: str = "dense",
        tier: int | None = None,
        steps: int | None = None,
        dist: Distribution | None = None,
        init: ModelCheckpoint | None = None,
    ) -> None:
        """`method` "aat" fine-tunes the checkpoint `init` (accelerator-aware training, `cfg.aat`); "finetune" does
        the same steps in float (the control for AAT)."""
        self.cfg, self.data, self.work_dir = cfg, data, Path(work_dir)
        tuning = method in ("aat", "finetune")
        self.total_steps = steps or (cfg.aat.steps if tuning else cfg.train.steps)
        # a fine-tuning phase draws its own batch order and augmentation, not a replay of the first run's
        self.seed = cfg.train.seed + (1 if tuning else 0)
        self.dist = dist or Distribution(tf.distribute.get_strategy(), "default")
        if self.dist.workers > cfg.train.batch_size:
            raise ConfigError(
                f"{self.dist.workers} workers cannot share a batch of {cfg.train.batch_size}; raise train.batch_size."
            )
        keras.utils.set_random_seed(cfg.train.seed)
        with self.dist.strategy.scope():
            self.method = make_method(method, cfg, data.tokenizer.size, self.total_steps, tier, init)
            self.optimizer = _optimizer(cfg.train)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            # the smoothed loss the run reports, saved with each checkpoint so a resumed run reports what an
            # uninterrupted one would
            self.loss_ema = tf.Variable(float("nan"), dtype=tf.float64, trainable=False, name="loss_ema")
        self.ckpt = tf.train.Checkpoint(
            optimizer=self.optimizer, step=self.step, loss_ema=self.loss_ema, **self.method.trackables()
        )
        # every worker saves (saving may run collectives); only the chief's folder is the run's
        folder = "ckpt" if self.dist.chief else f"ckpt-worker{self.dist.worker}"
        self.manager = tf.train.CheckpointManager(self.ckpt, str(self.work_dir / folder), max_to_keep=2)
        self.batcher = Batcher(data, cfg.train.batch_size, cfg.encoder.stack, self.seed, min_rows=self.dist.workers)
        self._train_step = self._make_train_step()

    def restore(self) -> int:
        """Restore the newest checkpoint in `work_dir`, if any; returns the step reached.

        With several workers, every worker restores the same step: the oldest of their newest checkpoints (a worker
        killed while the others saved has one checkpoint fewer; each keeps two)."""
        latest = self.manager.latest_checkpoint
        if self.dist.workers > 1:
            latest = self._common_checkpoint(latest)
        if latest is None:
            return 0
        try:
            self.ckpt.restore(latest).assert_existing_objects_matched()
        except (tf.errors.OpError, AssertionError, ValueError) as exc:
            raise ArtifactError(
                f"training checkpoint {latest} cannot be restored ({str(exc).splitlines()[0]}); delete "
                f"{self.work_dir} to start over."
            ) from None
        log.info("resumed from %s at step %d", latest, int(self.step.numpy()))
        return int(self.step.numpy())

    def _common_checkpoint(self, latest: str | None) -> str | None:
        """This worker's checkpoint of the step every worker can restore (None: start over, all of them)."""
        mine = int(latest.rsplit("-", 1)[1]) if latest else 0
        per_replica = self.dist.strategy.run(lambda: tf.constant([mine], tf.int64))
        steps = [int(x) for x in self.dist.strategy.gather(per_replica, axis=0).numpy()]
        common = min(steps)
        if common == mine:
            return latest
        if common == 0:
            return None
        kept = {int(c.rsplit("-", 1)[1]): c for c in self.manager.checkpoints}
        if common not in kept:
            raise ArtifactError(
                f"the workers' newest training checkpoints are at steps {steps}, and this worker no longer has step "
                f"{common}: delete {self.work_dir} on every worker to start over."
            )
        log.info("worker %d: checkpoints of the workers at steps %s; restoring %d", self.dist.worker, steps, common)
        return kept[common]

    def _save(self, step: int) -> None:
        """Write the training checkpoint of `step`; a full disk or a missing permission is a `HostError`."""
        try:
            self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as exc:
            detail = exc.message if isinstance(exc, tf.errors.OpError) else str(exc)
            raise HostError(
                f"cannot write the training checkpoint of step {step} in {self.manager.directory}: "
                f"{detail.splitlines()[0] if detail else type(exc).__name__}."
            ) from None

    def _make_train_step(self) -> Callable:
        cfg = self.cfg
        m = cfg.frontend.n_mels
        sig = [
            tf.TensorSpec((None, None, m), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((None,), tf.int32),
            tf.TensorSpec((), tf.int64),
        ]

        method, strategy = self.method, self.dist.strategy

        def replica_step(feats, pred_in, labels, frames, label_lengths, step, *extra):  # noqa: ANN001, ANN202
            with tf.GradientTape() as tape:
                loss = method.loss(feats, pred_in, labels, frames, label_lengths, *extra)
                scaled = loss / strategy.num_replicas_in_sync  # all-reduce sums the replicas' gradients
            variables = method.trainable
            grads = tape.gradient(scaled, variables)
            self.optimizer.apply_gradients(zip(grads, variables))
            method.after_update(*extra)
            return scaled

        @tf.function(input_signature=sig + method.extra_signature())
        def train_step(feats, pred_in, labels, frames, label_lengths, step, *extra):
            feats = spec_augment(feats, cfg.augment, tf.cast(self.seed, tf.int64) * 1_000_003 + step)
            self.optimizer.learning_rate.assign(learning_rate(step, *method.schedule))
            per_replica = strategy.run(replica_step, args=(feats, pred_in, labels, frames, label_lengths, step, *extra))
            return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

        return train_step

    def run(self, resume: bool = False, until: int | None = None, start: int | None = None) -> TrainResult:
        """Train to the last step (or stop after step `until`, as an interruption would); `resume` continues a run
        from its newest checkpoint, `start` from that step with the variables as they are (consecutive spans of one
        run in one process, as `bench train-speed` times them)."""
        start_step = start if start is not None else (self.restore() if resume else 0)
        if not resume and self.manager.latest_checkpoint:
            log.info("starting over: --resume not given, ignoring %s", self.manager.latest_checkpoint)
        if start_step == 0:
            self.method.prepare(self.batcher.batch)
        writer = tf.summary.create_file_writer(str(self.work_dir / "tensorboard"))
        t0 = time.monotonic()
        loss_ema = float(self.loss_ema.numpy()) if start_step else float("nan")
        with (
            writer.as_default(),
            tqdm(
                total=self.total_steps,
                initial=start_step,
                desc=f"train {self.cfg.name} {self.method.name}",
                unit="step",
                leave=False,
            ) as bar,
        ):
            end = min(until or self.total_steps, self.total_steps)
            for step, b in zip(range(start_step, end), self.batcher.prefetched(start_step, end)):
                b = b.shard(self.dist.worker, self.dist.workers)
                extra = self.method.before_step(step, len(b.frames))
                loss = float(
                    self._train_step(
                        b.feats, b.pred_in, b.labels, b.frames, b.label_lengths, tf.constant(step, tf.int64), *extra
                    ).numpy()
                )
                if not math.isfinite(loss):
                    raise InternalError(f"training loss became {loss} at step {step}; lower train.learning_rate.")
                loss_ema = loss if math.isnan(loss_ema) else 0.95 * loss_ema + 0.05 * loss
                self.step.assign(step + 1)
                if step % 10 == 0:
                    tf.summary.scalar("loss", loss, step=step)
                    tf.summary.scalar("learning_rate", learning_rate(step, *self.method.schedule), step=step)
                bar.set_postfix(loss=f"{loss_ema:.3f}")
                bar.update(1)
                if (step + 1) % self.cfg.train.checkpoint_every == 0 or step + 1 == self.total_steps:
                    self.loss_ema.assign(loss_ema)
                    self._save(step + 1)
        wall = time.monotonic() - t0
        log.info(
            "trained %s (%s) to step %d in %.0f s, loss %.3f",
            self.cfg.name,
            self.method.name,
            self.total_steps,
            wall,
            loss_ema,
        )
        params, masks = self.method.result()
        return TrainResult(params, self.total_steps, loss_ema, wall, masks, self.method.meta(), self.method.ranges())
