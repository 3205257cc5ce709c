"""The notebook API: ``scenetag.explore``, ``scenetag.fit`` (what ``scenetag train`` does), ``scenetag.load_run`` and the :class:`Run` they give.

It mirrors the command line with plain Python calls and results that render in Jupyter::

    import scenetag
    scenetag.explore("data/synth")                       # label statistics (report.html)
    run = scenetag.fit("data/synth", "runs/nb", seed=1, train__batch_size=16)
    run.evaluate(); run.show_results(); run.plot_top_losses(9)
    run.predict(["a.jpg", "photos/"])                    # predictions, with .table
"""
from __future__ import annotations

import warnings

with warnings.catch_warnings():
    # tqdm.auto (imported by the training code) warns in Jupyter without ipywidgets; the notebook API shows no bars there.
    warnings.filterwarnings("ignore", message="IProgress not found")
    from .api import explore, fit
    from .run import Run, load_run

__all__ = ["Run", "explore", "fit", "load_run"]
