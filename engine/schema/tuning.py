"""The tuning budget an operator asks for (`expunge escalate --tune [--trials N | --minutes M]`), as the API, the
store and the worker carry it. Torch-free: the console and the API validate it here."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_TRIALS = 8  # --tune alone
MAX_TRIALS = 1000
MAX_MINUTES = 7 * 24 * 60


class TuneSpec(BaseModel):
    """At most `trials` trials and, when given, at most `minutes` of searching (the winner's own run and its
    full verification come after); `seed` seeds the sampler and the validation split."""

    model_config = ConfigDict(extra="forbid")
    trials: int | None = Field(default=None, ge=1, le=MAX_TRIALS, description="trials at most")
    minutes: float | None = Field(default=None, gt=0, le=MAX_MINUTES, description="minutes of search at most")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seeds the sampler and the validation split")

    def budget(self) -> dict:
        """The budget as stored: trials filled in (the default, or a cap of MAX_TRIALS under a time budget)."""
        trials = self.trials or (MAX_TRIALS if self.minutes else DEFAULT_TRIALS)
        return {"trials": trials, "minutes": self.minutes, "seed": self.seed}


# The trials table, one spelling for `expunge show`, the console's trials tab and the sign-off report.
TRIAL_COLUMNS = ("trial", "state", "hyperparameters", "forget ROUGE-L", "leak", "retain ROUGE-L", "retain KL",
                 "MIA AUC", "4-bit leak", "unit", "control", "reconstr.", "control lost", "steps", "s")


def _num(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def params_text(params: dict) -> str:
    """`lr=0.0005 steps=40 beta=0.1`: floats to 3 significant figures."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def trial_row(trial: dict) -> tuple[str, ...]:
    m, st = trial.get("metrics") or {}, trial.get("stages") or {}
    label = f"{trial['number']}{' ★' if trial.get('winner') else ''}"
    return (label, trial["state"], params_text(trial.get("params") or {}), _num(m.get("forget_rouge_l")),
            _num(m.get("leak_rate"), 2), _num(m.get("retain_rouge_l")), _num(m.get("retain_kl")),
            _num(m.get("mia_auc"), 2), _num(m.get("quant4_leak_rate"), 2),
            st.get("unit", "—"), st.get("control", "—"), st.get("reconstruction", "—"), _num(trial.get("score")),
            "—" if trial.get("steps") is None else str(trial["steps"]), f"{trial.get('seconds') or 0:.1f}")


def tuning_lines(result: dict) -> list[str]:
    """How the winner was chosen, in words (the job's result['tuning'])."""
    t = result.get("tuning") or {}
    if not t:
        return []
    if not t.get("tuned"):
        return [t.get("note", "not tuned")]
    b, sp, states = t.get("budget") or {}, t.get("split") or {}, t.get("states") or {}
    budget = f"{b.get('trials')} trials" + (f" or {b['minutes']:g} min" if b.get("minutes") else "")
    lines = [f"{t.get('trials')} trials within a budget of {budget} (seed {b.get('seed', 0)}): "
             + ", ".join(f"{n} {s}" for s, n in states.items() if n),
             f"judged on a validation split: {sp.get('forget_validation')} forget rows "
             + ("(too few to hold out: the trials' own)" if sp.get("forget_in_sample") else "held out of every trial's training")
             + f", {sp.get('retain_validation')} retain rows held out of training and of the final verdict",
             f"winner rule: {t.get('rule', '')}"]
    if t.get("winner") is not None:
        lines.append(f"winner: trial {t['winner']} ({params_text(t.get('winner_params') or {})})"
                     + ("" if t.get("winner_passed_proxy") else " — passed no proxy: the closest trial"))
    if t.get("note"):
        lines.append(t["note"])
    return lines
