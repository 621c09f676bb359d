"""One error hierarchy for the whole pipeline, caught once in the CLI.

Exit codes: 2 for a user mistake (bad input, bad config, impossible budgets), 3 for a
problem of the machine the pipeline runs on (disk full, no permission, a file where a
folder is expected), 1 for an internal error (a bug). Each error is one sentence that
names the file or field and what is wrong with it.
"""

from __future__ import annotations

import errno
import os


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


class OutputError(PipelineError):
    """An output folder the command would replace holds files the pipeline did not write, or overlaps a dataset."""


class HostError(PipelineError):
    """The machine cannot do what the command needs: disk full, no permission, a file where a folder should be."""

    exit_code = 3


class InternalError(PipelineError):
    """An invariant between stages broke: a bug, not a user mistake."""

    exit_code = 1


_REASONS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a path component is a file, not a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.EEXIST: "it already exists",
    errno.ENOENT: "it does not exist",
    errno.EMFILE: "too many open files",
    errno.ENAMETOOLONG: "the name is too long",
}


def host_error(action: str, path: object, exc: OSError) -> HostError:
    """A `HostError` for an `OSError` met while doing `action` on `path`: "cannot write X: the disk is full."."""
    reason = (
        _REASONS.get(exc.errno or -1) or exc.strerror or (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
    )
    return HostError(f"cannot {action} {path}: {reason}.")
