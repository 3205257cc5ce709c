"""The package's errors: one base class, so the command line catches every user-facing failure in one place.

Each message is already phrased for the user (it names the file, line or
config key and the problem); the CLI prints it on one line and exits 2.
"""
from __future__ import annotations


class ScenetagError(Exception):
    """A failure the user can cause and fix; the message says what and where."""


class DataError(ScenetagError, ValueError):
    """A problem with the data: the message names the file (and line)."""


class ConfigError(ScenetagError, ValueError):
    """A bad configuration value: the message names the field."""


class ModelError(ScenetagError, ValueError):
    """A problem building a model: names the backbone or weights file."""


class CheckpointError(ScenetagError, ValueError):
    """A model file that cannot be used: names the file and the reason."""


class ExportError(ScenetagError, RuntimeError):
    """Export failed or the exported model does not reproduce PyTorch's outputs."""


class OutputError(ScenetagError):
    """An output path that cannot be written without destroying something (an input, a device, a folder)."""


class UsageError(ScenetagError):
    """Command-line arguments that do not fit together."""


class TrainingError(ScenetagError, RuntimeError):
    """Training cannot go on (a diverging loss, an LR finder that finds nothing): says where and why."""


def brief(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
