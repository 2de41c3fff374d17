"""The page: escaping, small building blocks, the stylesheet and the skeleton.

Every piece of text that comes from a run (records, file names, metric names,
settings) is untrusted and goes through `escape` before it reaches the page.
The page is static HTML and CSS: the pairs gallery's pages are anchors styled
with ``:target``, so nothing needs JavaScript, and the page
makes no network request (images are data URIs, the style is inline).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# What the page shows for a value that is missing: never "?" or "None", which read as
# a value (or a bug); the text around it says what is missing where that matters.
MISSING = "—"


def escape(value: object) -> str:
    """`value` as HTML text, quotes included (safe in element content and attributes)."""
    return html.escape(str(value), quote=True)


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… [{len(text) - limit} more characters]"


@dataclass
class Section:
    """One part of the page: its anchor id, its title and its (already escaped) body."""

    id: str
    title: str
    body: str


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[str]],
    *,
    classes: Iterable[Sequence[str]] | None = None,
    caption: str | None = None,
) -> str:
    """An HTML table of plain-text cells (escaped here).

    Args:
        headers: the column names.
        rows: the cells, as text.
        classes: a CSS class per cell of each row ("" for none), e.g. to colour
            differences.
        caption: a caption above the table.
    """
    body = [list(row) for row in rows]
    css = (
        [list(names) for names in classes]
        if classes is not None
        else [[""] * len(headers)] * len(body)
    )
    # Columns of numbers only (MISSING for a missing one) are right-aligned, header included.
    numeric = [bool(body) and all(_numeric(row[i]) for row in body) for i in range(len(headers))]
    head = "".join(
        f'<th class="num">{escape(name)}</th>' if number else f"<th>{escape(name)}</th>"
        for name, number in zip(headers, numeric, strict=True)
    )
    lines = []
    for row, row_css in zip(body, css, strict=True):
        cells = []
        for cell, name, number in zip(row, row_css, numeric, strict=True):
            names = " ".join(part for part in (name, "num" if number else "") if part)
            cells.append(
                f'<td class="{escape(names)}">{escape(cell)}</td>'
                if names
                else f"<td>{escape(cell)}</td>"
            )
        lines.append(f"<tr>{''.join(cells)}</tr>")
    top = f"<caption>{escape(caption)}</caption>" if caption else ""
    return f"<table>{top}<thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"


def _numeric(cell: str) -> bool:
    """Whether a cell reads as a number, or is MISSING (a number missing)."""
    if cell == MISSING:
        return True
    try:
        float(cell.replace("−", "-"))
    except ValueError:
        return False
    return True


def figure(uri: str, alt: str, caption: str | None = None, *, css_class: str = "plot") -> str:
    """An ``<img>`` of a data URI inside a figure, with an optional caption."""
    note = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure class="{css_class}"><img src="{uri}" alt="{escape(alt)}">{note}</figure>'


def note(text: str) -> str:
    """A muted paragraph, e.g. what a section looked for and did not find."""
    return f'<p class="note">{escape(text)}</p>'


# Plain and readable: system fonts, one column up to 1200 px, tables with light rules.
# The gallery's pages: in each strategy, the first page shows, and another page
# replaces it when it is the :target (`:has` needs Chromium 105 / Firefox 121; older
# browsers show the first page and the targeted one).
STYLE = """
:root { --fg: #1d2330; --muted: #5b6474; --line: #d9dde5; --bg: #f7f8fa;
  --ins: #ffd9d2; --del: #d6ecff; --good: #1d7a36; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: #fff; }
header.top { padding: 18px 28px 10px; border-bottom: 1px solid var(--line); background: var(--bg); }
header.top h1 { margin: 0 0 4px; font-size: 22px; }
nav.sections a { margin-right: 16px; }
main { max-width: 1200px; margin: 0 auto; padding: 8px 28px 60px; }
section.part { margin-top: 28px; }
section.part > h2 { border-bottom: 2px solid var(--fg); padding-bottom: 4px; }
h3 { margin: 22px 0 8px; font-size: 17px; }
a { color: #1b58c4; }
.note { color: var(--muted); }
table { border-collapse: collapse; margin: 8px 0 14px; font-size: 14px; }
caption { text-align: left; color: var(--muted); padding-bottom: 4px; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: var(--bg); }
td.better { color: var(--good); font-weight: 600; }
td.worse { color: var(--bad); font-weight: 600; }
figure { margin: 8px 0; }
figure.plot img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
pre { background: var(--bg); padding: 10px; overflow-x: auto; font-size: 13px; }
.filters a, .pager a { display: inline-block; margin: 2px 6px 2px 0; padding: 2px 10px;
  border: 1px solid var(--line); border-radius: 12px; text-decoration: none; }
.pager a.current { background: var(--fg); color: #fff; }
.gallery-page { display: none; }
.gallery-page.first, .gallery-page:target { display: block; }
details.strategy:has(.gallery-page:target) .gallery-page.first:not(:target) { display: none; }
details.strategy { margin-top: 18px; }
details.strategy > summary { cursor: pointer; }
details.strategy > summary h3 { display: inline; }
details.strategy > summary .count { color: var(--muted); font-weight: normal; font-size: 14px; }
article.pair { border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px;
  margin: 12px 0; }
article.pair > header { color: var(--muted); font-size: 13px; margin-bottom: 6px;
  overflow-wrap: anywhere; }
article.pair > header .provenance { color: var(--fg); font-size: 12px; }
.images { display: flex; gap: 12px; flex-wrap: wrap; }
.images figure { margin: 0; }
.images img { width: 192px; height: auto; border: 1px solid var(--line); }
.images img.small { image-rendering: pixelated; }
.missing { width: 192px; padding: 8px; border: 1px dashed var(--bad); color: var(--bad);
  font-size: 12px; overflow-wrap: anywhere; }
.prompt { margin: 8px 0; white-space: pre-wrap; overflow-wrap: anywhere; }
.prompt .role { color: var(--muted); font-size: 12px; text-transform: uppercase; }
.responses { display: grid; grid-template-columns: 1fr 1fr; gap: 14px; }
.responses h4 { margin: 4px 0; font-size: 13px; color: var(--muted); }
.responses p { margin: 0; white-space: pre-wrap; overflow-wrap: anywhere; }
ins { background: var(--ins); text-decoration: none; }
del { background: var(--del); text-decoration: line-through; }
mark { background: var(--ins); }
.legend { font-size: 13px; color: var(--muted); }
@media (max-width: 760px) { .responses { grid-template-columns: 1fr; } }
"""


def page(title: str, subtitle: str, sections: Sequence[Section]) -> str:
    """The whole document: a title, links to each section, then the sections."""
    links = "".join(f'<a href="#{escape(s.id)}">{escape(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section class="part" id="{escape(s.id)}"><h2>{escape(s.title)}</h2>{s.body}</section>'
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # No network: forbid every fetch but inline style and data: images.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f'<body><header class="top"><h1>{escape(title)}</h1>'
        f'<div class="note">{escape(subtitle)}</div>'
        f'<nav class="sections">{links}</nav></header>'
        f"<main>{body}</main></body></html>\n"
    )
