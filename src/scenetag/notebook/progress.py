"""Training progress in a notebook: one table row per epoch (like fastai's), updated in place.

In a Jupyter kernel :class:`EpochTable` is the epoch callback of the recipe (see
:data:`scenetag.train.loop.EpochCallback`) and replaces the tqdm bars; in a terminal
the recipe's own tqdm bars and log lines show progress, as ``scenetag train`` does.
"""
from __future__ import annotations

import sys
from typing import Any

from ..report.html import table

# (metrics.csv key, column heading) of the table, in order.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("phase", "phase"), ("epoch", "epoch"), ("train_loss", "train loss"), ("val_loss", "val loss"),
    ("val_samples_f1", "val samples-F1"), ("val_micro_f1", "val micro-F1"), ("val_mAP", "val mAP"), ("seconds", "time"),
)  # fmt: skip


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where rich output can be updated in place), False in a terminal or plain IPython."""
    if "IPython" not in sys.modules:  # never imported: certainly not a kernel (and importing it costs time)
        return False
    from IPython import get_ipython

    return getattr(get_ipython(), "kernel", None) is not None


def clock(seconds: float) -> str:
    """``83.4`` -> ``01:23`` (minutes:seconds, as fastai shows epoch times)."""
    s = int(round(seconds))
    return f"{s // 60:02d}:{s % 60:02d}"


class EpochTable:
    """Rows of finished epochs, shown as one HTML table that each new epoch updates in place.

    ``epochs``: each phase's name -> its number of epochs (the ``3/8`` of the epoch column).
    """

    def __init__(self, epochs: dict[str, int]):
        self.epochs = epochs
        self.rows: list[dict[str, Any]] = []
        self._handle = None

    def cells(self, row: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for key, _ in COLUMNS:
            value = row.get(key, float("nan"))
            if key == "epoch":
                value = f"{value}/{self.epochs.get(row['phase'], '?')}"
            elif key == "seconds":
                value = clock(float(value))
            out.append(value)
        return out

    def html(self) -> str:
        return str(table([heading for _, heading in COLUMNS], [self.cells(r) for r in self.rows]))

    def show(self) -> None:
        """Display the table (the header alone before the first epoch), or update it where it is."""
        from IPython.display import HTML, display

        if self._handle is None:
            self._handle = display(HTML(self.html()), display_id=True)
        else:
            self._handle.update(HTML(self.html()))

    def __call__(self, state, model) -> None:
        """The epoch callback: ``state.history[-1]`` is the epoch just finished."""
        self.rows.append(dict(state.history[-1]))
        self.show()
