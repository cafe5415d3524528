"""Benchmark of the operator console, run in a real pseudo-terminal against a real engine.

    python bench/console.py                  # all three, default sizes
    python bench/console.py --only paint history --runs 5
    python bench/console.py --model DIR      # watch a job on this model instead of the tests' tiny target

1. paint:   time from process start to the first painted dashboard (its frame), and to the dashboard showing
            the store's requests; the engine is already running. --entry app (default) starts the console with
            `python -c "from console.app import run_console; run_console()"`; --entry cli runs what the
            `expunge` command runs (`console.cli:main` with no arguments: click's parsing first). A third figure
            is the floor (--floor): a bare Textual app that paints one label, in the same pty, run alternately
            with the console so both see the same machine load; their ratio is printed.
2. watch:   CPU used by the console (user + system, from /proc) while it shows a running job's live screen
            for --seconds, and the bytes it wrote to the terminal (what an SSH link carries). On a slow or busy
            machine the real job steps rarely, so a second figure feeds the same screen --rate progress events
            a second (the engine's event shape, headless) to show the cost at a fast GPU worker's pace.
3. history: time from pressing `h` to the history screen showing its first page, with --jobs jobs in the
            store.

Targets on a 2-core machine: paint <= 0.5 s, watch <= 5 % of one core, history <= 0.5 s. The machine's load
average is printed with the results: on a shared machine, wall times stretch with it (CPU times less so)."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[PX^_].*?\x1b\\|\x1b[()][0-9A-Za-z]|\x1b.")
TICK = os.sysconf("SC_CLK_TCK")
COLS, ROWS = 100, 30


class Console:
    """The console (`python -c run_console(...)`) in a pty of COLS x ROWS; its output is read continuously."""

    def __init__(self, env: dict, code: str = "from console.app import run_console; run_console()") -> None:
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
        # Bytecode caching on, as an installed console runs (the uncounted first run writes the caches): with
        # PYTHONDONTWRITEBYTECODE set, every start would compile expunge's own modules again.
        env = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.started = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-c", code], stdin=slave, stdout=slave, stderr=slave,
                                     env={**env, "TERM": "xterm-256color", "COLUMNS": str(COLS),
                                          "LINES": str(ROWS)}, cwd=REPO, start_new_session=True, close_fds=True)
        os.close(slave)
        self.master = master
        self.raw = b""  # everything the console wrote (escape sequences are stripped when searching)
        self.bytes = 0

    def pump(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                return
            self.bytes += len(data)
            self.raw += data

    def wait_for(self, marker: str, timeout: float = 60.0, since: int = 0) -> float:
        """Seconds from process start until `marker` appears in the output (after byte offset `since`)."""
        deadline = time.monotonic() + timeout
        needle = marker.encode()
        checked = since
        while time.monotonic() < deadline:
            if len(self.raw) > checked:
                # Search from a little before the new bytes: a marker may straddle two reads.
                if needle in ANSI.sub(b"", self.raw[max(since, checked - 4096):]):
                    return time.monotonic() - self.started
                checked = len(self.raw)
            self.pump(0.005)
        raise TimeoutError(f"'{marker}' did not appear within {timeout} s; last output:\n"
                           f"{ANSI.sub(b'', self.raw[-3000:]).decode(errors='replace')}")

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pump(min(0.05, max(0.0, end - time.monotonic())))

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def close(self) -> None:
        try:
            self.send("\x11")  # ctrl+q
            deadline = time.monotonic() + 5
            while self.proc.poll() is None and time.monotonic() < deadline:
                self.pump(0.05)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            os.close(self.master)


@contextmanager
def engine_home(prefix: str):
    """A temporary EXPUNGE_HOME (short path: unix sockets), its engine stopped afterwards."""
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    env = {**os.environ, "EXPUNGE_HOME": str(root), "EXPUNGE_SLOTS": os.environ.get("EXPUNGE_SLOTS", "cpu")}
    old = os.environ.get("EXPUNGE_HOME")
    os.environ["EXPUNGE_HOME"] = str(root)
    from store.paths import get_paths

    paths = get_paths().ensure()
    try:
        yield paths, env
    finally:
        from engine.control.daemon import stop

        stop(paths)
        if old is None:
            os.environ.pop("EXPUNGE_HOME", None)
        else:
            os.environ["EXPUNGE_HOME"] = old
        shutil.rmtree(root, ignore_errors=True)


def start_engine(paths, env) -> None:
    subprocess.run([sys.executable, "-c", "from engine.control.daemon import start; start()"], env=env, cwd=REPO, check=True)


# ---------------------------------------------------------------- 1. first paint

ENTRIES = {"app": "from console.app import run_console; run_console()",
           "cli": "import sys; sys.argv = ['expunge']; from console.cli import main; main()"}
FLOOR = ("from textual.app import App\nfrom textual.widgets import Static\n"
         "class A(App):\n    def compose(self):\n        yield Static('Requests')\nA().run()")


def floor_paint() -> tuple[float, float]:
    """A bare Textual app painting one label: what any Textual console costs here before its own work.
    Seconds to its frame, and the CPU seconds it used by then."""
    c = Console(dict(os.environ), FLOOR)
    try:
        return c.wait_for("Requests"), c.cpu_seconds()
    finally:
        c.close()


def summary_of_floor(floor: list[tuple[float, float]], frame: list[float], cpu: list[float]) -> dict:
    """The bare app's figures and the console's ratios to them (wall time and, steadier on a busy machine,
    CPU time to the first frame)."""
    wall, bare_cpu = [f[0] for f in floor], [f[1] for f in floor]
    return {"bare_textual_paint_s": round(statistics.median(wall), 3),
            "bare_textual_runs_s": [round(x, 3) for x in wall],
            "bare_textual_cpu_to_paint_s": round(statistics.median(bare_cpu), 3),
            "console_to_bare_ratio": round(statistics.median(frame) / statistics.median(wall), 3),
            "console_to_bare_cpu_ratio": round(statistics.median(cpu) / statistics.median(bare_cpu), 3),
            "target_ratio": 1.15}


def bench_paint(runs: int, entry: str = "app", floor: bool = False) -> tuple[dict, dict | None]:
    """The console's first paint (and the bare app's, alternately, with `floor`)."""
    from tests.console_store import prefill

    with engine_home("ex-bench-paint-") as (paths, env):
        prefill(paths)
        start_engine(paths, env)
        frame, data, cpu, bare = [], [], [], []
        for _ in range(runs + 1):  # the first run warms the OS file cache; it is not counted
            if floor:
                bare.append(floor_paint())
            c = Console(env, ENTRIES[entry])
            try:
                f = c.wait_for("Requests")
                cpu_f = c.cpu_seconds()
                d = c.wait_for("Alma Rivera")
                cpu_d = c.cpu_seconds()
            finally:
                c.close()
            frame.append(f)
            data.append(d)
            cpu.append((cpu_f, cpu_d))
        frame, data, cpu, bare = frame[1:], data[1:], cpu[1:], bare[1:]
    return {"entry": entry, "first_paint_s": round(statistics.median(frame), 3), "first_paint_runs_s": [round(x, 3) for x in frame],
            "cpu_to_first_paint_s": round(statistics.median(c[0] for c in cpu), 3),
            "dashboard_with_data_s": round(statistics.median(data), 3),
            "cpu_to_data_s": round(statistics.median(c[1] for c in cpu), 3), "target_s": 0.5}, \
        (summary_of_floor(bare, frame, [c[0] for c in cpu]) if floor else None)


# ---------------------------------------------------------------- 2. watching a running job

def bench_watch(seconds: float, model: str | None) -> dict:
    from console.client import EngineClient
    from tests.fixtures_model import tiny_model_dir, tiny_split

    split = tiny_split()
    if model is None:
        print("building (or reusing) the tests' tiny target…", file=sys.stderr)
        model = str(tiny_model_dir())
    person = split["train"][0]["person"]
    forget = [r for r in split["train"] if r["person"] == person]
    retain = [r for r in split["train"] if r["person"] != person][:60]
    with engine_home("ex-bench-watch-") as (paths, env):
        start_engine(paths, env)
        with EngineClient(paths) as client:
            client.add_model("bench", model)
            spec = {"title": f"Benchmark erasure — {person}", "reference": "BENCH-1", "intention": "remove",
                    "model": "bench", "forget": forget, "retain": retain,
                    "sensitive": sorted({r["value"] for r in forget if r["attribute"] in ("phone", "email")})}
            res = client.submit(spec, method="graddiff", hyper={"steps": 100_000, "checkpoint_every": 100_000})
            job_id = res["job"]["id"]
            deadline = time.monotonic() + 900
            while client.job(job_id)["job"]["phase"] != "train":  # past loading and the 'before' measurement
                if time.monotonic() > deadline or client.job(job_id)["job"]["status"] in ("failed", "cancelled"):
                    raise RuntimeError(f"job {job_id} never reached training: {client.job(job_id)['job']}")
                time.sleep(0.5)
            c = Console(env, f"from console.app import run_console; run_console(open_job={job_id})")
            try:
                c.wait_for("loss (last", timeout=120)  # the live screen with its loss curve
                c.drain(2.0)
                cpu0, bytes0, t0 = c.cpu_seconds(), c.bytes, time.monotonic()
                step0 = client.job(job_id)["job"]["step"]
                c.drain(seconds)
                cpu1, bytes1, t1 = c.cpu_seconds(), c.bytes, time.monotonic()
                step1 = client.job(job_id)["job"]["step"]
            finally:
                c.close()
                client.cancel(job_id)
    wall = t1 - t0
    return {"watch_seconds": round(wall, 1), "console_cpu_s": round(cpu1 - cpu0, 3),
            "console_cpu_percent_of_one_core": round(100 * (cpu1 - cpu0) / wall, 2),
            "terminal_bytes_per_s": round((bytes1 - bytes0) / wall), "job_steps_during_watch": step1 - step0,
            "target_percent": 5.0}


FLOOD = r"""
import asyncio, json, sys, time
sys.path.insert(0, {repo!r})
from console.app import ExpungeApp
from tests.console_store import settle

