"""A self-contained HTML page: inline CSS, images embedded as base64 PNG, no external links."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from pooled.report.tables import format_frame

__all__ = ["HtmlFigure", "Section", "figure_html", "page_html", "table_html"]

CSS = """
*{box-sizing:border-box}
body{font-family:-apple-system,"Segoe UI",Helvetica,Arial,sans-serif;color:#1d2731;margin:0;
 background:#fff;line-height:1.45;font-size:15px}
main{max-width:1180px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:1.7em;margin:0.2em 0 0.1em}
h2{font-size:1.3em;border-bottom:2px solid #1f4e79;padding-bottom:4px;margin-top:2.2em}
h3{font-size:1.08em;margin:1.6em 0 0.4em}
.subtitle{color:#56636f;margin:0 0 1em}
nav{background:#f4f7fa;border:1px solid #dde5ec;padding:10px 16px;border-radius:6px}
nav ol{margin:0;padding-left:1.4em;columns:2}
figure{margin:12px 0 20px;max-width:100%}
figure img{max-width:100%;height:auto;display:block;border:1px solid #eef1f4}
figcaption{font-size:0.88em;color:#56636f;margin-top:4px}
.table-wrap{max-width:100%;overflow-x:auto;margin:8px 0 16px}
table{border-collapse:collapse;font-size:0.86em}
th,td{padding:3px 9px;border-bottom:1px solid #e3e8ed;text-align:right;white-space:nowrap}
th{border-bottom:2px solid #1f4e79;background:#f4f7fa;font-weight:600}
td.text,th.text{text-align:left}
tr.pooled td{font-weight:600}
.note{font-size:0.88em;color:#56636f}
.warn{background:#fff4e5;border-left:4px solid #e67e22;padding:6px 12px;margin:8px 0}
details{margin:10px 0}
summary{cursor:pointer;color:#1f4e79}
pre{background:#f6f8fa;padding:10px;overflow-x:auto;font-size:0.82em;max-width:100%}
footer{margin-top:3em;border-top:1px solid #cfd8e0;padding-top:10px;font-size:0.85em;color:#3d4852}
footer td,footer th{font-size:0.95em}
table.definitions th{border-bottom:1px solid #e3e8ed;background:#f4f7fa}
table.definitions td.text{white-space:normal;max-width:820px}
td.wrap,th.wrap{white-space:normal;min-width:14em;max-width:40em;text-align:left}
.beside td.wrap,.beside th.wrap{min-width:9em;max-width:13em}
tr.flagged td{background:#fff4e5}
.flag{color:#a04000;font-weight:600}
.caveat{background:#fdf2f2;border-left:4px solid #c0392b;padding:6px 12px;margin:8px 0}
.beside{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start;max-width:100%}
.beside>*{min-width:0;max-width:100%;flex:0 1 auto}
.beside figure{margin:8px 0;display:table}
.beside figcaption{display:table-caption;caption-side:bottom}
.description{font-size:1.05em;margin:0.6em 0 1em}
"""


@dataclass(frozen=True, slots=True)
class HtmlFigure:
    """A rendered figure for the page: PNG bytes and its caption."""

    name: str
    caption: str
    png: bytes
    width_px: int = 0


@dataclass(slots=True)
class Section:
    """A titled part of the page: a list of HTML fragments, in order."""

    key: str
    title: str
    parts: list[str] = field(default_factory=list)

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)


def _is_text(series: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series))


def table_html(
    frame: pd.DataFrame,
    *,
    caption: str = "",
    attrs: Mapping[str, str] | None = None,
    row_attrs: Sequence[Mapping[str, str]] | None = None,
    row_classes: Sequence[str] | None = None,
    formatted: bool = False,
    wrap: Sequence[str] = (),
) -> str:
    """An HTML table of ``frame``, numbers rounded for display (unless ``formatted``).

    Columns in ``wrap`` (long text: reasons, notes) wrap within a bounded width instead of
    widening the table; any table wider than the page scrolls inside its own box."""
    shown = frame if formatted else format_frame(frame)
    text_columns = {c for c in frame.columns if _is_text(frame[c])}
    wrapped = {c for c in frame.columns if c in set(wrap)}
    attr_text = "".join(f' {k}="{html.escape(str(v))}"' for k, v in (attrs or {}).items())
    out = [f'<div class="table-wrap"><table{attr_text}>']
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<thead><tr>")
    for column in frame.columns:
        cls = _cell_class(column, text_columns, wrapped)
        out.append(f"<th{cls}>{html.escape(str(column))}</th>")
    out.append("</tr></thead><tbody>")
    for i, (_, row) in enumerate(shown.iterrows()):
        extra = ""
        if row_attrs is not None:
            extra = "".join(f' {k}="{html.escape(str(v))}"' for k, v in row_attrs[i].items())
        if row_classes is not None and row_classes[i]:
            extra += f' class="{html.escape(row_classes[i])}"'
        cells = []
        for column in frame.columns:
            cls = _cell_class(column, text_columns, wrapped)
            cells.append(f"<td{cls}>{html.escape(str(row[column]))}</td>")
        out.append(f"<tr{extra}>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def _cell_class(column: Any, text_columns: set[Any], wrapped: set[Any]) -> str:
    if column in wrapped:
        return ' class="text wrap"'
    return ' class="text"' if column in text_columns else ""


def figure_html(figure: HtmlFigure) -> str:
    """``<figure>`` with the PNG embedded as a data URI (opens offline)."""
    data = base64.b64encode(figure.png).decode("ascii")
    style = f' style="width:{figure.width_px}px"' if figure.width_px else ""
    return (
        f'<figure id="fig-{html.escape(figure.name)}">'
        f'<img alt="{html.escape(figure.caption or figure.name)}"{style} '
        f'src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
    )


def definition_table(items: Iterable[tuple[str, Any]]) -> str:
    """Two-column key/value table (provenance)."""
    rows = "".join(
        f'<tr><th class="text">{html.escape(str(k))}</th>'
        f'<td class="text">{html.escape(str(v))}</td></tr>'
        for k, v in items
    )
    return f'<div class="table-wrap"><table class="definitions">{rows}</table></div>'


def page_html(title: str, subtitle: str, sections: Sequence[Section], footer: str) -> str:
    """The whole page: title, table of contents, sections and the reproducibility footer."""
    toc = "".join(
        f'<li><a href="#{html.escape(s.key)}">{html.escape(s.title)}</a></li>'
        for s in sections
        if s.parts
    )
    body = []
    for section in sections:
        if not section.parts:
            continue
        body.append(f'<section id="{html.escape(section.key)}">')
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        body.extend(section.parts)
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
        f'<h1>{html.escape(title)}</h1><p class="subtitle">{html.escape(subtitle)}</p>'
        f"<nav><strong>Contents</strong><ol>{toc}</ol></nav>"
        + "".join(body)
        + f'<footer id="reproducibility">{footer}</footer></main></body></html>\n'
    )
