"""A self-contained HTML report (figures embedded as data URIs), readable offline.

:func:`render_report` turns an evaluation's ``metrics`` and the PNGs written beside it into
``report.html``; nothing is fetched from the network when the page opens.
"""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif;margin:0;
color:#1d2430;background:#f6f7f9}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:1.6em;margin:0 0 4px}h2{border-bottom:2px solid #d5dae1;padding-bottom:4px;
margin-top:36px}
section{background:#fff;border-radius:8px;padding:8px 20px 16px;margin:16px 0;
box-shadow:0 1px 3px rgba(0,0,0,.08)}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
th,td{border-bottom:1px solid #e3e7ec;padding:4px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#eef1f5}
.kv td{text-align:left}.figs{display:flex;flex-wrap:wrap;gap:12px}
figure{margin:0}figure img{max-width:520px;width:100%;border:1px solid #e3e7ec}
figure.wide{width:100%}figure.wide img{max-width:100%}
figcaption{font-size:.85em;color:#555}.note{color:#555;font-size:.9em}
.warn{background:#fff4e5;border-left:4px solid #f0a030;padding:6px 10px}
"""


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded, missing values as an en dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(
            isinstance(v, (int, float)) or v is None for v in value):
        return f"{fmt(value[0], digits)}–{fmt(value[1], digits)}"
    return html.escape(str(value))


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None,
          css_class: str = "") -> str:
    """An HTML table from rows of cells (already-HTML cells are not re-escaped if str)."""
    out = [f'<table class="{css_class}">' if css_class else "<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        out.append("<tr>" + "".join(f"<td>{fmt(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    return "".join(out)


def embed_png(path: str | Path, caption: str = "", *, wide: bool = False) -> str:
    """A ``<figure>`` holding ``path`` as a base64 data URI (``wide``: the page's full width)."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    opening = '<figure class="wide">' if wide else "<figure>"
    return (f'{opening}<img alt="{html.escape(caption or Path(path).stem)}" '
            f'src="data:image/png;base64,{data}">{cap}</figure>')


def figures(paths: Sequence[tuple[str | Path, str]], *, wide: bool = False) -> str:
    """A row of embedded figures from (path, caption) pairs (``wide``: each at the page's full
    width); missing files are skipped."""
    items = [embed_png(p, c, wide=wide) for p, c in paths if p and Path(p).is_file()]
    return f'<div class="figs">{"".join(items)}</div>' if items else ""


def render_report(path: str | Path, title: str, sections: Sequence[tuple[str, str]],
                  subtitle: str = "") -> Path:
    """Write ``report.html``: ``sections`` are (heading, inner HTML) pairs, in order."""
    body = "".join(f'<section><h2>{html.escape(h)}</h2>{inner}</section>'
                   for h, inner in sections if inner)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><main>"
            f"<h1>{html.escape(title)}</h1><p class=\"note\">{html.escape(subtitle)}</p>"
            f"{body}</main></body></html>")
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path


def key_values(items: Mapping[str, Any]) -> str:
    """A two-column table of a mapping (run summary)."""
    return table([(k, v) for k, v in items.items() if v is not None], css_class="kv")
