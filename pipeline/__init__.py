"""Train one streaming RNN-T and ship verified int8 TFLite artifacts for every device.

The public API is below; names load lazily (PEP 562) so that light entry points, such
as the TFLM arena probe run in a child process, do not import TensorFlow.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build": "pipeline.build",
    "BuildPaths": "pipeline.build",
    "DataOptions": "pipeline.data",
    "ModelConfig": "pipeline.config",
    "load_model_config": "pipeline.config",
    "TargetProfile": "pipeline.targets",
    "load_target": "pipeline.targets",
    "CalibrationRecipe": "pipeline.calibrate",
    "load_calibration_recipe": "pipeline.calibrate",
    "ModelCheckpoint": "pipeline.checkpoint",
    "verify_dist": "pipeline.verify",
    "PipelineError": "pipeline.errors",
    "ConfigError": "pipeline.errors",
    "DataError": "pipeline.errors",
    "ArtifactError": "pipeline.errors",
    "BudgetError": "pipeline.errors",
    "InternalError": "pipeline.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
