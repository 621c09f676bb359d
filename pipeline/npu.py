"""Ethos-U NPU compilation with Arm's Vela: the NPU-ready graph and Vela's performance estimate.

Every figure here is an estimate by Vela's performance model, not a measurement, and
the manifest labels it so (tool, version, accelerator, system config, memory mode).
"""

from __future__ import annotations

import csv
import importlib.metadata
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .errors import ArtifactError
from .targets import TARGETS_DIR, NpuConfig


@dataclass(frozen=True)
class NpuReport:
    file: str  # the Vela-compiled .tflite, relative to the folder it was written to
    inference_seconds: float
    cycles_total: int
    cycles_npu: int
    sram_bytes: int
    flash_bytes: int
    npu_operators: int
    cpu_operators: int

    @property
    def npu_fraction(self) -> float:
        total = self.npu_operators + self.cpu_operators
        return self.npu_operators / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "npu_operator_fraction": self.npu_fraction}


def _vela() -> str:
    beside = Path(sys.executable).parent / "vela"
    found = str(beside) if beside.exists() else shutil.which("vela")
    if not found:
        raise ArtifactError("the NPU compiler `vela` is not installed (pip install ethos-u-vela).")
    return found


def tool_info(npu: NpuConfig) -> dict[str, Any]:
    return {
        "tool": "ethos-u-vela",
        "version": importlib.metadata.version("ethos-u-vela"),
        "accelerator": npu.accelerator,
        "system_config": npu.system_config,
        "memory_mode": npu.memory_mode,
        "config_file": npu.config_file,
    }


def compile_for_npu(model: Path, npu: NpuConfig, out_dir: Path) -> NpuReport:
    """Run Vela on `model`; write `<stem>_vela.tflite` and its summary into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        _vela(),
        str(model),
        "--accelerator-config",
        npu.accelerator,
        "--config",
        str(TARGETS_DIR / npu.config_file),
        "--system-config",
        npu.system_config,
        "--memory-mode",
        npu.memory_mode,
        "--output-dir",
        str(out_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines() or ["no output"])[-1]
        raise ArtifactError(f"Vela could not compile {model.name} for {npu.accelerator}: {last}")
    counts = {k: int(v) for k, v in re.findall(r"(CPU|NPU) operators = (\d+)", proc.stdout)}
    summary = out_dir / f"{model.stem}_summary_{npu.system_config}.csv"
    try:
        with open(summary, newline="") as fh:
            row = next(csv.DictReader(fh))
        return NpuReport(
            f"{model.stem}_vela.tflite",
            float(row["inference_time"]),
            int(float(row["cycles_total"])),
            int(float(row["cycles_npu"])),
            int(float(row["sram_memory_used"]) * 1024),
            int(float(row["off_chip_flash_memory_used"]) * 1024),
            counts.get("NPU", 0),
            counts.get("CPU", 0),
        )
    except (OSError, StopIteration, KeyError, ValueError) as exc:
        raise ArtifactError(f"Vela's summary {summary} is missing or unreadable ({exc}).") from None
