"""Request data files: JSON Lines of {"question","answer"} or {"text"} rows, checked line by line."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from engine.schema.errors import SpecError

MAX_ROWS = 100_000
MAX_FIELD_CHARS = 20_000


def read_jsonl(path: Path, label: str) -> list[dict]:
    if not path.is_file():
        raise SpecError(f"{label}: file not found: {path}")
    rows: list[dict] = []
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:  # a byte-order mark on the first line is tolerated
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                raise SpecError(f"{label}: {path.name} line {lineno}: not valid UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SpecError(f"{label}: {path.name} line {lineno}: not valid JSON ({exc.msg})") from None
            rows.append(check_row(row, f"{label}: {path.name} line {lineno}"))
            if len(rows) > MAX_ROWS:
                raise SpecError(f"{label}: {path.name} has more than {MAX_ROWS} rows")
    if not rows:
        raise SpecError(f"{label}: {path.name} has no rows")
    return rows


def check_row(row: object, where: str) -> dict:
    if not isinstance(row, dict):
        raise SpecError(f"{where}: expected a JSON object")
    if "question" in row or "answer" in row:
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise SpecError(f"{where}: '{key}' must be a non-empty string")
    elif "text" in row:
        if not isinstance(row["text"], str) or len(row["text"].split()) < 4:
            raise SpecError(f"{where}: 'text' must be a string of at least 4 words")
    else:
        raise SpecError(f"{where}: a row needs 'question' and 'answer', or 'text'")
    for key, value in row.items():
        if isinstance(value, str) and len(value) > MAX_FIELD_CHARS:
            raise SpecError(f"{where}: '{key}' is longer than {MAX_FIELD_CHARS} characters")
    bad = lone_surrogate(row)
    if bad is not None:
        raise SpecError(f"{where}: '{bad}' is not valid Unicode (a lone surrogate code point)")
    return row


def lone_surrogate(value, where: str = "") -> str | None:
    """The path (a.b.0) of a string holding a lone surrogate in parsed JSON/YAML (JSON allows "\\ud800";
    UTF-8, SQLite and file names do not), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "(text)"
    elif isinstance(value, dict):
        for k, v in value.items():
            found = lone_surrogate(k, f"{where}.{k!a}".lstrip(".")) or lone_surrogate(v, f"{where}.{k}".lstrip("."))
            if found:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = lone_surrogate(v, f"{where}.{i}".lstrip("."))
            if found:
                return found
    return None


def as_qa(rows: list[dict]) -> list[dict]:
    """Text rows become prompt/continuation pairs: the first third prompts, the rest must not be reproduced."""
    out = []
    for row in rows:
        if "question" in row:
            out.append(row)
        else:
            words = row["text"].split()
            cut = max(1, len(words) // 3)
            out.append({**row, "question": " ".join(words[:cut]), "answer": " ".join(words[cut:]), "verbatim": True})
    return out


def rows_sha256(rows: list | None) -> str:
    body = json.dumps(rows, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()
