"""The report's document model: the blocks `document` builds and both renderers (HTML, Markdown) draw.

A block's text is a list of parts: a plain string, or a `(text, style)` pair with style one of b, code, pass,
fail, skip, muted."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class H:
    level: int
    text: str
    anchor: str = ""


@dataclass
class P:
    parts: list  # str or (text, style): style in b, code, pass, fail, skip, muted


@dataclass
class UL:
    items: list  # each a list of parts


@dataclass
class Table:
    headers: list[str]
    rows: list[list]  # cells: str or (text, style)
    numeric: set[int] = field(default_factory=set)
    cls: str = ""


@dataclass
class Figure:
    png: bytes | None
    caption: str
    alt: str


@dataclass
class Note:
    parts: list
    kind: str = "warn"  # warn | ok | info


@dataclass
class Signature:
    roles: list[str]
    statement: str
