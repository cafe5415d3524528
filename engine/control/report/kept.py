"""The report's account of what a job kept and what it was judged on: the retain rows it trained on (named)
and the ones the control stage judged, the neighbours the engine built from the original model's answers, on a
model version that version's answers to the erasures it carries, and any memorisation flagged on the rows
trained on (engine.compute.verify.split, .line, .memorisation)."""

from __future__ import annotations

from engine.control.report.blocks import UL, P

LISTED = 20  # retain questions named per job at most


def kept_blocks(f: dict, j: dict) -> list:
    result = j["result"] or {}
    split, built = result.get("split"), result.get("neighbours")
    if not split or built is None:
        return []
    trained, judged = split["retain"]["trained"], split["retain"]["judged"]
    questions = f.get("retain_questions")
    if built.get("supplied"):
        dropped = built.get("supplied_dropped") or 0
        source = (f"the request's own neighbours{f' ({dropped} left out: they named what is erased)' if dropped else ''}"
                  f" (same-shaped facts about other entities, with the request's answers)")
    else:
        source = (f"the neighbours the engine built (same-shaped questions about other entities, "
                  f"{built['templated']} templated from the forget questions, {built['from_retain']} from the "
                  f"retain questions, answered by the original model itself)")
    text = (f"Out of sample: the method trained on {len(trained)} of the request's {len(trained) + len(judged)} "
            f"retain rows and on {built['trained']} of the {built['built']} of {source}; the "
            f"control stage judged only the other {len(judged)} retain rows and {built['judged']} neighbours "
            f"(split seed {split['seed']}).")
    out: list = [P([text])]
    line = result.get("line")
    if line:  # a job on a model version (engine.compute.verify.line)
        ids = ", ".join(str(r) for r in line["requests"])
        dropped = f"; {line['dropped_leaking']} left out because the version's answer still leaked" \
            if line.get("dropped_leaking") else ""
        out.append(P([f"It also trained on the starting version's own answers to {line['kept']} of the "
                      f"{line['prompts']} forget prompts of the requests that version carries ({ids}){dropped}, "
                      "so that this erasure does not bring theirs back; the regression check at accept judges "
                      "those prompts again."]))
    memorised = result.get("memorisation") or []
    if memorised:
        out.append(P([f"Memorisation flagged: {', '.join(memorised)} rose above the original model on the rows "
                      "trained on; not credited."]))
    if trained:
        if questions is None:
            out.append(P([f"Retain rows trained on (by position in the request's retain set): "
                          f"{', '.join(str(i + 1) for i in trained)} (their texts are purged)."]))
        else:
            named = [f"{i + 1}. {questions[i]}" for i in trained[:LISTED] if i < len(questions)]
            more = len(trained) - len(named)
            out.append(P(["Retain rows trained on:"]))
            out.append(UL(named + ([f"… and {more} more"] if more > 0 else [])))
    return out
