"""`expunge engine`: start, stop and inspect the engine daemon, and read its log."""

from __future__ import annotations

import os
import sys

import click

from console.cli.common import out
from store.paths import get_paths


@click.group()
def engine() -> None:
    """Start, stop and inspect the engine daemon."""


@engine.command("start")
@click.option("--foreground", is_flag=True, help="run in this terminal (debugging)")
@click.option("--tcp", metavar="HOST:PORT", help="also listen on TCP (loopback unless told; bearer token required)")
@click.option("--verbose", is_flag=True, help="log third-party libraries' INFO lines too (EXPUNGE_VERBOSE=1)")
@click.option("--ray", "ray_address", metavar="auto|ADDRESS",
              help="run jobs on a Ray cluster: 'auto' (the cluster this host joined) or its address; needs the "
                   "'ray' extra")
@click.option("--gpus", type=click.IntRange(min=1), help="with --ray: how many of the cluster's GPUs to use "
                                                         "(default all; slots on a CPU-only cluster)")
def engine_start(foreground: bool, tcp: str | None, verbose: bool, ray_address: str | None,
                 gpus: int | None) -> None:
    from engine.control.daemon import start

    if gpus is not None and not ray_address:
        raise click.UsageError("--gpus goes with --ray (local slots are one per visible GPU)")
    if ray_address:
        from engine.control.executors import ExecutorError, require_ray

        try:
            require_ray()  # refused here, before an engine is started, with the command that installs it
        except ExecutorError as exc:
            raise click.ClickException(str(exc)) from None
    extra = (["--ray", ray_address] if ray_address else []) + (["--gpus", str(gpus)] if gpus else [])
    if foreground:
        from engine.control.server import main

        if verbose:
            os.environ["EXPUNGE_VERBOSE"] = "1"
        sys.exit(main((["--tcp", tcp] if tcp else []) + extra))
    try:
        info = start(tcp=tcp, verbose=verbose, ray=ray_address, gpus=gpus)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None
    state = "started" if info["started"] else "already running"
    click.echo(f"engine {state}: pid {info['pid']}, socket {get_paths().socket}")


@engine.command("stop")
def engine_stop() -> None:
    from engine.control.daemon import stop

    click.echo("engine stopped" if stop() else "no engine is running")


@engine.command("status")
@click.option("--json", "as_json", is_flag=True)
def engine_status(as_json: bool) -> None:
    from engine.control.daemon import ping

    paths = get_paths()
    health = ping(paths)
    if health is None:
        out({"running": False}, as_json, lambda _: click.echo("engine: not running"))
        sys.exit(1)

    def render(h):
        click.echo(f"engine: running, pid {h['pid']}, up {h['uptime_s']:.0f} s, socket {paths.socket}")
        for s in h["slots"]:
            where = f" on {s['node']}" if s.get("node") else ""
            state = f"job {s['job_id']}" if s["job_id"] else s.get("state", "idle")
            click.echo(f"  slot {s['slot']} {s.get('executor', 'local')} {s['device']}{where}: {state}"
                       + (f" ({s['error']})" if s.get("error") else ""))

    out({"running": True, "socket": str(paths.socket), **health}, as_json, render)


@engine.command("logs")
@click.option("-n", "lines", default=50, show_default=True, help="how many of the last lines to show")
@click.option("--job", "job_id", type=int, help="only the lines about this job ('job N ...')")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines as the engine writes them (ctrl+c ends)")
def engine_logs(lines: int, job_id: int | None, follow: bool) -> None:
    """The engine's log (the API process and its workers): one line per job phase, warnings and errors."""
    from console.cli.logs import follow_log, last_lines

    path = get_paths().log
    shown, position = last_lines(path, lines, job_id)
    click.echo("\n".join(shown))
    if follow:
        try:
            for line in follow_log(path, position, job_id):
                click.echo(line)
        except KeyboardInterrupt:
            pass


COMMANDS = [engine]
