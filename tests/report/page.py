"""Reading a rendered report.html in tests: its sections (text, in order) and its tables."""

from __future__ import annotations

import html as html_module
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path


@dataclass
class Table:
    attrs: dict[str, str]
    section: str
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    row_classes: list[str] = field(default_factory=list)

    def column(self, name: str) -> list[str]:
        i = self.header.index(name)
        return [row[i] for row in self.rows]

    def records(self) -> list[dict[str, str]]:
        return [dict(zip(self.header, row, strict=False)) for row in self.rows]


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tables: list[Table] = []
        self.section = ""
        self._table: Table | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._head = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "section":
            self.section = a.get("id", "")
        elif tag == "table":
            self._table = Table(a, self.section)
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and self._table is not None:
            self._row = []
            if not self._head:
                self._table.row_classes.append(a.get("class", ""))
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if self._head:
                self._table.header = self._row
            else:
                self._table.rows.append(self._row)
            self._row = None
        elif tag == "thead":
            self._head = False
        elif tag == "table" and self._table is not None:
            self.tables.append(self._table)
            self._table = None


class Page:
    """A report page: ``text(section)`` the section's visible text, ``tables(cls)``."""

    def __init__(self, path: Path) -> None:
        self.html = Path(path).read_text(encoding="utf-8")
        parser = _Parser()
        parser.feed(self.html)
        self._tables = parser.tables
        self.section_ids = re.findall(r'<section id="([^"]+)">', self.html)

    def section_html(self, key: str) -> str:
        match = re.search(rf'<section id="{re.escape(key)}">(.*?)</section>', self.html, re.S)
        return match.group(1) if match else ""

    def text(self, key: str | None = None) -> str:
        source = self.html if key is None else self.section_html(key)
        plain = re.sub(r"<img[^>]*>", " ", source)
        plain = re.sub(r"<[^>]+>", " ", plain)
        return re.sub(r"\s+", " ", html_module.unescape(plain))

    def tables(self, cls: str = "", section: str = "") -> list[Table]:
        return [
            t
            for t in self._tables
            if (not cls or cls in t.attrs.get("class", "").split())
            and (not section or t.section == section)
        ]

    def table(self, cls: str, section: str = "", **attrs: str) -> Table:
        found = [
            t
            for t in self.tables(cls, section)
            if all(t.attrs.get(k) == v for k, v in attrs.items())
        ]
        assert len(found) == 1, f"{len(found)} tables of class {cls!r} {attrs}"
        return found[0]
