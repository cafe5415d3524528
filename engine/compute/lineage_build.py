"""Build one model version and measure it: `python -m engine.compute.lineage_build`, run by the engine when a job
is accepted (engine.control.lineage). One JSON request on stdin, one JSON answer on stdout.

1. apply: load the parent version, rebuild the accepted job's candidate on it (engine.compute.candidate) and
   fold it into the weights: a LoRA adapter merged, a tier-2 delta added, full weights taken as saved; a
   guard's strings are unioned with the parent's guard;
2. materialise: save_pretrained the result (and the tokenizer) into the folder the engine gave, which the
   engine seals, hashes and renames into place only if the version is accepted;
3. regression: greedy answers to the forget prompts of every request the version carries, all requests in one
   batched generation pass (through the union guard, as deployed), and the share that leak each request's key
   spans;
4. control: retain ROUGE-L and probability on the model's control set and perplexity on general text, for the
   new version and (once per model line: the engine caches it) for v0.

The engine judges the figures (engine.control.lineage); this process decides nothing."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path


def _load(ref: dict, options: dict, device: str):
    from engine.compute.modeling import load_model

    return load_model(ref["source"], ref.get("kind", "hf"), options, device, converted=ref.get("converted"))


def apply_change(model, tokenizer, artifact_dir: Path | None, parent_guard: dict | None):
    """The parent with the job's change folded in, and the union guard (None: no guard)."""
    from engine.compute.candidate import load_candidate
    from engine.compute.guard import REFUSAL, REPLACEMENT, Guard

    guard = None
    kind = "none"
    if artifact_dir is not None:
        cand = load_candidate(model, tokenizer, artifact_dir, inplace=True)
        kind = cand.kind
        model = cand.model.merge_and_unload() if cand.kind == "adapter" else cand.model
        guard = cand.guard
    strings = list((parent_guard or {}).get("strings") or []) + (guard.strings if guard is not None else [])
    if strings:
        settings = guard.to_json() if guard is not None else parent_guard
        guard = Guard(strings, tokenizer, replacement=settings.get("replacement", REPLACEMENT),
                      redact=settings.get("redact", True), on_block=settings.get("on_block", "refuse"),
                      refusal=settings.get("refusal", REFUSAL))
    model.eval()
    model.requires_grad_(False)
    return model, guard, kind


def regression(model, tokenizer, guard, carried: list[dict]) -> dict:
    """Per carried request: how many of its forget prompts' greedy answers leak one of its key spans. One
    generation pass over every request's prompts (longest budget of them all)."""
    from engine.compute.generation import greedy
    from engine.compute.prompting import format_prompt
    from engine.leaks import leak_spans

    prompts, owner = [], []
    for i, req in enumerate(carried):
        for p in req["prompts"]:
            prompts.append(p["question"] if p.get("verbatim") else format_prompt(p["question"], tokenizer))
            owner.append(i)
    budget = max((int(r.get("max_new_tokens") or 48) for r in carried), default=48)
    answers = greedy(model, tokenizer, prompts, guard=guard, raw_prompts=True, max_new_tokens=budget) if prompts else []
    out = {}
    for i, req in enumerate(carried):
        mine = [a for a, o in zip(answers, owner, strict=True) if o == i]
        leaked = sum(bool(leak_spans(a, req["spans"])) for a in mine)
        out[str(req["request_id"])] = {"leaked": leaked, "n": len(mine),
                                       "leak_rate": leaked / len(mine) if mine else None}
    return out


def control(model, tokenizer, guard, retain: list[dict] | None, general_text: list[str]) -> dict:
    """The figures compared with v0's: retain ROUGE-L and probability (with a control set), general perplexity."""
    from engine.compute.generation import greedy
    from engine.compute.prompting import max_answer_tokens
    from engine.compute.verify.metrics import answer_probability, mean_rouge_l_recall
    from engine.compute.verify.scoring import answer_nlls, text_nll

    out: dict = {}
    if retain:
        answers = greedy(model, tokenizer, [r["question"] for r in retain], guard=guard,
                         max_new_tokens=max_answer_tokens(tokenizer, retain))
        out["retain_rouge_l"] = mean_rouge_l_recall(answers, [r["answer"] for r in retain])
        nlls = answer_nlls(model, tokenizer, retain)
        out["retain_prob"] = sum(answer_probability(n) for n in nlls) / len(nlls)
    if general_text:
        nlls = text_nll(model, tokenizer, general_text)
        out["general_ppl"] = math.exp(sum(nlls) / len(nlls))
    return out


