"""The tuning options `escalate` and `submit` share: --tune [--trials N | --minutes M] [--tune-seed S]."""

from __future__ import annotations

import click


def tune_options(command):
    for option in reversed([
        click.option("--tune", is_flag=True, help="search the method's sensitive hyperparameters first (Optuna, "
                                                  "judged on a validation split) and run the winner"),
        click.option("--trials", type=click.IntRange(1, 1000), help="with --tune: at most N trials (default 8)"),
        click.option("--minutes", type=click.FloatRange(min=0, min_open=True),
                     help="with --tune: at most M minutes of search (the winner's run and verification come after)"),
        click.option("--tune-seed", type=click.IntRange(0), default=0, show_default=True,
                     help="with --tune: seeds the sampler and the validation split"),
    ]):
        command = option(command)
    return command


def tune_body(tune: bool, trials: int | None, minutes: float | None, seed: int) -> dict | None:
    """The API's `tune` field, or None; --trials or --minutes without --tune is refused."""
    if not tune:
        if trials is not None or minutes is not None:
            raise click.UsageError("--trials and --minutes set a tuning budget: add --tune")
        return None
    if trials is not None and minutes is not None:
        raise click.UsageError("give --trials or --minutes, not both")
    return {"trials": trials, "minutes": minutes, "seed": seed}
