"""The one HTML page builder of every report (exploration, evaluation): a Jinja2 template with a
title, a table of contents and sections; figures are embedded, so a report is one self-contained file.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from ..io import atomic_write_text

_ENV = Environment(loader=PackageLoader("scenetag.report", "templates"), autoescape=select_autoescape(["html"]))


@dataclass(frozen=True)
class Section:
    """One titled part of a report; ``body`` is HTML built with :func:`table`, :func:`figure` or :func:`preformatted`."""

    title: str
    body: Markup
    caption: str = ""

    @property
    def anchor(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-") or "section"


def figure(path: Path | str) -> Markup:
    """An ``<img>`` with the PNG embedded as a base64 data URI."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return Markup('<img src="data:image/png;base64,{}" alt="{}">').format(data, Path(path).stem)


def _cell(value: object, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def table(header: Sequence[object], rows: Sequence[Sequence[object]], digits: int = 4) -> Markup:
    """A table; floats shown with ``digits`` decimals, everything escaped."""
    head = Markup("").join(Markup("<th>{}</th>").format(h) for h in header)
    body = Markup("").join(Markup("<tr>{}</tr>").format(Markup("").join(Markup("<td>{}</td>").format(_cell(v, digits)) for v in r)) for r in rows)
    return Markup("<table><tr>{}</tr>{}</table>").format(head, body)


def preformatted(lines: Sequence[str]) -> Markup:
    return Markup("<pre>{}</pre>").format("\n".join(lines))


def paragraph(text: str) -> Markup:
    return Markup("<p>{}</p>").format(text)


def render_page(title: str, sections: Sequence[Section], subtitle: Sequence[str] = ()) -> str:
    return _ENV.get_template("page.html").render(title=title, subtitle=list(subtitle), sections=list(sections))


def write_page(path: Path | str, title: str, sections: Sequence[Section], subtitle: Sequence[str] = ()) -> Path:
    """Render the report and write it atomically."""
    return atomic_write_text(path, render_page(title, sections, subtitle))


__all__ = ["Section", "figure", "paragraph", "preformatted", "render_page", "table", "write_page"]
