"""`expunge export MODEL@vN --out DIR`: a model version as a standalone HF directory (issue 14).

A version's folder already is one (the job's change folded into the weights when it was made); the export
copies it, writes its decode-time guard (when the version carries one) unsealed as guard.json, as
engine.compute.export does for a job, and a README naming the requests the version carries. The folder
appears at DIR only once complete. No torch: nothing is loaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from engine.control import sealed
from engine.schema.errors import SpecError
from store.files import replace_folder

README = """\
Exported by expunge: {model}@v{number}, the model with the erasures of requests {requests}.
Weights sha256 (its weight files): {sha256}

Load it with plain transformers (no expunge needed):

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("{name}")
    tokenizer = AutoTokenizer.from_pretrained("{name}")
{guard}"""

GUARD_NOTE = """
This version carries a decode-time guard (guard.json, {n} strings): apply it at every generation (see the
README of `expunge export JOB` for the code), or the model may say what the guard suppresses. guard.json holds
the sensitive strings: keep it as confidential as the requests.
"""


def export_version(version: dict, out_dir: Path) -> Path:
    """Copy `version` (a VersionView as the API returns it) to `out_dir`, which must not exist."""
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; choose a new folder")
    source = Path(version["path"])
    if not source.is_dir():
        raise SpecError(f"{version['model']}@v{version['number']}: its folder {source} is missing"
                        + (" (v0 is the registered source; export a directory model's v0 from there)"
                           if version["number"] == 0 else ""))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    def fill(tmp: Path) -> None:
        for f in sorted(source.iterdir()):
            if f.is_file() and f.name not in ("guard.fernet",):
                shutil.copyfile(f, tmp / f.name)
        guard_text = ""
        sealed_guard = source / "guard.fernet"
        if sealed_guard.is_file():
            guard = sealed.unseal(sealed_guard.read_text())
            (tmp / "guard.json").write_text(json.dumps(guard, indent=1, ensure_ascii=False) + "\n")
            guard_text = GUARD_NOTE.format(n=len(guard.get("strings", [])))
        (tmp / "README.txt").write_text(README.format(
            model=version["model"], number=version["number"], requests=version["request_ids"] or "none",
            sha256=version["sha256"], name=out_dir.name, guard=guard_text))

    replace_folder(out_dir, fill)
    return out_dir
