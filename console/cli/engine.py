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
def engine_start(foreground: bool, tcp: str | None, verbose: bool) -> None:
    from engine.control.daemon import start

    if foreground:
        from engine.control.server import main

        if verbose:
            os.environ["EXPUNGE_VERBOSE"] = "1"
        sys.exit(main(["--tcp", tcp] if tcp else []))
    try:
        info = start(tcp=tcp, verbose=verbose)
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
            click.echo(f"  slot {s['slot']} {s['device']}: " + (f"job {s['job_id']}" if s["job_id"] else "idle"))

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
