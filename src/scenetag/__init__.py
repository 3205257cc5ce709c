"""scenetag: multi-label natural scene tagging (train, evaluate, explain, serve, export).

Importing the package is cheap: heavy modules (torch, timm) load only when a
command or function that needs them is used.

The notebook API (:mod:`scenetag.notebook`): ``scenetag.explore(data)``,
``run = scenetag.fit(data, out, **settings)`` (``scenetag train``; ``scenetag.train`` is the
training package), ``scenetag.load_run(path)``.
"""
from __future__ import annotations

from .errors import DataError, ScenetagError
from .version import __version__

__all__ = ["DataError", "MultiLabelDataset", "ScenetagError", "explore", "fit", "load_dataset", "load_run", "__version__"]


def __getattr__(name: str):
    # Lazy, so `import scenetag` (and `scenetag --help`) does not read the data package.
    if name in ("MultiLabelDataset", "load_dataset"):
        from . import data

        return getattr(data, name)
    if name in ("explore", "load_run", "Run"):
        from . import notebook

        return getattr(notebook, name)
    raise AttributeError(f"module 'scenetag' has no attribute {name!r}")


def fit(*args, **kwargs):
    """``scenetag train`` from Python: see :func:`scenetag.notebook.api.fit` (imported only when called)."""
    from .notebook import fit as fit_run

    return fit_run(*args, **kwargs)
