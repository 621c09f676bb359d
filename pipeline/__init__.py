"""Train one streaming RNN-T and ship verified int8 TFLite artifacts for every device.

The public API is below; names load lazily (PEP 562) so that light entry points, such
as the TFLM arena probe run in a child process, do not import TensorFlow.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

# TensorFlow reads these when it is first imported, so they are set here, before any submodule (or TFMOT) imports it.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf-keras (Keras 2): TFMOT needs it
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Off, not defaulted: TF 2.21's oneDNN kernels corrupt the heap on AVX-512 CPUs (tensorflow/tensorflow#117700: a
# broadcast matmul of a rank-4 tensor); here AAT's tier-batched steps died in free(). Eigen's kernels trained tiny as
# fast.
os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"

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
