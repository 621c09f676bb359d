"""The trained model as a folder: `params.npz` (weights, masks, AAT ranges) and `model.json` (everything else).

No pickle anywhere: arrays load with `allow_pickle=False`, metadata is JSON. Loading
checks the weights against the config they claim, so a checkpoint from another
config is refused with a clear error instead of a shape crash later.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import ModelConfig
from .errors import ArtifactError, ConfigError
from .frontend import Normalizer
from .fsutil import atomic_write_bytes, atomic_write_json
from .model import check_params
from .quant import range_points
from .sparsity import apply_masks, tier_name
from .tokenizer import CharTokenizer

if TYPE_CHECKING:
    from .preflight import Output

FORMAT = "rnnt-checkpoint/1"


def checkpoint_output(folder: Path) -> Output:
    """A checkpoint folder (`pipeline train --out`) as a folder the command replaces whole."""
    from .preflight import Output

    return Output(Path(folder), "checkpoint", legacy=is_checkpoint_folder)


def is_checkpoint_folder(folder: Path) -> bool:
    """Whether `folder` is a checkpoint the pipeline wrote before it marked its folders (its model.json says so)."""
    try:
        info = json.loads((Path(folder) / "model.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and info.get("format") == FORMAT


@dataclass
class ModelCheckpoint:
    config: ModelConfig
    params: dict[str, np.ndarray]
    tokenizer: CharTokenizer
    normalizer: Normalizer
    masks: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # tier name → param name → bool mask
    meta: dict[str, Any] = field(default_factory=dict)  # method, steps, wall time, data hash...
    ranges: dict[str, dict[str, np.ndarray]] = field(
        default_factory=dict
    )  # tier name → point → int8 (min, max) learned by AAT

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        arrays = {f"param/{k}": v for k, v in self.params.items()}
        for tier, masks in self.masks.items():
            arrays.update({f"mask/{tier}/{k}": v.astype(bool) for k, v in masks.items()})
        for tier, ranges in self.ranges.items():
            arrays.update({f"range/{tier}/{k}": np.asarray(v, np.float32) for k, v in ranges.items()})
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        atomic_write_bytes(folder / "params.npz", buf.getvalue())
        atomic_write_json(
            folder / "model.json",
            {
                "format": FORMAT,
                "config": self.config.to_dict(),
                "tokenizer": self.tokenizer.to_dict(),
                "normalizer": self.normalizer.to_dict(),
                "tiers": sorted(self.masks),
                "meta": self.meta,
            },
        )

    def tier_ranges(self, tier: int) -> dict[str, np.ndarray] | None:
        """The int8 activation ranges AAT learned for `tier`, or None (post-training calibration)."""
        return self.ranges.get(tier_name(tier))

    @property
    def tiers(self) -> list[int]:
        """Sparsity tiers this checkpoint can export (a dense one: tier 0)."""
        return sorted(int(t.removeprefix("tier")) for t in self.masks) or [0]

    def tier_params(self, tier: int) -> dict[str, np.ndarray]:
        """The parameters of one tier: shared weights times that tier's masks."""
        name = tier_name(tier)
        if name in self.masks:
            return apply_masks(self.params, self.masks[name])
        if tier == 0 and not self.masks:
            return self.params
        method = self.meta.get("method", "dense")
        raise ConfigError(
            f"the {method} checkpoint holds tier(s) {', '.join(map(str, self.tiers))}, not tier {tier}; "
            f"train tier {tier} (--method tfmot/csp --tier {tier}) or use an omni checkpoint."
        )

    @classmethod
    def load(cls, folder: Path, expect: ModelConfig | None = None, ignore: tuple[str, ...] = ()) -> ModelCheckpoint:
        """Load and validate; with `expect`, refuse a checkpoint trained with another config (apart from the
        `ignore`d sections, e.g. "aat" when a fine-tuning recipe replaces the one it was trained with)."""
        folder = Path(folder)
        try:
            info = json.loads((folder / "model.json").read_text())
        except FileNotFoundError:
            raise ArtifactError(f"checkpoint {folder} has no model.json (not a checkpoint folder).") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ArtifactError(f"checkpoint {folder}/model.json is corrupt ({exc}).") from None
        if not isinstance(info, dict) or info.get("format") != FORMAT:
            raise ArtifactError(
                f"checkpoint {folder}: unknown format {info.get('format') if isinstance(info, dict) else None!r}, "
                f"expected {FORMAT}."
            )
        try:
            sp = info["config"].get("sparsity") if isinstance(info.get("config"), dict) else None
            if isinstance(sp, dict) and "dense_layers" not in sp:
                sp["dense_layers"] = []  # written before `sparsity.dense_layers` existed, when every kernel was pruned
            cfg = ModelConfig.from_dict(info["config"], f"{folder}/model.json config")
            tok = CharTokenizer.from_dict(info["tokenizer"])
            norm = Normalizer.from_dict(info["normalizer"])
        except (KeyError, TypeError, ConfigError) as exc:
            raise ArtifactError(f"checkpoint {folder}/model.json is invalid ({exc}).") from None
        drop = lambda d: {k: v for k, v in d.items() if k not in ignore}  # noqa: E731
        if expect is not None and drop(cfg.to_dict()) != drop(expect.to_dict()):
            raise ArtifactError(
                f"checkpoint {folder} was trained with a different config than {expect.name!r}; retrain or pass the "
                "matching config."
            )
        params: dict[str, np.ndarray] = {}
        masks: dict[str, dict[str, np.ndarray]] = {}
        ranges: dict[str, dict[str, np.ndarray]] = {}
        try:
            with np.load(folder / "params.npz", allow_pickle=False) as z:
                for key in z.files:
                    kind, _, rest = key.partition("/")
                    if kind == "param":
                        params[rest] = z[key].astype(np.float32)
                    elif kind == "mask":
                        tier, _, name = rest.partition("/")
                        masks.setdefault(tier, {})[name] = z[key].astype(bool)
                    elif kind == "range":
                        tier, _, name = rest.partition("/")
                        ranges.setdefault(tier, {})[name] = z[key].astype(np.float32)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise ArtifactError(f"checkpoint {folder}/params.npz is corrupt ({exc}).") from None
        check_params(cfg, tok.size, params, str(folder))
        for tier, m in masks.items():
            for name, mask in m.items():
                if (
                    not tier.startswith("tier")
                    or not tier[4:].isdigit()
                    or name not in params
                    or mask.shape != params[name].shape
                ):
                    raise ArtifactError(f"checkpoint {folder}: mask {tier}/{name} does not match the parameters.")
        points = set(range_points(cfg.encoder.layers))
        for tier, r in ranges.items():
            if (masks and tier not in masks) or (not masks and tier != tier_name(0)) or set(r) != points:
                raise ArtifactError(
                    f"checkpoint {folder}: the int8 ranges of {tier} do not match the model's tiers and range points."
                )
            for name, v in r.items():
                if v.shape != (2,) or not np.all(np.isfinite(v)) or v[0] > v[1]:
                    raise ArtifactError(
                        f"checkpoint {folder}: int8 range {tier}/{name} is not a finite (min, max) pair."
                    )
        return cls(cfg, params, tok, norm, masks, dict(info.get("meta", {})), ranges)
