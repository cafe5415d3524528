"""Keep what a benchmark printed in bench/results/NAME.md, with what produced it: the command, the commit (and
whether the tree had changes), the machine (CPU model, cores, memory) and its load average before and after.
A figure without its machine and load cannot be compared with the next one.

    with recorded("verify"):
        ...print the tables...
"""

from __future__ import annotations

import io
import os
import platform
import shlex
import subprocess
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parent.parent


class _Tee(io.TextIOBase):
    """Writes go to the terminal and to a buffer."""

    def __init__(self, stream) -> None:
        self.stream, self.buffer = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.buffer.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else "")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        kib = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                       if line.startswith("MemTotal:")))
        memory = f", {kib / 2**20:.0f} GiB memory"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs{memory}, {platform.system()} {platform.release()}, " \
           f"Python {platform.python_version()}"


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


@contextmanager
def recorded(name: str, argv: list[str] | None = None):
    """Tee stdout; on a normal exit write bench/results/NAME.md (the last run of that benchmark)."""
    started, load_before = datetime.now(UTC), _load()
    tee = _Tee(sys.stdout)
    sys.stdout = tee
    try:
        yield
    finally:
        sys.stdout = tee.stream
    script = os.path.relpath(os.path.abspath(sys.argv[0]), REPO)
    command = "python " + shlex.join([script, *(sys.argv[1:] if argv is None else argv)])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(
        f"# bench: {name}\n\n"
        f"- command: `{command}`\n- commit: {commit()}\n- started: {started:%Y-%m-%d %H:%M} UTC, took "
        f"{(datetime.now(UTC) - started).total_seconds():.0f} s\n- machine: {machine()}\n"
        f"- load average (1/5/15 min) before: {load_before}; after: {_load()}\n\n"
        f"```\n{tee.buffer.getvalue().rstrip()}\n```\n", encoding="utf-8")
    print(f"(kept in {path.relative_to(REPO)})", file=sys.stderr)
