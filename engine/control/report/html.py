"""The report as one self-contained HTML page: the stylesheet (report.css, next to this module) inline and the
charts embedded as base64 PNGs, so it opens offline and prints on A4."""

from __future__ import annotations

import base64
import html
from functools import cache
from importlib.resources import files

from engine.control.report.blocks import UL, Figure, H, Note, P, Signature, Table


@cache
def stylesheet() -> str:
    return files(__package__).joinpath("report.css").read_text(encoding="utf-8")


def _html_parts(parts) -> str:
    out = []
    for part in parts if isinstance(parts, list) else [parts]:
        if isinstance(part, tuple):
            text, style = part
            text = html.escape(str(text))
            if style == "b":
                out.append(f"<strong>{text}</strong>")
            elif style == "code":
                out.append(f"<code>{text}</code>")
            else:
                out.append(f'<span class="{style}">{text}</span>')
        else:
            out.append(html.escape(str(part)))
    return "".join(out)


def _html_table(b: Table) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
    rows = []
    for row in b.rows:
        cells = "".join(f'<td{" class=num" if i in b.numeric else ""}>{_html_parts(c)}</td>'
                        for i, c in enumerate(row))
        rows.append(f"<tr>{cells}</tr>")
    return f'<table class="{b.cls}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _html_signature(b: Signature) -> str:
    head = "".join(f"<th>{html.escape(r)}</th>" for r in b.roles)
    rows = "".join(f"<tr><td>{label}</td>" + "<td></td>" * len(b.roles) + "</tr>"
                   for label in ("Name", "Role", "Date", "Signature"))
    return (f'<div class="signature"><p>{html.escape(b.statement)}</p>'
            f'<table class="sig"><tr><th></th>{head}</tr>{rows}</table></div>')


def _html_block(b) -> str | None:
    """One block as HTML; None for a figure without a chart (the Markdown version's placeholder)."""
    if isinstance(b, H):
        anchor = f' id="{html.escape(b.anchor)}"' if b.anchor else ""
        return f"<h{b.level}{anchor}>{html.escape(b.text)}</h{b.level}>"
    if isinstance(b, P):
        return f"<p>{_html_parts(b.parts)}</p>"
    if isinstance(b, UL):
        return "<ul>" + "".join(f"<li>{_html_parts(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Note):
        return f'<div class="note {b.kind}">{_html_parts(b.parts)}</div>'
    if isinstance(b, Table):
        return _html_table(b)
    if isinstance(b, Figure):
        if not b.png:
            return None
        data = base64.b64encode(b.png).decode()
        return (f'<figure><img alt="{html.escape(b.alt)}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(b.caption)}</figcaption></figure>")
    if isinstance(b, Signature):
        return _html_signature(b)
    return None


def render_html(blocks: list, title: str) -> str:
    body = [text for text in map(_html_block, blocks) if text is not None]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(title)}</title><style>\n{stylesheet()}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")
