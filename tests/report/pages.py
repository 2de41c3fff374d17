"""Reading a report back in tests: its tables, images and cards, with the stdlib's HTML parser."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser


@dataclass
class Card:
    """One gallery card: its header text and the images it holds (alt -> src)."""

    header: str = ""
    images: dict[str, str] = field(default_factory=dict)
    text: str = ""


class ReportParser(HTMLParser):
    """Collects the tables (rows of cell texts, and of cell classes), the images, the
    gallery cards, and the page's text outside records' prompts (`text`)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tables: list[list[list[str]]] = []
        self.classes: list[list[list[str]]] = []
        self.text = ""
        self._prompt_depth: int | None = None
        self.images: list[dict[str, str]] = []
        self.cards: list[Card] = []
        self._cell: list[str] | None = None
        self._card_depth: int | None = None
        self._in_header = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "table":
            self.tables.append([])
            self.classes.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
            self.classes[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            if self.classes:
                self.classes[-1][-1].append(values.get("class", ""))
        elif tag == "img":
            self.images.append(values)
            if self._card_depth is not None:
                self.cards[-1].images[values.get("alt", "")] = values.get("src", "")
        elif tag == "article" and "pair" in values.get("class", "").split():
            self.cards.append(Card())
            self._card_depth = 0
        elif tag == "header" and self._card_depth is not None:
            self._in_header = True
        if self._card_depth is not None and tag not in ("img", "br"):
            self._card_depth += 1
        if self._prompt_depth is not None and tag not in ("img", "br"):
            self._prompt_depth += 1
        elif "prompt" in values.get("class", "").split():
            self._prompt_depth = 1

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        if tag == "header":
            self._in_header = False
        if self._card_depth is not None:
            self._card_depth -= 1
            if tag == "article" and self._card_depth <= 0:
                self._card_depth = None
        if self._prompt_depth is not None:
            self._prompt_depth -= 1
            if self._prompt_depth <= 0:
                self._prompt_depth = None

    def handle_data(self, data: str) -> None:
        if self._prompt_depth is None and self.lasttag not in ("style", "title"):
            self.text += data
        if self._cell is not None:
            self._cell.append(data)
        if self._card_depth is not None:
            card = self.cards[-1]
            if self._in_header:
                card.header += data
            card.text += data


def parse_report(html: str) -> ReportParser:
    parser = ReportParser()
    parser.feed(html)
    parser.close()
    return parser


def find_table(parser: ReportParser, first_header: str, containing: str) -> list[list[str]]:
    """The first table whose header row starts with `first_header` and has a `containing` header."""
    return parser.tables[_table_index(parser, first_header, containing)]


def find_classes(parser: ReportParser, first_header: str, containing: str) -> list[list[str]]:
    """The CSS classes of the cells of the table `find_table` finds (row by row)."""
    return parser.classes[_table_index(parser, first_header, containing)]


def _table_index(parser: ReportParser, first_header: str, containing: str) -> int:
    for index, rows in enumerate(parser.tables):
        if rows and rows[0] and rows[0][0] == first_header and containing in rows[0]:
            return index
    raise AssertionError(f"no table with headers {first_header!r} ... {containing!r}")
