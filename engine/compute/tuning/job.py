"""Tuning inside a job (the worker's side of `expunge escalate --tune`): split the request's rows, measure the
proxy on the base once, search, pick the winner, and hand the job runner what its own run needs: the winner's
hyperparameters, the rows it trains on, the early stop that watches control, and the rows the full verification
judges control on (the validation retain slice held apart)."""

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
    retain_judged: list[dict]  # control's final verdict is judged on these (the validation slice held apart)
    stop: ControlWatch | None  # the winner's run stops on the unit targets with the validation slice intact
    summary: dict  # for the job's result, the artifact manifest and the report


def tune(*, method_cls, hyper: dict, tune: dict, base_model, tokenizer, forget: list[dict], retain: list[dict],
         holdout: list[dict], sensitive: list[str], policy: dict, device: str, work_dir: Path, max_new_tokens: int,
         emit_trial: Callable[[dict], None], progress: Callable[..., None]) -> Tuned:
    budget = Budget.of(tune)
    space = method_cls.Hyper.search_space()
    if not space:
        return Tuned(hyper=hyper, retain_train=retain, retain_judged=retain, stop=None,
                     summary={"tuned": False, "budget": budget.__dict__,
                              "note": f"{method_cls.name} declares no sensitive hyperparameters: nothing to tune"})
    started = time.monotonic()
    split = validation_split(forget, retain, budget.seed)
    rows = proxy.ProxyRows(tokenizer, split.forget_validation, split.retain_validation, sensitive, max_new_tokens)
    progress(phase="tune", step=0, total=budget.trials)
    before = {**proxy.measure_forget(base_model, rows), **proxy.measure_retain(base_model, base_model, rows)}
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
        "rule": "passes every stage's proxy on the validation split with the least control lost; ties: fewer steps",
        "seconds": round(time.monotonic() - started, 2)}
    if chosen is None:
        summary["note"] = "no trial completed: the job ran with its own hyperparameters"
    elif winner is None:
        summary["note"] = "no trial passed every stage's proxy: the closest one was run and verified in full"
    final_hyper = {**hyper, **(chosen.params if chosen else {})}
    # The winner's run stops once the unit targets hold on every forget row (what the unit stage judges) with the
    # validation retain slice within control's rules; it does not back off (ControlWatch: back_off).
    final_rows = proxy.ProxyRows(tokenizer, forget, split.retain_validation, sensitive, max_new_tokens)
    final_before = {**before, **proxy.measure_forget(base_model, final_rows)}
    final_hp = method_cls.Hyper.model_construct(**final_hyper)
    stop = ControlWatch(base_model, final_rows, final_before, policy, every=getattr(final_hp, "stop_every", 2),
                        grace=final_hp.steps // 2, steps=final_hp.steps, back_off=False)
    judged = [r for r in retain if r not in split.retain_validation] or retain
    return Tuned(hyper=final_hyper, retain_train=split.retain_train, retain_judged=judged, stop=stop,
                 summary=summary)


def measure_tuned(ev, retain_judged: list[dict]) -> dict[str, dict]:
    """measure_all for a tuned job: the control stage judges the retain rows held apart from the validation slice;
    every other stage sees the request's rows as its cached 'before' did (the relearning attack on retain rows too)."""
    import dataclasses

    from engine.compute.verify.stages import STAGE_ORDER, stage_module

    out = {}
    for name in STAGE_ORDER:
        if ev.progress:
            ev.progress(phase=f"verify:{name}")
        started = time.perf_counter()
        m = stage_module(name).measure(dataclasses.replace(ev, retain=retain_judged) if name == "control" else ev)
        out[name] = {"metrics": m.metrics, "evidence": m.evidence, "stats": m.stats, "notes": m.notes,
                     "timings": {**m.timings, "total": round(time.perf_counter() - started, 3)}}
    return out
