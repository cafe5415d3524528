"""The search: Optuna's TPE sampler (seeded) over a method's declared ranges (Hyper.search_space), asked and told
one trial at a time, with a pruner that ends trials whose forget metrics are not moving or whose retain slice
already fails control. Each trial trains a fresh copy of the warm base model on the validation split's training
rows, under the ControlWatch, and is judged by the proxy on the held-out rows. The budget is a number of trials
and, optionally, minutes (checked between trials and at every check inside one)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import optuna

from engine.compute.tuning import proxy
from engine.compute.tuning.watch import ControlWatch

if TYPE_CHECKING:
    from collections.abc import Callable

    from engine.compute.tuning.split import ValidationSplit

DEFAULT_TRIALS = 8
# A trial that fails the proxy scores this much worse than any that passes, times how far it is from passing.
MISS_WEIGHT = 10.0


class BudgetSpent(Exception):
    """The time budget ran out in the middle of a trial."""


class StallOrRetainPruner(optuna.pruners.BasePruner):
    """Prunes a trial whose retain slice already fails control's rules (the watch sets the user attribute
    'control_failed_at' once a failure outlasts the grace period, the first half of the trial's steps), or whose forget metrics are not moving: the reported unit gap (0 once the unit rules
    hold) fell by less than `min_progress` of its first value over the last `patience` checks."""

    def __init__(self, patience: int = 4, min_progress: float = 0.05) -> None:
        self.patience, self.min_progress = patience, min_progress

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if trial.user_attrs.get("control_failed_at") is not None:
            return True
        steps = sorted(trial.intermediate_values)
        values = [trial.intermediate_values[s] for s in steps]
        # Not before a quarter of the trial's steps: the warmup and a small learning rate start slowly.
        if len(values) <= self.patience or values[-1] <= 0 or steps[-1] < 0.25 * trial.user_attrs.get("steps", 0):
            return False
        window = values[-self.patience - 1:]
        return window[0] - window[-1] < self.min_progress * max(values[0], 1e-6)


@dataclass
class Budget:
    trials: int = DEFAULT_TRIALS
    minutes: float | None = None
    seed: int = 0

    @classmethod
    def of(cls, tune: dict) -> Budget:
        minutes = tune.get("minutes")
        trials = tune.get("trials") or (100 if minutes else DEFAULT_TRIALS)
        return cls(trials=int(trials), minutes=float(minutes) if minutes else None, seed=int(tune.get("seed", 0)))


@dataclass
class TrialOutcome:
    number: int
    state: str  # complete | pruned | failed
    params: dict
    hyper: dict
    metrics: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)
    passed: bool = False
    score: float | None = None  # control lost on the validation slice (lower is better)
    objective: float | None = None
    steps: int | None = None
    seconds: float = 0.0
    reason: str | None = None
    winner: bool = False

    def record(self) -> dict:
        return {"number": self.number, "state": self.state, "params": self.params, "metrics": self.metrics,
                "stages": self.stages, "passed": self.passed, "score": self.score, "objective": self.objective,
                "steps": self.steps, "seconds": round(self.seconds, 2), "reason": self.reason,
                "winner": self.winner}


def sample(trial: optuna.Trial, space: dict[str, dict], n_layers: int) -> dict:
    params = {}
    for name, spec in space.items():
        kind = spec["type"]
        if kind == "float":
            params[name] = trial.suggest_float(name, spec["low"], spec["high"], log=spec.get("log", False))
        elif kind == "int":
            params[name] = trial.suggest_int(name, spec["low"], spec["high"], step=spec.get("step", 1))
        elif kind == "categorical":
            params[name] = trial.suggest_categorical(name, spec["choices"])
        elif kind == "layer":
            params[name] = trial.suggest_int(name, 0, max(0, n_layers - 1))
        else:
            raise ValueError(f"unknown search range type {kind!r} for {name}")
    return params


@dataclass
class Search:
    """One tuning run's fixed parts."""

    method_cls: type
    base_hyper: dict  # the job's validated hyperparameters: what the search does not vary
    base_model: object
    tokenizer: object
    split: ValidationSplit
    rows: proxy.ProxyRows  # the validation rows the proxy judges
    before: dict  # the proxy on the base model, on those rows
    policy: dict
    sensitive: list[str]
    holdout: list[dict]
    device: str
    work_dir: Path
    emit_trial: Callable[[dict], None]
    progress: Callable[..., None]
    budget: Budget

    def run(self) -> list[TrialOutcome]:
        space = self.method_cls.Hyper.search_space()
        n_layers = int(getattr(getattr(self.base_model, "config", None), "num_hidden_layers", 1) or 1)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=self.budget.seed),
                                    pruner=StallOrRetainPruner())
        # The first trial is the method's own defaults: a tuned job never does worse than an untuned one would
        # have on the proxy.
        defaults = {k: v for k, v in self.base_hyper.items() if k in space and v is not None}
        if defaults:
            study.enqueue_trial(defaults, skip_if_exists=True)
        # Then the same with the retain term that holds the base's distribution (KL), when the method has the
        # choice: what control's KL rule judges, and what kept SmolLM2's retain slice where NLL lost it.
        if "retain_loss" in space and defaults.get("retain_loss") != "kl":
            study.enqueue_trial({**defaults, "retain_loss": "kl"}, skip_if_exists=True)
        deadline = time.monotonic() + self.budget.minutes * 60 if self.budget.minutes else None
        outcomes: list[TrialOutcome] = []
        while len(outcomes) < self.budget.trials and (deadline is None or time.monotonic() < deadline):
            trial = study.ask()
            outcome = self._one(trial, sample(trial, space, n_layers), deadline)
            outcomes.append(outcome)
            if outcome.state == "complete":
                study.tell(trial, outcome.objective)
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED if outcome.state == "pruned"
                           else optuna.trial.TrialState.FAIL)
            self.emit_trial(outcome.record())
        return outcomes

    def _one(self, trial: optuna.Trial, params: dict, deadline: float | None) -> TrialOutcome:
        from engine.compute.methods.base import RunContext

        started = time.monotonic()
        # No checkpoints: a trial is cheap to redo and its folder is scratch.
        values = {**self.base_hyper, **params, "checkpoint_every": 100_000}
        outcome = TrialOutcome(number=trial.number, state="running", params=params, hyper=values)
        self.emit_trial(outcome.record())
        self.progress(phase="tune", step=trial.number + 1, total=self.budget.trials)

        def report(step: int, metrics: dict, control_ok: bool) -> None:
            trial.report(proxy.unit_gap(self.before, metrics, self.policy), step)
            if not control_ok:
                trial.set_user_attr("control_failed_at", step)
            if trial.should_prune():
                why = (f"the retain slice failed control's rules at step {step}" if not control_ok
                       else f"the forget metrics stopped moving by step {step}")
                raise optuna.TrialPruned(why)
            if deadline is not None and time.monotonic() > deadline:
                raise BudgetSpent(f"the time budget ran out at step {step}")

        watch = None
        try:
            hp = self.method_cls.Hyper.model_validate(values)
            every = getattr(hp, "stop_every", 2)
            trial.set_user_attr("steps", hp.steps)
            watch = ControlWatch(self.base_model, self.rows, self.before, self.policy, every=every, report=report,
                                 grace=hp.steps // 2, steps=hp.steps)
            ctx = RunContext(model=self.base_model, tokenizer=self.tokenizer, forget=self.split.forget_train,
                             retain=self.split.retain_train, sensitive=self.sensitive, device=self.device,
                             work_dir=self.work_dir / f"trial-{trial.number}", progress=lambda **event: None,
                             holdout=self.holdout, stop=watch)
            candidate = self.method_cls().run(ctx, hp)
            train = candidate.info.get("train", {})
            steps = watch.outcome.get("backed_off_to") if watch.outcome else None
            steps = steps or train.get("steps") or hp.steps
            if watch.last is not None and watch.last["step"] == train.get("steps"):
                metrics = watch.last["metrics"]
            else:
                metrics = watch.measure(candidate.model)
            if proxy.judges_reconstruction(self.policy) and not set(proxy.PROXY_METRICS["reconstruction"]) & set(metrics):
                metrics = {**metrics, **proxy.measure_reconstruction(candidate.model, self.rows)}
            del candidate
        except (optuna.TrialPruned, BudgetSpent) as exc:
            outcome.state, outcome.reason = "pruned", str(exc)
            if watch is not None and watch.last is not None:  # where it stood when it was ended: shown, not judged
                outcome.steps = int(watch.last["step"])
                outcome.metrics = {k: round(v, 5) for k, v in watch.last["metrics"].items()}
                outcome.stages = {k: v["verdict"] for k, v in watch.last["stages"].items()}
        except Exception as exc:  # one trial's failure (a diverging loss, a bad layer) does not end the search
            outcome.state, outcome.reason = "failed", f"{type(exc).__name__}: {exc}"[:500]
        else:
            stages = proxy.judge(self.before, metrics, self.policy)
            outcome.state, outcome.steps = "complete", int(steps)
            outcome.metrics = {k: round(v, 5) for k, v in metrics.items()}
            outcome.stages = {k: v["verdict"] for k, v in stages.items()}
            outcome.passed = all(v["verdict"] == "pass" for v in stages.values())
            outcome.score = round(proxy.control_score(self.before, metrics), 5)
            missed = proxy.unit_gap(self.before, metrics, self.policy) + sum(
                outcome.stages[stage] != "pass" for stage in ("control", "reconstruction"))
            outcome.objective = outcome.score + MISS_WEIGHT * missed
            failing = _missed(stages)
            outcome.reason = watch.outcome["reason"] if watch.outcome else \
                f"ran all {steps} steps without meeting the early stop" + \
                (f"; failing at the end: {', '.join(failing)}" if failing else "")
        outcome.seconds = time.monotonic() - started
        return outcome


def _missed(stages: dict) -> list[str]:
    """The proxy metrics a trial's last figures fail, stage by stage."""
    return [m for v in stages.values() for m in v["failed"]]


def pick_winner(outcomes: list[TrialOutcome]) -> TrialOutcome | None:
    """The complete trial that passes every stage's proxy with the best control metrics (ties: fewer steps); None
    when no trial passes."""
    passing = [o for o in outcomes if o.state == "complete" and o.passed]
    if not passing:
        return None
    return min(passing, key=lambda o: (o.score, o.steps or 0, o.number))


def closest(outcomes: list[TrialOutcome]) -> TrialOutcome | None:
    """When none passes: the complete trial nearest to passing (the search's own objective)."""
    complete = [o for o in outcomes if o.state == "complete"]
    return min(complete, key=lambda o: (o.objective, o.steps or 0, o.number)) if complete else None
