"""What every command shares: printing (text or --json), the engine client, polling a job, --hyper and the
listing options."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import click

from engine.schema.status import TERMINAL
from store.paths import get_paths

if TYPE_CHECKING:
    from console.client import EngineClient



def out(obj, as_json: bool, render=None) -> None:
    if as_json or render is None:
        click.echo(json.dumps(obj, indent=2, default=str))
    else:
        render(obj)


def rich_console():
    from rich.console import Console

    return Console()


def client(autostart: bool = True) -> EngineClient:
    """A client on a running engine; starts one (detached) when none answers. With EXPUNGE_URL (and
    EXPUNGE_TOKEN, a named token) it talks to that engine's TCP listener as the token's identity."""
    import os

    from console.client import EngineClient
    from engine.control.daemon import ping, start

    paths = get_paths()
    url = os.environ.get("EXPUNGE_URL")
    if url:
        return EngineClient(paths, url=url, token=os.environ.get("EXPUNGE_TOKEN"))
    if ping(paths) is None:
        if not autostart:
            raise click.ClickException("the engine is not running (start it with `expunge engine start`)")
        click.echo("starting the engine…", err=True)
        try:
            start(paths)
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
    return EngineClient(paths)


def call(fn, *args, **kwargs):
    from console.client import EngineError

    try:
        return fn(*args, **kwargs)
    except EngineError as exc:
        raise click.ClickException(str(exc)) from None


def parse_hyper(pairs: tuple[str, ...]) -> dict | None:
    """--hyper steps=80 --hyper lora=false: values parsed as JSON when they parse, else kept as text."""
    if not pairs:
        return None
    hyper = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{pair}' is not KEY=VALUE", param_hint="--hyper")
        try:
            hyper[key] = json.loads(value)
        except json.JSONDecodeError:
            hyper[key] = value
    return hyper


def wait_for(c: EngineClient, job_id: int, quiet: bool = False) -> dict:
    """Poll until the job ends, with a one-line progress display on a terminal."""
    last = ""
    tty = sys.stderr.isatty() and not quiet
    while True:
        job = call(c.job, job_id)["job"]
        if tty:
            prog = f"{job['step']}/{job['total']}" if job["total"] else ""
            loss = f" loss {job['loss']:.3f}" if job["loss"] is not None else ""
            line = f"job {job_id}: {job['status']} {job['phase']} {prog}{loss}"
            if line != last:
                click.echo("\r" + line.ljust(78), nl=False, err=True)
                last = line
        if job["status"] in TERMINAL:
            if tty:
                click.echo("", err=True)
            return job
        time.sleep(0.5)


def listing_options(sorts: tuple[str, ...]):
    """--sort, --order, --since, --until: the engine sorts and filters (see engine.control.service)."""
    def wrap(fn):
        fn = click.option("--until", metavar="DATE", help="created on or before (YYYY-MM-DD, UTC; or ISO time)")(fn)
        fn = click.option("--since", metavar="DATE", help="created on or after (YYYY-MM-DD, UTC; or ISO time)")(fn)
        fn = click.option("--order", type=click.Choice(["desc", "asc"]), default="desc", show_default=True)(fn)
        return click.option("--sort", type=click.Choice(sorts), default="id", show_default=True)(fn)
    return wrap
