"""`expunge models`, `methods`, `policies`: what the engine can run, on which models, judged how."""

from __future__ import annotations

from pathlib import Path

import click

from console.cli.common import call, client, out
from engine.schema.status import STAGES


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models(ctx: click.Context, as_json: bool) -> None:
    """List registered models (or `models add`)."""
    if ctx.invoked_subcommand is None:
        items = call(client().models)
        out(items, as_json, lambda xs: [click.echo(f"{m['name']:<16} {m['kind']:<5} {m['params']:>12,} params  "
                                                   f"{m['source']}") for m in xs] or None)


@models.command("add")
@click.argument("name")
@click.argument("source")
@click.option("--dtype", type=click.Choice(["auto", "bf16", "fp16", "fp32"]), default="auto", show_default=True,
              help="weights dtype in the workers; auto: bf16 on a GPU that supports it, else fp32")
@click.option("--chat-template", type=click.Choice(["auto", "none"]), default="auto", show_default=True,
              help="auto: ask through the tokenizer's chat template when it has one; none: plain Q/A prompts")
@click.option("--retain", "retain_path", type=click.Path(exists=True, dir_okay=False), help="default retain sample")
@click.option("--holdout", "holdout_path", type=click.Path(exists=True, dir_okay=False))
@click.option("--json", "as_json", is_flag=True)
def models_add(name, source, dtype, chat_template, retain_path, holdout_path, as_json) -> None:
    """Register a model. SOURCE: a local HF model directory, a .gguf file, or a model id ('org/name')
    already in the local Hugging Face cache (nothing is downloaded). The engine loads its config and
    tokenizer, counts its parameters and hashes its weights first, and refuses what it cannot load."""
    absolute = lambda p: str(Path(p).resolve()) if p else None  # noqa: E731
    entry = call(client().add_model, name, absolute(source) if Path(source).exists() else source,
                 {"dtype": dtype, "chat_template": chat_template}, absolute(retain_path), absolute(holdout_path))

    def render(m):
        checked = m.get("checked") or {}
        template = {True: "chat template found", False: "no chat template"}.get(checked.get("chat_template"), "")
        click.echo(f"registered {m['name']} ({m['kind']}): {m['params']:,} params, "
                   f"weights sha256 {m['weights_sha256'][:16]}…" + (f", {template}" if template else ""))

    out(entry, as_json, render)


@click.command()
@click.option("--json", "as_json", is_flag=True)
def methods(as_json: bool) -> None:
    """The methods of the ladder, by tier, with their default hyperparameters."""
    items = call(client().methods)

    def render(xs):
        for m in xs:
            click.echo(f"tier {m['tier']}  {m['name']:<10} {m['description']}")
            click.echo("           " + ", ".join(f"{k}={v}" for k, v in m["defaults"].items()))

    out(items, as_json, render)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--show", "show_name", metavar="NAME", help="Print every rule of one policy in words.")
def policies(as_json: bool, show_name: str | None) -> None:
    """The verification policies (threshold profiles)."""
    from engine.schema.policy import describe_policy, rule_text

    items = call(client().policies)
    if show_name:
        chosen = next((p for p in items if p["name"] == show_name), None)
        if chosen is None:
            raise click.ClickException(f"no policy '{show_name}' (known: {', '.join(p['name'] for p in items)})")
        out(chosen, as_json, lambda p: click.echo("\n".join(describe_policy(p))))
        return

    def render(xs):
        for p in xs:
            click.echo(f"{p['name']}: {p.get('description', '')}")
            for stage in STAGES:
                for metric, rule in p.get(stage, {}).items():
                    click.echo(f"    {stage:<15} {metric:<22} {rule['rule']} {rule_text(rule)}")
            for metric, why in p.get("waive", {}).items():
                click.echo(f"    waived          {metric:<22} {why}")

    out(items, as_json, render)


COMMANDS = [models, methods, policies]
