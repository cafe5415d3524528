"""Targets and benchmarks run in this process, not in the engine: `finetune` and `bench tofu`."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command()
@click.option("--data", "data_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="question/answer rows (JSONL)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--base", default="tiny", show_default=True, help="'tiny' (from scratch) or a local HF model dir")
@click.option("--size", type=click.Choice(["demo", "test"]), default="demo", show_default=True)
@click.option("--seed", default=0, show_default=True)
def finetune(data_path: Path, out_dir: Path, base: str, size: str, seed: int) -> None:
    """Train a target model on facts (TOFU's 'finetune on full'); the result is a plain HF model dir."""
    from engine.builder import build_target
    from engine.schema.datasets import read_jsonl
    from engine.schema.errors import SpecError

    try:
        rows = read_jsonl(data_path, "data")
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    def progress(event: dict) -> None:
        if "step" in event:
            click.echo(f"\rstep {event['step']} loss {event.get('loss', float('nan')):.3f}".ljust(40), nl=False,
                       err=True)

    info = build_target(rows, out_dir, base=base, size=size, seed=seed, progress=progress)
    click.echo("", err=True)
    click.echo(json.dumps(info, indent=2, default=str))


@click.group()
def bench() -> None:
    """Benchmarks in the field's own terms (run here, not in the engine)."""


@bench.command("tofu")
@click.option("--split", type=click.Choice(["forget01", "forget05", "forget10"]), default="forget01",
              show_default=True)
@click.option("--base", default="tiny", show_default=True,
              help="'tiny' (a small Llama from scratch, on a subset of TOFU) or a local HF model directory")
@click.option("--method", "methods", multiple=True,
              help="unlearning method, repeatable or comma-separated [default: ga, graddiff, npo]")
@click.option("--retain-rows", type=click.IntRange(min=1), default=None,
              help="train on the first N retain rows [default: 40 for tiny, all otherwise]")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="training epochs of target and reference")
@click.option("--data", "data_dir", type=click.Path(file_okay=False, exists=True, path_type=Path), default=None,
              help="a folder of the TOFU release's .jsonl files [default: $EXPUNGE_TOFU_DIR, else a Hugging Face cache of locuslab/TOFU, else the copy shipped in the package]")
@click.option("--json", "as_json", is_flag=True)
def bench_tofu(split: str, base: str, methods: tuple[str, ...], retain_rows: int | None, epochs: int | None,
               data_dir: Path | None, as_json: bool) -> None:
    """TOFU: finetune a target, train a retain-only reference, unlearn, print the literature's table."""
    from engine.bench_tofu import DEFAULT_METHODS, format_table, run
    from engine.schema.errors import SpecError

    names = [m.strip() for group in methods for m in group.split(",") if m.strip()] or list(DEFAULT_METHODS)
    if base != "tiny" and not (Path(base) / "config.json").is_file():
        raise click.BadParameter("must be 'tiny' or an HF model directory (with config.json)", param_hint="--base")
    try:
        result = run(split, base, names, data_dir=data_dir, retain_rows=retain_rows, epochs=epochs,
                     progress=lambda s: click.echo(s, err=True))
    except (SpecError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(format_table(result))


COMMANDS = [finetune, bench]


@bench.command("real")
@click.option("--tiers", default="1,2,3", show_default=True, help="ladder tiers to run, comma-separated")
@click.option("--entity", "entities", multiple=True, help="requests to run (countries), repeatable [default: all]")
@click.option("--requests", type=click.IntRange(min=1), default=None, help="run only the first N requests")
@click.option("--policy", default="default", show_default=True)
@click.option("--verification", type=click.Choice(["quick", "full"]), default="quick", show_default=True)
@click.option("--tune", is_flag=True, help="tune each tier first (8 seeded trials, as escalate --tune) and verify the winner")
@click.option("--check-only", is_flag=True, help="only ask the model every question and report what it knows")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the result as Markdown here (bench/results/real.md keeps the last one)")
@click.option("--json", "as_json", is_flag=True)
def bench_real(tiers: str, entities: tuple[str, ...], requests: int | None, policy: str, verification: str,
               tune: bool, check_only: bool, out_path: Path | None, as_json: bool) -> None:
    """Entity-level requests about facts SmolLM2-135M-Instruct really knows, through the ladder's tier defaults."""
    from engine.bench_real import format_table, run
    from engine.schema.errors import SpecError

    try:
        tier_list = tuple(int(t) for t in tiers.split(",") if t.strip())
    except ValueError:
        raise click.BadParameter("must be tier numbers such as 1,2,3", param_hint="--tiers") from None
    if not tier_list or any(t not in (1, 2, 3) for t in tier_list):
        raise click.BadParameter("tiers are 1, 2 and 3", param_hint="--tiers")
    if check_only:
        tier_list = ()
    try:
        result = run(list(entities) or None, tier_list, requests, policy, verification, tune,
                     progress=lambda s: click.echo(s, err=True), out=out_path)
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(result, indent=2, default=str) if as_json else format_table(result))
