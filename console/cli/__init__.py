"""`expunge`: the console (no arguments) and every action as a headless command with --json.

One module per command group: engine (the daemon and its log), models (models, methods, policies), requests,
jobs, audit, report (report, export), bench (finetune, bench tofu), demo, identity (whoami, tokens); common
holds what they share.
The engine client (httpx) is imported by the commands that talk to the engine, not here: `expunge` with no
arguments opens the console, which paints its first screen before it connects."""

from __future__ import annotations

import click

from console.cli import audit, bench, demo, engine, identity, jobs, models, report, requests
from console.cli.common import rich_console


@click.group(invoke_without_command=True)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """expunge — run erasure requests up the unlearning ladder and verify them.

    With no command, opens the operator console."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(console_cmd)


@cli.command("console")
def console_cmd() -> None:
    """Open the operator console (starts the engine if none is running)."""
    from console.app import run_console

    run_console()


for _module in (engine, models, requests, jobs, audit, report, bench, demo, identity):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main() -> None:
    cli()


__all__ = ["cli", "main", "rich_console"]
