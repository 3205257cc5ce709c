"""What the notebook API returns: plain results that render as HTML in Jupyter (``_repr_html_``).

Every string shown (file names, labels) is escaped; no pandas is needed: :class:`Table`
holds columns and rows, and writes CSV.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

from markupsafe import Markup

from ..infer.outputs import Prediction
from ..io import atomic_write_csv
from ..metrics import METRIC_KEYS, PER_LABEL_KEYS
from ..report.html import paragraph, preformatted, table
from ..runs import REPORT_PAGE


@dataclass(frozen=True)
class Table:
    """Rows of values under named columns; iterating gives one dict per row."""

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    digits: int = 4  # decimals of floats in the HTML

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (dict(zip(self.columns, r)) for r in self.rows)

    def column(self, name: str) -> list[Any]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def to_csv(self, path: Path | str) -> Path:
        return atomic_write_csv(path, [self.columns, *self.rows])

    def _repr_html_(self) -> str:
        return str(table(self.columns, self.rows, self.digits))

    def __repr__(self) -> str:
        text = [[str(c) for c in self.columns]] + [[f"{v:.{self.digits}f}" if isinstance(v, float) else str(v) for v in r] for r in self.rows]
        widths = [max(len(line[j]) for line in text) for j in range(len(self.columns))]
        return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in text)


def metrics_table(parts: dict[str, dict[str, Any]]) -> Table:
    """Every summary metric (rows) of each scored part (columns, e.g. val and test)."""
    names = [p for p, m in parts.items() if m]
    return Table(("metric", *names), tuple((k, *(parts[p].get(k, float("nan")) for p in names)) for k in METRIC_KEYS))


def per_label_table(metrics: dict[str, Any]) -> Table:
    """Precision, recall, F1, AP, support and threshold of each label."""
    rows = tuple((label, *(r.get(k, float("nan")) for k in PER_LABEL_KEYS)) for label, r in metrics.get("per_label", {}).items())
    return Table(("label", *PER_LABEL_KEYS), rows)




def heading(text: str) -> str:
    return str(Markup("<p><b>{}</b></p>").format(text))


class Predictions(list):
    """The predictions of :meth:`Run.predict`, in input order: each has ``path``, ``labels``,
    ``probabilities`` (label -> probability) and ``error`` (why an image was skipped, else None)."""

    def __init__(self, items: Sequence[Prediction], classes: Sequence[str]):
        super().__init__(items)
        self.classes = list(classes)

    @property
    def table(self) -> Table:
        """One row per image: image, labels, a probability per class, error."""
        rows = tuple((p.path, " ".join(p.labels), *(p.probabilities.get(c, float("nan")) for c in self.classes), p.error or "") for p in self)
        return Table(("image", "labels", *self.classes, "error"), rows, digits=3)

    def _repr_html_(self) -> str:
        return heading(f"{len(self)} prediction(s)") + self.table._repr_html_()

    def __repr__(self) -> str:
        return repr(self.table)


@dataclass
class Evaluation:
    """What :meth:`Run.evaluate` measured (``metrics`` as metrics.json holds them) and where its report is."""

    metrics: dict[str, Any]
    folder: Path

    @property
    def report(self) -> Path:
        return self.folder / REPORT_PAGE

    def _repr_html_(self) -> str:
        m = self.metrics
        return (heading(f"Evaluation on {m.get('n_images', '?')} images (tuned per-label thresholds)") + metrics_table({"value": m})._repr_html_()
                + per_label_table(m)._repr_html_() + str(paragraph(f"report: {self.report}")))  # fmt: skip

    def __repr__(self) -> str:
        return f"evaluation of {self.metrics.get('n_images', '?')} images\n{metrics_table({'value': self.metrics})!r}\nreport: {self.report}"


@dataclass
class Exploration:
    """The summary of :func:`scenetag.explore` (as summary.json holds it) and where its report is."""

    summary: dict[str, Any]
    folder: Path
    text: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.text = list(self.summary.get("text", []))

    @property
    def report(self) -> Path:
        return self.folder / REPORT_PAGE

    def _repr_html_(self) -> str:
        n = self.summary.get("n_images", 0) or 1
        per = Table(("label", "images", "share"), tuple((c, v, f"{v / n:.1%}") for c, v in self.summary.get("per_class", {}).items()))
        return heading("Data") + str(preformatted(self.text)) + per._repr_html_() + str(paragraph(f"report: {self.report}"))

    def __repr__(self) -> str:
        return "\n".join(self.text + [f"report: {self.report}"])
