"""Tuning inside a job (the worker's side of `expunge escalate --tune`): split the request's rows, measure the
proxy on the base once, search, pick the winner, and hand the job runner what its own run needs: the winner's
hyperparameters, the rows it trains on and the early stop that watches control. The rows it is given are the
job's trainable ones (engine.compute.verify.neighbours.kept_rows): the retain rows and neighbours control judges
are held apart from the search as from the winner's run, so the final verdict is out of sample."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.compute.tuning import proxy
from engine.compute.tuning.search import Budget, Search, closest, pick_winner
from engine.compute.tuning.split import validation_split
from engine.compute.tuning.watch import ControlWatch

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass
class Tuned:
    hyper: dict  # the winner's full hyperparameters (the job's own when nothing was tuned)
    retain_train: list[dict]  # the winner's run trains its retain term on these
    stop: ControlWatch | None  # the winner's run stops on the unit targets with the validation slice intact
    summary: dict  # for the job's result, the artifact manifest and the report


def tune(*, method_cls, hyper: dict, tune: dict, base_model, tokenizer, forget: list[dict], retain: list[dict],
         holdout: list[dict], sensitive: list[str], policy: dict, device: str, work_dir: Path, max_new_tokens: int,
         emit_trial: Callable[[dict], None], progress: Callable[..., None]) -> Tuned:
    budget = Budget.of(tune)
    space = method_cls.Hyper.search_space()
    if not space:
        return Tuned(hyper=hyper, retain_train=retain, stop=None,
                     summary={"tuned": False, "budget": budget.__dict__,
                              "note": f"{method_cls.name} declares no sensitive hyperparameters: nothing to tune"})
    started = time.monotonic()
    split = validation_split(forget, retain, budget.seed)
    rows = proxy.ProxyRows(tokenizer, split.forget_validation, split.retain_validation, sensitive, max_new_tokens,
                           holdout=holdout, members=forget)
    progress(phase="tune", step=0, total=budget.trials)
    before = {**proxy.measure_forget(base_model, rows), **proxy.measure_retain(base_model, base_model, rows)}
    if proxy.judges_reconstruction(policy):
        before.update(proxy.measure_reconstruction(base_model, rows))
    search = Search(method_cls=method_cls, base_hyper=hyper, base_model=base_model, tokenizer=tokenizer,
                    split=split, rows=rows, before=before, policy=policy, sensitive=sensitive, holdout=holdout,
                    device=device, work_dir=Path(work_dir) / "tuning", emit_trial=emit_trial, progress=progress,
                    budget=budget)
    outcomes = search.run()
    winner = pick_winner(outcomes)
    chosen = winner or closest(outcomes)
    if chosen is not None:
        chosen.winner = True
        emit_trial(chosen.record())
    summary = {
        "tuned": True, "budget": budget.__dict__, "space": space, "split": split.record(),
        "proxy_before": {k: round(v, 5) for k, v in before.items()},
        "trials": len(outcomes), "states": {s: sum(o.state == s for o in outcomes)
                                            for s in ("complete", "pruned", "failed")},
        "winner": chosen.number if chosen else None, "winner_passed_proxy": winner is not None,
        "winner_params": chosen.params if chosen else None,
        "rule": "passes every stage's proxy (unit, control, and the cheap reconstruction checks: membership "
                "inference, a 4-bit copy) on the validation split with the least control lost; ties: fewer steps",
        "seconds": round(time.monotonic() - started, 2)}
    if chosen is None:
        summary["note"] = "no trial completed: the job ran with its own hyperparameters"
    elif winner is None:
        summary["note"] = "no trial passed every stage's proxy: the closest one was run and verified in full"
    final_hyper = {**hyper, **(chosen.params if chosen else {})}
    # The winner's run stops once the unit targets hold on every forget row (what the unit stage judges) with the
    # validation retain slice within control's rules; it does not back off (ControlWatch: back_off).
    final_rows = proxy.ProxyRows(tokenizer, forget, split.retain_validation, sensitive, max_new_tokens,
                                 holdout=holdout)
    final_before = {**before, **proxy.measure_forget(base_model, final_rows)}
    final_hp = method_cls.Hyper.model_construct(**final_hyper)
    stop = ControlWatch(base_model, final_rows, final_before, policy, every=getattr(final_hp, "stop_every", 2),
                        grace=final_hp.steps // 2, steps=final_hp.steps, back_off=False,
                        limit=chosen.steps if chosen is not None and chosen.steps else None)
    return Tuned(hyper=final_hyper, retain_train=split.retain_train, stop=stop, summary=summary)