def warm_up(model, tokenizer) -> None:
    from engine.compute.generation import greedy
    from engine.compute.prompting import format_prompt

    greedy(model, tokenizer, [format_prompt("Warm-up", tokenizer)], raw_prompts=True, max_new_tokens=1)


def budget_for(tokenizer, rows: list[dict]) -> int:
    from engine.compute.prompting import max_answer_tokens

    return max_answer_tokens(tokenizer, rows)


def build(req: dict) -> dict:
    import torch

    from engine.compute.modeling import pick_device
    from engine.compute.prompting import set_chat_mode

    device = pick_device()
    torch.manual_seed(0)
    options = {k: v for k, v in req["options"].items() if k not in ("chat_template", "verification")}
    timings: dict = {}
    t = time.perf_counter()
    model, tokenizer = _load(req["parent"], options, device)
    set_chat_mode(tokenizer, req["options"].get("chat_template", "auto"))
    artifact = Path(req["artifact_dir"]) if req.get("artifact_dir") else None
    model, guard, kind = apply_change(model, tokenizer, artifact, req["parent"].get("guard"))
    timings["apply_s"] = round(time.perf_counter() - t, 3)

    out_dir = req.get("out_dir")
    if out_dir:
        t = time.perf_counter()
        model.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        timings["materialise_s"] = round(time.perf_counter() - t, 3)

    # This process's first generation pays one-time costs (lazy imports, kernel set-up: ~4 s on two cores, about
    # three times the generation itself on the demo model); one token on one prompt takes them, timed on their own,
    # so that regression_s is the regression pass's own cost.
    t = time.perf_counter()
    warm_up(model, tokenizer)
    timings["warmup_s"] = round(time.perf_counter() - t, 3)

    # The incoming requests' answer budget, from their gold answers (kept with their sealed data for later checks).
    incoming = req.get("incoming")
    budget = budget_for(tokenizer, incoming["answers"]) if incoming else None
    t = time.perf_counter()
    fresh = set(incoming["request_ids"]) if incoming else set()
    carried = [{**c, "max_new_tokens": budget} if c["request_id"] in fresh else c for c in req["carried"]]
    reg = regression(model, tokenizer, guard, carried)
    timings["regression_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    ctrl = control(model, tokenizer, guard, req["control"].get("retain"), req["control"]["general_text"])
    timings["control_s"] = round(time.perf_counter() - t, 3)
    v0_control = None
    if req.get("v0") is not None:
        del model
        t = time.perf_counter()
        base, base_tok = _load(req["v0"], options, device)
        set_chat_mode(base_tok, req["options"].get("chat_template", "auto"))
        v0_control = control(base, base_tok, None, req["control"].get("retain"), req["control"]["general_text"])
        timings["v0_control_s"] = round(time.perf_counter() - t, 3)
    return {"kind": kind, "guard": guard.to_json() if guard is not None else None, "regression": reg,
            "control": ctrl, "v0_control": v0_control, "max_new_tokens": budget, "device": device,
            "timings": timings}


def main() -> None:
    # Libraries print to stdout (progress bars, warnings): the answer goes to a private copy of it.
    answer = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import torch

    torch.set_num_threads(max(1, int(os.environ.get("EXPUNGE_THREADS", os.cpu_count() or 1))))
    request = json.loads(sys.stdin.read())
    try:
        result = {"ok": True, **build(request)}
    except Exception as exc:  # the engine shows the reason; the traceback goes to stderr
        import traceback

        traceback.print_exc()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    answer.write(json.dumps(result))
    answer.flush()


if __name__ == "__main__":
    main()
