"""Calibration recipes (`calibration/*.toml`): which utterances feed the int8 converter.

Representative inputs are recorded while the float32 graphs decode real utterances
in the streaming loop, so the encoder and predictor state inputs see the states the
model actually produces, never zeros or noise.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from .config import PROJECT_ROOT
from .decode import Transducer, greedy_decode
from .runtimes import RecordingGraph
from .tomlconf import check, load_named, to_dict

log = logging.getLogger(__name__)
CALIBRATION_DIR = PROJECT_ROOT / "calibration"


@dataclass(frozen=True)
class CalibrationRecipe:
    name: str
    description: str = ""
    split: str = "train"  # corpus split the utterances come from
    utterances: int = 64  # drawn at random (seeded) from the split
    max_samples_per_graph: int = 600  # recorded inputs kept per graph, drawn at random
    seed: int = 11

    def __post_init__(self) -> None:
        check(
            self.split in ("train", "test_seen", "test_unseen"),
            f"field `split` must be train, test_seen or test_unseen, got {self.split!r}.",
        )
        check(1 <= self.utterances <= 100_000, f"field `utterances` must be in 1..100000, got {self.utterances}.")
        check(
            10 <= self.max_samples_per_graph <= 100_000,
            f"field `max_samples_per_graph` must be in 10..100000, got {self.max_samples_per_graph}.",
        )

    def to_dict(self) -> dict:
        return to_dict(self)


def load_calibration_recipe(name_or_path: str) -> CalibrationRecipe:
    return load_named(CalibrationRecipe, name_or_path, CALIBRATION_DIR, "calibration recipe")


def representative_inputs(
    float_model: Transducer, feats: list[np.ndarray], recipe: CalibrationRecipe
) -> dict[str, list[dict[str, np.ndarray]]]:
    """Decode a seeded draw of `feats` with the float graphs, recording each graph's inputs."""
    rng = np.random.default_rng(recipe.seed)
    pick = rng.choice(len(feats), size=min(recipe.utterances, len(feats)), replace=False)
    records: dict[str, list[dict[str, np.ndarray]]] = {"encoder": [], "predictor": [], "joiner": []}
    rec = replace(
        float_model,
        encoder=RecordingGraph(float_model.encoder, records["encoder"].append),
        predictor=RecordingGraph(float_model.predictor, records["predictor"].append),
        joiner=RecordingGraph(float_model.joiner, records["joiner"].append),
    )
    for i in sorted(pick):
        greedy_decode(rec, feats[i])
    out = {}
    for g, samples in records.items():
        keep = rng.choice(len(samples), size=min(len(samples), recipe.max_samples_per_graph), replace=False)
        out[g] = [samples[j] for j in sorted(keep)]
        log.info("calibration: %d %s samples (of %d recorded)", len(out[g]), g, len(samples))
    return out
