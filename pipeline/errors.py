"""One error hierarchy for the whole pipeline, caught once in the CLI.

User mistakes (bad input, bad config, impossible budgets) exit with code 2 and one
sentence; anything else that escapes is an internal error (exit code 1).
"""
from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error the pipeline raises on purpose."""

    exit_code = 2


class ConfigError(PipelineError):
    """A TOML file, a CLI option or a config field is wrong."""


class DataError(PipelineError):
    """An audio file, a transcript or a corpus manifest is unusable."""


class BudgetError(PipelineError):
    """No sparsity tier meets the budgets of a target profile."""


class ArtifactError(PipelineError):
    """A checkpoint, an artifact or a manifest is missing, corrupt or mismatched."""


class InternalError(PipelineError):
    """An invariant between stages broke: a bug, not a user mistake."""

    exit_code = 1
