"""Writing a request's sign-off report to a file: the engine renders it (HTML or Markdown); this picks the
format from the file name and writes it atomically (a temporary file in the same folder, then a rename), so
a reader never sees half a report. Used by `expunge report` and the console's Report action."""

from __future__ import annotations

import re
from pathlib import Path

from store.files import replace_file

SUFFIXES = {".html": "html", ".htm": "html", ".md": "md", ".markdown": "md"}


def report_format(path: Path | str) -> str | None:
    """'html' or 'md' from the file name's suffix; None for any other suffix."""
    return SUFFIXES.get(Path(path).suffix.lower())


def default_report_name(request: dict) -> str:
    """`<reference>-report.html`: the request's reference made safe as a file name (request-ID without one)."""
    ref = re.sub(r"[^A-Za-z0-9._-]+", "-", request.get("reference") or "").strip(".-")
    return f"{ref or 'request-' + str(request['id'])}-report.html"


def resolve_report_path(text: str, cwd: Path | None = None) -> Path:
    """The absolute path a report goes to (relative paths are from `cwd`, the current folder by default);
    ValueError naming the problem when it cannot be written there."""
    text = text.strip()
    if not text:
        raise ValueError("give a file name ending in .html or .md")
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    path = path.resolve()
    if report_format(path) is None:
        raise ValueError(f"{path.name}: the name must end in .html or .md")
    if path.is_dir():
        raise ValueError(f"{path} is a folder")
    if not path.parent.is_dir():
        raise ValueError(f"no such folder: {path.parent}")
    return path


def write_report(client, request_id: int, path: Path, fmt: str | None = None) -> dict:
    """Ask the engine (a sync `EngineClient`) for the report and write it to `path`; what was written."""
    fmt = fmt or report_format(path) or "html"
    text = client.report(request_id, fmt)
    data = text.encode("utf-8")
    replace_file(path, lambda fh: fh.write(data))
    return {"request_id": request_id, "format": fmt, "path": str(path), "bytes": len(data)}
