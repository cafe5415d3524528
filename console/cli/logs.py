"""Reading the engine's log: its last lines, those about one job, and following it as it grows."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

POLL_S = 0.2


def job_filter(job_id: int | None):
    """A predicate on log lines: every line, or those naming `job N` (the engine writes 'job 7 phase ...')."""
    if job_id is None:
        return lambda line: True
    pattern = re.compile(rf"\bjob {job_id}\b")
    return lambda line: pattern.search(line) is not None


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace").rstrip("\r\n")


def last_lines(path: Path, count: int, job_id: int | None = None) -> tuple[list[str], int]:
    """The last `count` lines of the log that match the job (all lines without one), and the byte offset
    read to (where a follow starts). A missing log has no lines."""
    keep = job_filter(job_id)
    lines: deque[str] = deque(maxlen=max(count, 0))
    try:
        with path.open("rb") as fh:
            for raw in iter(fh.readline, b""):
                if not raw.endswith(b"\n"):  # a line the engine is still writing: the follow reads it whole
                    fh.seek(-len(raw), 1)
                    break
                line = _decode(raw)
                if keep(line):
                    lines.append(line)
            return list(lines), fh.tell()
    except FileNotFoundError:
        return [], 0


def follow_log(path: Path, position: int, job_id: int | None = None) -> Iterator[str]:
    """The log's matching lines written after byte `position`, as they come, forever. A log that is
    truncated or replaced (a new file at the same path) is read again from its start."""
    keep = job_filter(job_id)
    pending = b""
    inode = None
    fh = None
    try:
        while True:
            if fh is None:
                try:
                    fh = path.open("rb")
                except FileNotFoundError:
                    time.sleep(POLL_S)
                    continue
                inode = path.stat().st_ino
                fh.seek(position)
            chunk = fh.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    line, pending = _decode(pending), b""
                    if keep(line):
                        yield line
                continue
            try:
                stat = path.stat()
            except FileNotFoundError:
                stat = None
            if stat is None or stat.st_ino != inode or stat.st_size < fh.tell():
                fh.close()
                fh, position, pending = None, 0, b""
                continue
            time.sleep(POLL_S)
    finally:
        if fh is not None:
            fh.close()
