"""The one HTML page builder of every report (exploration, evaluation): a Jinja2 template with a
title, a table of contents and sections; figures are embedded, so a report is one self-contained file.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

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
    """One picture of a gallery: a JPEG thumbnail, caption lines, and the values its filters select on
    (several values of one filter joined by ``|``: a card with ``sea|sunset`` shows under either)."""

    jpeg: bytes
    lines: Sequence[str]
    tags: dict[str, str]


_FILTER_SCRIPT = Markup(
    "<script>document.querySelectorAll('.filters select').forEach(s=>s.addEventListener('change',()=>{"
    "const want={};document.querySelectorAll('.filters select').forEach(x=>{if(x.value)want[x.dataset.filter]=x.value});"
    "document.querySelectorAll('.card').forEach(c=>{c.hidden=Object.entries(want).some(([k,v])=>!(c.dataset[k]||'').split('|').includes(v))})}))</script>"
)


def gallery(cards: Sequence[Card], filters: Sequence[str]) -> Markup:
    """Thumbnails with captions, and one drop-down per filter name that shows only the matching cards."""
    selects = Markup("").join(
        Markup('<label>{} <select data-filter="{}"><option value="">all</option>{}</select></label> ').format(
            name, name, Markup("").join(Markup('<option value="{}">{}</option>').format(v, v) for v in sorted({v for c in cards for v in c.tags[name].split("|") if v}))
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
    if isinstance(value, Markup):  # already-built HTML (a link, a highlighted value)
        return value
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def link(href: str, text: str) -> Markup:
    """A link to a file of the report's folder (``href`` relative to the page)."""
    return Markup('<a href="{}">{}</a>').format(href, text)


def image(src: str, alt: str = "") -> Markup:
    """An ``<img>`` of a picture beside the page (not embedded: the page shows the file as it is now)."""
    return Markup('<img src="{}" alt="{}">').format(src, alt)


def tiles(items: Sequence[tuple[Markup, str]]) -> Markup:
    """Pictures side by side (three to a row on a wide screen), each with its caption."""
    return Markup('<div class="tiles">{}</div>').format(Markup("").join(Markup("<figure>{}<figcaption>{}</figcaption></figure>").format(body, caption) for body, caption in items))


def highlighted(text: object) -> Markup:
    return Markup('<mark>{}</mark>').format(text)


def table(header: Sequence[object], rows: Sequence[Sequence[object]], digits: int = 4) -> Markup:
    """A table; floats shown with ``digits`` decimals, everything escaped."""
    head = Markup("").join(Markup("<th>{}</th>").format(h) for h in header)
    body = Markup("").join(Markup("<tr>{}</tr>").format(Markup("").join(Markup("<td>{}</td>").format(_cell(v, digits)) for v in r)) for r in rows)
    return Markup("<table><tr>{}</tr>{}</table>").format(head, body)


# Orders the rows of the table just before it by the clicked column: numbers (a cell's leading number) by value,
# ahead of text and empty cells; the first click goes the header's data-first way, the next one reverses.
_SORT_STYLE = Markup("<style>table.sortable th{cursor:pointer}table.sortable th[data-dir=asc]::after{content:' \\25B2'}table.sortable th[data-dir=desc]::after{content:' \\25BC'}</style>")
_SORT_SCRIPT = Markup(
    "<script>(t=>t.querySelectorAll('th').forEach((th,i)=>th.addEventListener('click',()=>{"
    "const asc=th.dataset.dir?th.dataset.dir==='desc':th.dataset.first==='asc';"
    "t.querySelectorAll('th').forEach(h=>delete h.dataset.dir);th.dataset.dir=asc?'asc':'desc';"
    "const key=r=>{const s=r.cells[i].textContent.trim(),v=parseFloat(s);return isNaN(v)?s:v};"
    "const rows=[...t.rows].slice(1);rows.sort((a,b)=>{const x=key(a),y=key(b),nx=typeof x==='number';"
    "if(nx!==(typeof y==='number'))return nx?-1:1;const c=nx?x-y:x.localeCompare(y);return asc?c:-c});"
    "rows.forEach(r=>r.parentNode.appendChild(r))})))(document.currentScript.previousElementSibling)</script>"
)


def sortable_table(header: Sequence[object], rows: Sequence[Sequence[object]], ascending: Collection[object] = (), sorted_by: object | None = None, digits: int = 4) -> Markup:
    """:func:`table` whose rows the reader orders by clicking a column header (a second click reverses; inline script, no CDN).

    Numbers sort by value (``0.89 ± 0.01`` by 0.89), ahead of text and empty cells. A column sorts high-first on its
    first click, low-first when it is in ``ascending`` (text, losses); ``sorted_by`` marks the order the rows are in.
    """

    def th(h: object) -> Markup:
        first = "asc" if h in ascending else "desc"
        return Markup('<th data-first="{}"{}>{}</th>').format(first, Markup(' data-dir="{}"').format(first) if h == sorted_by else "", h)

    head = Markup("").join(th(h) for h in header)
    body = Markup("").join(Markup("<tr>{}</tr>").format(Markup("").join(Markup("<td>{}</td>").format(_cell(v, digits)) for v in r)) for r in rows)
    return _SORT_STYLE + Markup('<table class="sortable"><tr>{}</tr>{}</table>').format(head, body) + _SORT_SCRIPT


def preformatted(lines: Sequence[str]) -> Markup:
    return Markup("<pre>{}</pre>").format("\n".join(lines))


def paragraph(text: str) -> Markup:
    return Markup("<p>{}</p>").format(text)


def render_page(title: str, sections: Sequence[Section], subtitle: Sequence[str] = ()) -> str:
    return _ENV.get_template("page.html").render(title=title, subtitle=list(subtitle), sections=list(sections))


def write_page(path: Path | str, title: str, sections: Sequence[Section], subtitle: Sequence[str] = ()) -> Path:
    """Render the report and write it atomically."""
    return atomic_write_text(path, render_page(title, sections, subtitle))


__all__ = ["Card", "Section", "figure", "gallery", "highlighted", "image", "link", "tiles", "paragraph", "preformatted", "render_page", "sortable_table", "table", "write_page"]
