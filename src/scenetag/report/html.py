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


@dataclass(frozen=True)
class Card:
    """One picture of a gallery: a JPEG thumbnail, caption lines, and the values its filters select on."""

    jpeg: bytes
    lines: Sequence[str]
    tags: dict[str, str]


_FILTER_SCRIPT = Markup(
    "<script>document.querySelectorAll('.filters select').forEach(s=>s.addEventListener('change',()=>{"
    "const want={};document.querySelectorAll('.filters select').forEach(x=>{if(x.value)want[x.dataset.filter]=x.value});"
    "document.querySelectorAll('.card').forEach(c=>{c.hidden=Object.entries(want).some(([k,v])=>c.dataset[k]!==v)})}))</script>"
)


def gallery(cards: Sequence[Card], filters: Sequence[str]) -> Markup:
    """Thumbnails with captions, and one drop-down per filter name that shows only the matching cards."""
    selects = Markup("").join(
        Markup('<label>{} <select data-filter="{}"><option value="">all</option>{}</select></label> ').format(
            name, name, Markup("").join(Markup('<option value="{}">{}</option>').format(v, v) for v in sorted({c.tags[name] for c in cards}))
        )
        for name in filters
    )
    items = Markup("").join(
        Markup('<figure class="card"{}><img src="data:image/jpeg;base64,{}" alt=""><figcaption>{}</figcaption></figure>').format(
            Markup("").join(Markup(' data-{}="{}"').format(k, v) for k, v in c.tags.items()), base64.b64encode(c.jpeg).decode("ascii"), Markup("<br>").join(c.lines)
        )
        for c in cards
    )
    return Markup('<div class="filters">{}</div><div class="gallery">{}</div>').format(selects, items) + _FILTER_SCRIPT


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


__all__ = ["Card", "Section", "figure", "gallery", "paragraph", "preformatted", "render_page", "table", "write_page"]
