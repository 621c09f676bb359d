"""Training on TensorFlow's own distribution engine: `--strategy default|mirrored|multi-worker`.

`multi-worker` is `tf.distribute.MultiWorkerMirroredStrategy`, configured by the
`TF_CONFIG` environment variable as TensorFlow documents it:

    TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]}, "task": {"type": "worker", "index": 0}}'

Every worker runs the same `pipeline train` command with its own `index`; worker 0 is
the chief. Each step, every worker builds the same global batch (the batch order is a
function of seed and step) and trains on its own share of it; gradients are summed by
all-reduce, so the weights stay identical on every worker. Every training method runs so, accelerator-aware
fine-tuning included: pruning masks are computed by every worker from those identical weights on the same schedule,
and the tiers trained per step are drawn from the seed and the step, so all workers apply the same masks and train
the same tiers. After a worker dies, every worker restarted with `--resume` restores the newest step all of them saved
(`train.Trainer.restore`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from ._tf import tf
from .errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi-worker")


@dataclass(frozen=True)
class Distribution:
    strategy: tf.distribute.Strategy
    name: str
    worker: int = 0  # this process's index
    workers: int = 1

    @property
    def chief(self) -> bool:
        return self.worker == 0


def _tf_config() -> tuple[int, int]:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError(
            "--strategy multi-worker needs the TF_CONFIG environment variable (cluster and task), see `pipeline train "
            "--help`."
        )
    try:
        cfg = json.loads(raw)
        workers = cfg["cluster"]["worker"]
        task = cfg["task"]
        index = int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"TF_CONFIG is not a valid cluster spec ({exc!r}); expected "
            '{"cluster": {"worker": [...]}, "task": {"type": "worker", "index": N}}.'
        ) from None
    if "chief" in cfg["cluster"] or task.get("type") != "worker":
        raise ConfigError("TF_CONFIG: only `worker` tasks are supported (worker 0 acts as chief).")
    if not isinstance(workers, list) or not 0 <= index < len(workers):
        raise ConfigError(
            f"TF_CONFIG: task index {index} is not among the {len(workers) if isinstance(workers, list) else 0} "
            "workers."
        )
    return index, len(workers)


def make_distribution(name: str) -> Distribution:
    """Create the strategy; call before any other TensorFlow work (multi-worker requires it)."""
    if name == "default":
        return Distribution(tf.distribute.get_strategy(), name)
    if name == "mirrored":
        return Distribution(tf.distribute.MirroredStrategy(), name)
    if name == "multi-worker":
        index, count = _tf_config()
        return Distribution(tf.distribute.MultiWorkerMirroredStrategy(), name, index, count)
    raise ConfigError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
