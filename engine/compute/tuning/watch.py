"""The early stop that watches control too (issue 13, item 4): a stop rule for the training loop
(engine.compute.training.loop's `stop` hook, through RunContext.stop). Every few steps it measures the proxy
(engine.compute.tuning.proxy) on the forget rows the unit stage will judge and on the validation retain slice:

- the first check where every unit rule holds and the retain slice is still within control's rules stops the run,
  once the proxy's two cheap reconstruction checks hold there too (a 4-bit copy of the weights does not leak, the
  membership-inference AUC is within its band), when the policy judges them; where membership inference is
  already below its band there (the erased rows less likely than never-seen ones), the run stops too: training
  on only lowers it further (on SmolLM2, NPO went on to its last step and lost the retain rows with it);
- after the grace period (the first half of the run's steps), a check where the retain slice is below control's
  rules and has lost more than at either of the two checks before (it is getting worse, not climbing back), or at
  the run's last step, backs off: the trainable weights go back to the last check where control held (or, before
  any, the run just ends there) and the run stops, saying why.

`back_off=False` only watches (the winner's own run: its hyperparameters were chosen on the validation slice, and
its verdict is the full verification's): it still stops at the unit targets with control intact, and at the
latest at the first check from `limit` on (the step where the winning trial stopped) where the retain slice is
outside control's rules: on SmolLM2 a trial that passed every proxy at its stop was followed by a winner's run
that went on to its last step and lost the retain rows. While the slice holds it may go past `limit` to the
first check where the unit and reconstruction checks hold on every forget row (the trial trained on fewer of them:
on SmolLM2 UNDIAL's winner still said one fact, or its 4-bit copy did, at its trial's step).

The grace period is there because a retain term pulls the retain slice back only once the forget term has moved
the model: on the tiny demo model NPO's defaults fail control's retain ROUGE-L from step 6 to 16 of 40 and pass
it (and unit) from step 18 on; backing off at step 6 would have thrown the run away. For the same reason a slice
still climbing back (its control loss wobbles by a few hundredths from one check to the next) is left to climb.

`report(step, metrics, control_ok)` sees every check first (tuning's pruner: it may raise to end a trial);
control_ok is False only for a failure past the grace period."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.compute.tuning import proxy

if TYPE_CHECKING:
    from collections.abc import Callable


class ControlWatch:
    def __init__(self, base, rows: proxy.ProxyRows, before: dict, policy: dict, every: int = 1,
                 report: Callable | None = None, grace: int = 0, steps: int | None = None,
                 back_off: bool = True, limit: int | None = None) -> None:
        self.base, self.rows, self.before, self.policy = base, rows, before, policy
        self.every = max(1, int(every))
        self.grace = grace  # steps during which a control failure is watched, not acted on
        self.steps = steps  # the run's last step: a failure there is acted on even while recovering
        self.back_off = back_off
        # The last step the run may take (the winner's run: the step its trial was judged at, when it stopped
        # early; past it the run is no longer the one the search chose).
        self.limit = limit
        self.lost: list[float] = []  # control lost at each check so far (proxy.control_score)
        self.report = report
        self.snapshot: dict | None = None  # trainable tensors at the last check where control held
        self.snapshot_step = 0
        self.last: dict | None = None  # {"step", "metrics", "stages"} of the last check
        self.outcome: dict | None = None  # the stop verdict, once the watch stopped the run

    def measure(self, model) -> dict:
        return {**proxy.measure_forget(model, self.rows), **proxy.measure_retain(model, self.base, self.rows)}

    def __call__(self, model, step: int, loss: float) -> dict | None:
        past_limit = self.limit is not None and step >= self.limit
        if step % self.every and step != self.limit:
            return None
        metrics = self.measure(model)
        stages = proxy.judge(self.before, metrics, self.policy)
        self.last = {"step": step, "metrics": metrics, "stages": stages}
        control_ok = stages["control"]["verdict"] == "pass"
        if past_limit and not control_ok:
            self.outcome = {"reason": f"step {step}: at or past step {self.limit}, where the winning trial was "
                                      f"judged, with the retain slice outside control's rules",
                            "watch": "trial-step"}
            return self.outcome
        lost = proxy.control_score(self.before, metrics)
        recent, self.lost = self.lost[-2:], [*self.lost, lost]
        recovering = bool(recent) and lost <= max(recent) and step != self.steps
        tolerated = control_ok or step <= self.grace or recovering or not self.back_off
        if self.report is not None:
            self.report(step, metrics, tolerated)
        if not control_ok:
            if tolerated:
                return None
            self.outcome = self._back_off(model, step, stages["control"]["failed"])
            return self.outcome
        self.snapshot = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
        self.snapshot_step = step
        if stages["unit"]["verdict"] != "pass":
            return None
        reason = "the unit targets are met and the retain slice is within control's rules"
        if proxy.judges_reconstruction(self.policy):
            # Only where unit and control hold: the least change that stops the direct answers is the one a 4-bit
            # rounding undoes, or sampling brings back; go on until those and membership inference hold too. The
            # forward pass first; the model copy and greedy pass of the 4-bit check only where membership inference
            # already holds, the sampled answers last.
            for measure in (proxy.measure_mia, proxy.measure_quant4, proxy.measure_sampled):
                metrics = {**metrics, **measure(model, self.rows)}
                stages = proxy.judge(self.before, metrics, self.policy)
                self.last = {"step": step, "metrics": metrics, "stages": stages}
                if proxy.over_unlearned(metrics, self.policy):
                    # Going on would only push the erased rows further below never-seen ones: stop at the first
                    # check where the unit targets hold, and let the verdict say it went too far.
                    self.outcome = {"reason": "the unit targets are met, but membership inference already reads "
                                              "the erased rows as less likely than never-seen ones (over-unlearned)",
                                    "watch": "over-unlearned"}
                    return self.outcome
                if stages["reconstruction"]["verdict"] != "pass":
                    return None
            reason = ("the unit targets are met, neither a 4-bit copy nor sampled answers leak, membership "
                      "inference is within its band and the retain slice is within control's rules")
        self.outcome = {"reason": reason, "watch": "unit-met"}
        return self.outcome

    def _back_off(self, model, step: int, failed: list[str]) -> dict:
        if self.snapshot is None:
            return {"reason": f"the retain slice fell below control's rules ({', '.join(failed)}) at the first check",
                    "watch": "control-failed", "failed": failed}
        import torch

        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, saved in self.snapshot.items():
                params[name].copy_(saved.to(params[name].device))
        self.last = None  # the weights are the snapshot's now: measure again before judging them
        return {"reason": f"the retain slice fell below control's rules ({', '.join(failed)}) at step {step}: "
                          f"backed off to step {self.snapshot_step}, the last check where it held",
                "watch": "backed-off", "backed_off_to": self.snapshot_step, "failed": failed}
