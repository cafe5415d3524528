"""The report as GitHub Markdown: the same blocks as the HTML page, charts named but not embedded."""

from __future__ import annotations

import re

from engine.control.report.blocks import UL, Figure, H, Note, P, Signature, Table

_MD_SPECIAL = re.compile(r"([\\`*<>|\[\]])")


def _md_text(text: str) -> str:
    text = re.sub(r"\s+", " ", str(text))
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"(^|\s)_|_(\s|$)", lambda m: m.group(0).replace("_", "\\_"), text)


def _md_parts(parts) -> str:
    out = []
    for part in parts if isinstance(parts, list) else [parts]:
        if isinstance(part, tuple):
            text, style = part
            if style == "code":
                out.append(f"`{str(text).replace('`', '')}`")
            elif style in ("b", "pass", "fail"):
                out.append(f"**{_md_text(text)}**")
            else:
                out.append(_md_text(text))
        else:
            out.append(_md_text(part))
    return "".join(out)


def _md_table(b: Table) -> list[str]:
    headers = [h or " " for h in b.headers]
    lines = ["| " + " | ".join(_md_text(h) for h in headers) + " |",
             "|" + "|".join("---:" if i in b.numeric else "---" for i in range(len(headers))) + "|"]
    lines += ["| " + " | ".join(_md_parts(c) for c in row) + " |" for row in b.rows]
    return lines + [""]


def _md_signature(b: Signature) -> list[str]:
    lines = [_md_text(b.statement), "",
             "| | " + " | ".join(_md_text(r) for r in b.roles) + " |",
             "|---|" + "|".join("---" for _ in b.roles) + "|"]
    lines += [f"| {label} |" + " |" * len(b.roles) for label in ("Name", "Role", "Date", "Signature")]
    return lines + [""]


def _md_block(b) -> list[str]:
    if isinstance(b, H):
        return [f"{'#' * b.level} {_md_text(b.text)}", ""]
    if isinstance(b, P):
        return [_md_parts(b.parts), ""]
    if isinstance(b, UL):
        return [f"- {_md_parts(i)}" for i in b.items] + [""]
    if isinstance(b, Note):
        return [f"> {'⚠ ' if b.kind == 'warn' else ''}{_md_parts(b.parts)}", ""]
    if isinstance(b, Table):
        return _md_table(b)
    if isinstance(b, Figure):
        return [f"*Chart not embedded in the Markdown version (see the HTML report): {_md_text(b.caption)}*", ""]
    if isinstance(b, Signature):
        return _md_signature(b)
    return []


def render_markdown(blocks: list) -> str:
    lines = [line for b in blocks for line in _md_block(b)]
    return "\n".join(lines).rstrip() + "\n"