async def main():
    app = ExpungeApp(start_engine=False, open_job={job_id})
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        cpu0, t0, step = time.process_time(), time.monotonic(), 0
        while time.monotonic() - t0 < {seconds}:
            step += 1
            app._take({{"type": "progress", "job_id": {job_id}, "phase": "train", "step": step, "total": 100000,
                        "loss": 2.0 / (1 + step / 500), "eta": (100000 - step) / {rate}}})
            await asyncio.sleep(1 / {rate})
        cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    print(json.dumps({{"events": step, "cpu_s": cpu, "wall_s": wall}}))

asyncio.run(main())
"""


def bench_flood(seconds: float, rate: float) -> dict:
    """The console's own cost at a fast worker's pace: the live job screen fed `rate` progress events a second
    (the shape the engine sends), headless (no terminal writes), for `seconds`."""
    from tests.console_store import prefill

    with engine_home("ex-bench-flood-") as (paths, env):
        ids = prefill(paths)
        start_engine(paths, env)
        code = FLOOD.format(repo=str(REPO), job_id=ids["interrupted"], seconds=seconds, rate=rate)
        out = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                             timeout=seconds + 120)
        if out.returncode != 0:
            raise RuntimeError(out.stderr[-2000:])
        res = json.loads(out.stdout.strip().splitlines()[-1])
    return {"events_per_s": rate, "events": res["events"], "seconds": round(res["wall_s"], 1),
            "console_cpu_percent_of_one_core": round(100 * res["cpu_s"] / res["wall_s"], 2)}


# ---------------------------------------------------------------- 3. history with many jobs

def fill_jobs(paths, n_jobs: int, per_request: int = 10) -> None:  # keep in step with the marker above
    """n_jobs finished jobs over n_jobs / per_request requests, written straight into a migrated store."""
    from sqlalchemy import insert

    from store.db import migrate
    from store.models import Job, ModelEntry, Request

    db = migrate(paths.db)
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    methods = ["guard", "rmu", "graddiff", "npo", "simnpo", "ga", "idkdpo"]
    statuses = ["succeeded"] * 8 + ["failed", "cancelled"]
    with db.begin() as conn:
        conn.execute(insert(ModelEntry), [{"name": "demo", "source": "/nonexistent", "kind": "hf",
                                           "created_at": t0}])
        n_req = max(1, n_jobs // per_request)
        conn.execute(insert(Request), [{"id": i + 1, "title": f"Erasure request {4000 + i} — person {i}",
                                        "reference": f"DSR-{4000 + i}", "intention": "remove", "model_name": "demo",
                                        "policy": "default", "status": "open", "current_tier": 3,
                                        "created_at": t0 + timedelta(hours=i), "spec_json": {},
                                        "auto_escalate": False} for i in range(n_req)])
        rows = []
        for j in range(n_jobs):
            status = statuses[j % len(statuses)]
            rows.append({"id": j + 1, "request_id": j // per_request + 1, "tier": 1 + j % 3,
                         "method": methods[j % len(methods)], "hyper_json": {}, "status": status,
                         "verdict": ("pass" if j % 3 == 0 else "fail") if status == "succeeded" else None,
                         "phase": "done", "step": 60, "total": 60, "priority": 0, "seed": 0,
                         "progress_json": {}, "result_json": {}, "device": "cpu",
                         "created_at": t0 + timedelta(hours=j // per_request, minutes=j % per_request)})
        conn.execute(insert(Job), rows)
    db.dispose()


def bench_history(runs: int, n_jobs: int) -> dict:
    with engine_home("ex-bench-hist-") as (paths, env):
        fill_jobs(paths, n_jobs)
        start_engine(paths, env)
        c = Console(env)
        times, cpus = [], []
        try:
            c.wait_for(f"DSR-{4000 + n_jobs // 10 - 1}")  # the dashboard with its newest request
            c.drain(1.0)
            marker = f"{n_jobs:,} jobs"
            for _ in range(runs + 1):  # the first opening imports the screen's module; reported apart
                since = len(c.raw)
                cpu0, t0 = c.cpu_seconds(), time.monotonic()
                c.send("h")
                c.wait_for(marker, since=since)
                times.append(time.monotonic() - t0)
                cpus.append(c.cpu_seconds() - cpu0)
                c.drain(0.5)
                c.send("\x1b")  # escape: back to the dashboard
                c.drain(1.0)
        finally:
            c.close()
    return {"history_first_open_s": round(times[0], 3), "history_open_s": round(statistics.median(times[1:]), 3),
            "history_runs_s": [round(x, 3) for x in times[1:]],
            "console_cpu_per_open_s": round(statistics.median(cpus[1:]), 3), "jobs": n_jobs, "target_s": 0.5}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=["paint", "watch", "history"],
                        default=["paint", "watch", "history"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--entry", choices=sorted(ENTRIES), default="app",
                        help="paint: start the console directly (app) or as the `expunge` command does (cli)")
    parser.add_argument("--floor", action="store_true", help="paint: also time a bare Textual app's first paint")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to watch the running job")
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs in the store for the history benchmark")
    parser.add_argument("--model", help="an HF model directory for the watched job (default: the tests' tiny model)")
    parser.add_argument("--rate", type=float, default=20.0, help="progress events a second in the flood variant")
    args = parser.parse_args(argv)
    results: dict = {"machine": {"cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}}
    if "paint" in args.only:
        results["paint"], floor = bench_paint(args.runs, args.entry, args.floor)
        if floor:
            results["paint_floor"] = floor
    if "history" in args.only:
        results["history"] = bench_history(args.runs, args.jobs)
    if "watch" in args.only:
        results["watch"] = bench_watch(args.seconds, args.model)
        results["watch_flood"] = bench_flood(args.seconds, args.rate)
    results["machine"]["loadavg_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    from bench.record import recorded

    with recorded("console"):
        code = main()
    sys.exit(code)
