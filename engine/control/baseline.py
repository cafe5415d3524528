"""The 'before' measurement's identity: what a cached measurement of the untouched base model depends on (the
cache key), and the general-text corpus every job's control stage measures perplexity on. The scheduler keys
the cache with it when it hands a job out; closing a request finds the cached rows of its data by it."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from engine.schema.datasets import rows_sha256

# The code that measures a model: any change to it (a stage, a metric, an attack, how prompts are built or
# answers generated) makes every cached 'before' measurement stale, so its source is part of the cache key.
_MEASURING_CODE = ("verify", "generation.py", "prompting.py", "tokens.py")

# Plain English the control stage measures perplexity on (the demo builder trains its tokenizer on it too).
GENERAL_TEXT = [
    "The library opens at nine in the morning and closes at six in the evening.",
    "Rain is expected for most of the week, so bring an umbrella when you go out.",
    "She planted tomatoes, beans and a row of sunflowers along the garden fence.",
    "The train to the coast was late because of work on the tracks near the bridge.",
    "He learned to play the piano as a child and still practises every weekend.",
    "Most birds build their nests in spring, when food is easy to find.",
    "The museum has a new room for old maps, coins and letters from sailors.",
    "Water boils at a lower temperature high in the mountains than by the sea.",
    "Our team meets on Monday mornings to plan the work for the rest of the week.",
    "The bakery on the corner sells fresh bread, rolls and a very good apple cake.",
    "A good night of sleep helps people remember what they learned during the day.",
    "The children built a small boat out of wood and sailed it on the pond.",
    "Please turn off the lights and close the windows before you leave the office.",
    "The river froze in January, and people skated on it for almost two weeks.",
    "Cooking rice takes about twenty minutes, and it should rest before serving.",
    "The old lighthouse still stands on the cliff, although its lamp went out long ago.",
    "Many people walk or cycle to work when the weather is warm and dry.",
    "The teacher asked the class to write a short story about their favourite animal.",
    "A map and a compass are useful when you hike in an unfamiliar forest.",
    "The market in the square is busiest on Saturday, when farmers bring their vegetables.",
    "He wrote a letter to his grandmother and posted it on the way home.",
    "The film was long, but the music and the photography made it worth watching.",
    "Bees carry pollen from flower to flower, which helps fruit and seeds to grow.",
    "The kitchen smelled of onions, garlic and the soup that was cooking on the stove.",
    "After the storm, the streets were covered with leaves and broken branches.",
    "She keeps a notebook by her bed to write down ideas before she forgets them.",
    "The moon looks larger when it is close to the horizon than when it is high in the sky.",
    "Our neighbours painted their house blue and planted roses by the front door.",
    "The bus stops outside the school every fifteen minutes during the day.",
    "Reading in a quiet room is easier than reading on a crowded train.",
    "The cat slept in the sun on the windowsill for most of the afternoon.",
    "Fresh snow covered the hills, and the valley was silent in the early morning.",
    "The shop closes early on Sundays, so we bought everything we needed on Saturday.",
    "A cup of tea and a slice of toast make a simple and pleasant breakfast.",
    "The bridge was built more than a hundred years ago and is still in daily use.",
    "They counted the stars from the roof and tried to name the brightest ones.",
]


@functools.cache
def eval_version() -> str:
    """A digest of the measuring code under engine/compute."""
    root = Path(__file__).resolve().parents[1] / "compute"
    digest = hashlib.sha256()
    for entry in _MEASURING_CODE:
        for path in sorted((root / entry).rglob("*.py")) if (root / entry).is_dir() else [root / entry]:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def job_model_options(options: dict, spec: dict) -> dict:
    """The model's registered options with the request's overrides (chat_template: auto | none) and,
    when not 'full', its verification profile: what the 'before' measurement depends on besides the data."""
    out = dict(options)
    if spec.get("chat_template"):
        out["chat_template"] = spec["chat_template"]
    if spec.get("verification", "full") != "full":
        out["verification"] = spec["verification"]
    return out


def baseline_key(weights_sha256: str, rows: dict, general_text: list[str], options: dict) -> str:
    parts = [eval_version(), weights_sha256, json.dumps(options, sort_keys=True), rows_sha256(general_text)]
    parts += [rows_sha256(rows.get(k)) for k in ("forget", "retain", "holdout", "probes", "sensitive")]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()
