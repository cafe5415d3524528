"""The sign-off report: one page a compliance reader can read top to bottom and sign.

`build_report(session, request_id, fmt)` reads the store and returns a self-contained HTML page (inline CSS,
matplotlib charts embedded as base64 PNGs, no network access needed) or GitHub Markdown with the same content
(charts left out). Raw personal data never reaches the page: the request's sensitive strings are shown masked
("4••••••••••2") and every free text (evidence, title, audit details, errors, hyperparameters) goes through
`engine.leaks.mask_sensitive` with the sensitive strings and the forget answers, as `close_request` does.
Answers to retain questions (other people's data) are summarised, never printed.

The steps, one module each: `collect` (facts from the store, masked), `document` (the content as blocks of
`blocks`, in the words of `prose`, with the images of `charts`), then `html` or `markdown` to draw them.
Torch-free and textual-free: it runs in the API process, and matplotlib is imported only when a chart is drawn.
"""

from __future__ import annotations

from sqlmodel import Session

from engine.control.report.collect import collect
from engine.control.report.document import document
from engine.control.report.html import render_html
from engine.control.report.markdown import render_markdown
from engine.schema.errors import SpecError

FORMATS = ("html", "md")

__all__ = ["FORMATS", "build_report"]


def build_report(s: Session, request_id: int, fmt: str = "html") -> str:
    """The report of one request as HTML (self-contained) or Markdown; raises NotFound / SpecError."""
    if fmt not in FORMATS:
        raise SpecError(f"format: '{fmt}' is not one of {', '.join(FORMATS)}")
    facts = collect(s, request_id)
    blocks = document(facts, charts=fmt == "html")
    title = f"Erasure report — request {facts['request']['id']}"
    return render_html(blocks, title) if fmt == "html" else render_markdown(blocks)
