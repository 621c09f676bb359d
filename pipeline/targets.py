"""Target profiles (`targets/*.toml`): what the device is, kept apart from how to build for it.

`[device]` holds device facts (runtime, threads, NPU, memory); `[budgets]` what an
artifact may cost there; `[build]` the build options (model, calibration recipe,
tiers). A profile may `extends` another.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .config import PROJECT_ROOT
from .tomlconf import check, load_named, to_dict

TARGETS_DIR = PROJECT_ROOT / "targets"
RUNTIMES = ("tflm", "litert")


@dataclass(frozen=True)
class NpuConfig:
    """An Ethos-U NPU as Vela knows it (accelerator and the named sections of `config_file`)."""

    accelerator: str = "ethos-u55-128"
    system_config: str = "Ethos_U55_High_End_Embedded"
    memory_mode: str = "Shared_Sram"
    config_file: str = "vela.ini"  # relative to targets/


@dataclass(frozen=True)
class DeviceConfig:
    runtime: str
    cpu: str = ""
    threads: int = 1
    npu: NpuConfig | None = None
    ram_bytes: int | None = None
    flash_bytes: int | None = None

    def __post_init__(self) -> None:
        check(self.runtime in RUNTIMES, f"field `runtime` must be one of {', '.join(RUNTIMES)}, got {self.runtime!r}.")
        check(1 <= self.threads <= 64, f"field `threads` must be in 1..64, got {self.threads}.")


@dataclass(frozen=True)
class Budgets:
    """What one target's artifacts may cost; a missing budget is not checked."""

    model_bytes: int | None = None  # all three graphs, as stored on the device
    arena_bytes: int | None = None  # TFLM arena (watch) or RAM for tensors
    rtf: float | None = None  # compute seconds per second of audio

    def __post_init__(self) -> None:
        for name in ("model_bytes", "arena_bytes", "rtf"):
            v = getattr(self, name)
            check(v is None or v > 0, f"budget `{name}` must be positive, got {v}.")


@dataclass(frozen=True)
class BuildOptions:
    model: str = "tiny"
    method: str = "dense"  # training method: dense | tfmot | omni | csp
    calibration: str = "default"
    threads_for_latency: int | None = None  # default: the device's threads
    tiers: tuple[int, ...] | None = None  # tiers to choose from, densest first (default: the model's)
    sparse_encoding: bool = False  # ship sparse-encoded weights where smaller (LiteRT built-in kernels, not XNNPACK)
    # ship the tiers of one omni checkpoint as one package (the densest tier's graphs plus a patch per other tier; on
    # an NPU target each tier's own Vela-compiled graphs, as many as fit model_bytes), switched at run time
    # (pipeline/switching.py)
    switchable: bool = False
    aat: bool = False  # fine-tune with the int8 kernels emulated (accelerator-aware training) before export
    # omni, sparse-encoded LiteRT: when the densest tier misses `model_bytes`, search per-kernel mixes of the tiers
    # that fit it and score this many on the dev split; the best ships (pipeline/search.py). 0 = off: the densest
    # uniform tier that fits ships
    search: int = 0

    def __post_init__(self) -> None:
        check(0 <= self.search <= 10_000, f"field `search` must be in 0..10000 candidates, got {self.search}.")


@dataclass(frozen=True)
class TargetProfile:
    name: str
    description: str = ""
    device: DeviceConfig = field(default_factory=lambda: DeviceConfig("litert"))
    budgets: Budgets = field(default_factory=Budgets)
    build: BuildOptions = field(default_factory=BuildOptions)

    def to_dict(self) -> dict:
        return to_dict(self)


def target_names() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml") if not p.stem.startswith("_"))


def load_target(name_or_path: str) -> TargetProfile:
    """Load `targets/<name>.toml` (or a TOML path), resolving `extends`."""
    return load_named(TargetProfile, name_or_path, TARGETS_DIR, "target")
