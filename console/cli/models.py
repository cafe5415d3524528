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


@models.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
def models_show(name: str, as_json: bool) -> None:
    """A model's line of versions: each version, when it was made, the requests it carries, its weights hash
    and its regression verdict. The current version (marked *) is what new requests start from and what to
    deploy; `expunge export NAME@vN --out DIR` writes it out."""
    from console.render import version_rows

    line = call(client().model_versions, name)
    out(line, as_json, lambda ln: click.echo("\n".join(version_rows(ln))))


@models.command("rollback")
@click.argument("name")
@click.argument("version")
@click.option("--reason", required=True, help="why the version is withdrawn (kept in the audit chain)")
@click.option("--json", "as_json", is_flag=True)
def models_rollback(name: str, version: str, reason: str, as_json: bool) -> None:
    """Withdraw VERSION (vN) of NAME: the versions after it are rebuilt on its parent by re-applying their
    jobs, each checked again; a rebuild that fails its check leaves its request unlanded."""
    digits = version[1:] if version[:1] in ("v", "V") else version
    if not digits.isdigit():
        raise click.BadParameter(f"'{version}' is not a version like v2", param_hint="VERSION")
    res = call(client().rollback, name, int(digits), reason)

    def render(r):
        click.echo(f"{name}: withdrew " + ", ".join(f"v{n}" for n in r["withdrawn"]) + f"; current v{r['current']}")
        for old, new in r["rebuilt"].items():
            click.echo(f"  v{old} rebuilt as v{new} (regression check passed)")
        for old, why in r["refused"].items():
            click.echo(f"  v{old} NOT rebuilt: " + "; ".join(why))

    out(res, as_json, render)


@models.command("retire")
@click.argument("name")
@click.option("--yes", is_flag=True, help="do it (without: say what it would do)")
@click.option("--json", "as_json", is_flag=True)
def models_retire(name: str, yes: bool, as_json: bool) -> None:
    """Retire NAME's line: every version after v0 withdrawn and its folder deleted, and the sealed regression
    data of its requests deleted. New requests start from v0 again."""
    if not yes:
        raise click.ClickException(f"this withdraws every version of {name} after v0 and deletes their folders "
                                   "and regression data; run again with --yes")
    res = call(client().retire, name)
    out(res, as_json, lambda r: click.echo(f"{name}: line retired; withdrew {len(r['withdrawn'])} version(s), "
                                           f"deleted {r['regression_data_rows']} regression data row(s)"))


COMMANDS = [models, methods, policies]
