"""Files written so that a reader (or a kill mid-write) sees the old file or the new one, never half of one.
On the bottom floor, beside the database, because the engine (training checkpoints) and the console (sign-off
reports) both write files this way."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def replace_file(final: Path, write) -> None:
    """write(fh) fills a private binary file beside `final`, which is flushed to disk and then replaces
    `final` in one rename."""
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def replace_folder(final: Path, fill) -> Path:
    """fill(tmp) writes a private folder beside `final`; every file in it is flushed to disk and the folder then
    takes `final`'s name in one rename (a kill mid-write leaves no half folder under that name)."""
    import shutil

    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        fill(tmp)
        publish_folder(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def publish_folder(tmp: Path, final: Path, replace: bool = False) -> None:
    """Flush every file of the finished folder `tmp` to disk and give it `final`'s name in one rename; with
    `replace`, a folder already at `final` (one the caller knows to be stale) is removed first."""
    for f in tmp.rglob("*"):
        if f.is_file():
            with f.open("rb") as fh:
                os.fsync(fh.fileno())
    if replace and final.exists():
        import shutil

        shutil.rmtree(final)
    os.replace(tmp, final)
